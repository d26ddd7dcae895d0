"""Merkle hashing, proofs and verification against the transparency-dev/merkle vectors,
a literal transcription of the RFC 9162 algorithms, and tampering."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    levels_of,
    node_hash,
    prefix_subtrees,
    root_from_leaf_hashes,
)
from gateway.audit.proofcheck import ProofError, verify_consistency, verify_inclusion

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "merkle"
# subtreeinclusion/ and subtreeconsistency/ are not used: they prove subtrees [start, end)
# other than prefixes of the log (start/end fields instead of a tree size), a different
# verifier from the RFC 9162 one this module implements and the gateway needs.
INCLUSION_FILES = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY_FILES = sorted((VECTORS / "consistency").rglob("*.json"))


def _case_id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    case["proof"] = [base64.b64decode(node) for node in case["proof"] or []]
    return case


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def test_vectors_are_present() -> None:
    # The vectors are pinned to one upstream commit: an empty glob must not pass silently.
    assert len(INCLUSION_FILES) == 98
    assert len(CONSISTENCY_FILES) == 98


@pytest.mark.parametrize("path", INCLUSION_FILES, ids=_case_id)
def test_inclusion_vector(path: Path) -> None:
    case = _load(path)
    args = (
        _b64(case["leafHash"]),
        case["leafIdx"],
        case["treeSize"],
        case["proof"],
        _b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY_FILES, ids=_case_id)
def test_consistency_vector(path: Path) -> None:
    case = _load(path)
    args = (
        case["size1"],
        case["size2"],
        case["proof"],
        _b64(case["root1"]),
        _b64(case["root2"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


# RFC 6962 reference data, as used by the Certificate Transparency and
# transparency-dev/merkle test suites: the leaves and the root of each prefix.
REFERENCE_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
REFERENCE_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_reference_roots() -> None:
    hashes = [leaf_hash(leaf) for leaf in REFERENCE_LEAVES]
    tree = MerkleTree(hashes)
    compact = CompactRange()
    for size, want in enumerate(REFERENCE_ROOTS, start=1):
        compact.append(hashes[size - 1])
        assert root_from_leaf_hashes(hashes[:size]).hex() == want
        assert tree.root(size).hex() == want
        assert compact.root().hex() == want


def test_reference_roots_agree_with_vectors() -> None:
    # The vectors' trees are built on the same leaves: tie the two sources together.
    happy = _load(VECTORS / "inclusion" / "1" / "happy-path.json")
    assert happy["treeSize"] == 8
    assert _b64(happy["root"]).hex() == REFERENCE_ROOTS[7]


def test_empty_tree() -> None:
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# A literal transcription of RFC 9162 section 2.1: the reference the fast code is
# compared with.
def rfc_mth(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(rfc_mth(hashes[:k]), rfc_mth(hashes[k:]))


def rfc_path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return rfc_path(m, hashes[:k]) + [rfc_mth(hashes[k:])]
    return rfc_path(m - k, hashes[k:]) + [rfc_mth(hashes[:k])]


def rfc_subproof(m: int, hashes: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if b else [rfc_mth(hashes)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return rfc_subproof(m, hashes[:k], b) + [rfc_mth(hashes[k:])]
    return rfc_subproof(m - k, hashes[k:], False) + [rfc_mth(hashes[:k])]


MAX_LEAVES = 200
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(MAX_LEAVES)]
TREE = MerkleTree(LEAVES)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_LEAVES))
    return size, draw(st.integers(0, size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    new_size = draw(st.integers(1, MAX_LEAVES))
    return draw(st.integers(1, new_size)), new_size


@given(st.integers(0, MAX_LEAVES))
def test_roots_agree(size: int) -> None:
    want = rfc_mth(LEAVES[:size])
    assert root_from_leaf_hashes(LEAVES[:size]) == want
    assert TREE.root(size) == want
    assert MerkleTree(LEAVES[:size]).root() == want


@given(size_and_index())
def test_inclusion_proofs_agree_and_verify(case: tuple[int, int]) -> None:
    size, index = case
    proof = TREE.inclusion_proof(index, size)
    assert proof == rfc_path(index, LEAVES[:size])
    assert proof == inclusion_proof(LEAVES, index, size)
    verify_inclusion(LEAVES[index], index, size, proof, rfc_mth(LEAVES[:size]))


@given(two_sizes())
def test_consistency_proofs_agree_and_verify(case: tuple[int, int]) -> None:
    old_size, new_size = case
    proof = TREE.consistency_proof(old_size, new_size)
    assert proof == rfc_subproof(old_size, LEAVES[:new_size], True)
    assert proof == consistency_proof(LEAVES, old_size, new_size)
    verify_consistency(old_size, new_size, proof, TREE.root(old_size), TREE.root(new_size))


def _flip_bit(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8 % len(data)] ^= 1 << (bit % 8)
    return bytes(changed)


@given(size_and_index(), st.data())
def test_tampered_inclusion_fails(case: tuple[int, int], data: st.DataObject) -> None:
    size, index = case
    proof = TREE.inclusion_proof(index, size)
    root = TREE.root(size)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        verify_inclusion(_flip_bit(LEAVES[index], bit), index, size, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[index], index, size, proof, _flip_bit(root, bit))
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[index], index, size, [*proof, root], root)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        tampered = list(proof)
        tampered[position] = _flip_bit(tampered[position], bit)
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[index], index, size, tampered, root)
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[index], index, size, proof[:-1], root)
    if size > 1:
        # Another leaf's hash at this index, or this proof for another leaf.
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[other], index, size, proof, root)
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[index], other, size, proof, root)


@given(two_sizes(), st.data())
def test_tampered_consistency_fails(case: tuple[int, int], data: st.DataObject) -> None:
    old_size, new_size = case
    proof = TREE.consistency_proof(old_size, new_size)
    old_root, new_root = TREE.root(old_size), TREE.root(new_size)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        verify_consistency(old_size, new_size, proof, _flip_bit(old_root, bit), new_root)
    with pytest.raises(ProofError):
        verify_consistency(old_size, new_size, proof, old_root, _flip_bit(new_root, bit))
    with pytest.raises(ProofError):
        verify_consistency(old_size, new_size, [*proof, new_root], old_root, new_root)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        tampered = list(proof)
        tampered[position] = _flip_bit(tampered[position], bit)
        with pytest.raises(ProofError):
            verify_consistency(old_size, new_size, tampered, old_root, new_root)
    if old_size < new_size:
        # The new tree with one leaf changed no longer extends the old one.
        changed = data.draw(st.integers(0, old_size - 1))
        forked = list(LEAVES[:new_size])
        forked[changed] = leaf_hash(b"forged")
        with pytest.raises(ProofError):
            verify_consistency(old_size, new_size, proof, old_root, rfc_mth(forked))


def test_verify_refuses_bad_arguments() -> None:
    root = TREE.root(8)
    proof = TREE.inclusion_proof(3, 8)
    with pytest.raises(ProofError, match="negative"):
        verify_inclusion(LEAVES[3], -1, 8, proof, root)
    with pytest.raises(ProofError, match="outside"):
        verify_inclusion(LEAVES[3], 8, 8, proof, root)
    with pytest.raises(ProofError, match="proof hash 1"):
        verify_inclusion(LEAVES[3], 3, 8, [proof[0], proof[1][:31], proof[2]], root)
    with pytest.raises(ProofError, match="2 hashes, want 3"):
        verify_inclusion(LEAVES[3], 3, 8, proof[:2], root)
    with pytest.raises(ProofError, match="mismatch"):
        verify_inclusion(LEAVES[3], 3, 8, proof[::-1], root)
    with pytest.raises(ProofError, match="larger"):
        verify_consistency(5, 4, [], root, root)
    with pytest.raises(ProofError, match="from tree size 0"):
        verify_consistency(0, 4, [], EMPTY_ROOT, root)


@given(st.lists(st.integers(1, 17), max_size=12))
def test_compact_range_batches_and_restores(batches: list[int]) -> None:
    compact = CompactRange()
    done = 0
    for batch in batches:
        compact.extend(LEAVES[done : done + batch])
        done += batch
        assert compact.size == done
        assert compact.root() == rfc_mth(LEAVES[:done])
        restored = CompactRange(compact.size, compact.nodes)
        restored.append(LEAVES[done])
        assert restored.root() == rfc_mth(LEAVES[: done + 1])
        assert compact.size == done  # restoring shares no state


def test_compact_range_every_size() -> None:
    compact = CompactRange()
    for size in range(1, MAX_LEAVES + 1):
        compact.append(LEAVES[size - 1])
        assert len(compact.nodes) == size.bit_count()
        assert compact.root() == TREE.root(size)


def test_compact_range_refuses_bad_state() -> None:
    with pytest.raises(ValueError):
        CompactRange(3, [LEAVES[0]])
    with pytest.raises(ValueError):
        CompactRange(1, [b"short"])
    compact = CompactRange()
    with pytest.raises(ValueError):
        compact.extend([LEAVES[0], b"short", LEAVES[2]])
    assert compact.size == 1  # the leaves before the bad one are kept, consistently
    assert compact.root() == LEAVES[0]


def test_tree_grows_incrementally() -> None:
    tree = MerkleTree()
    for start in range(0, MAX_LEAVES, 7):
        tree.extend(LEAVES[start : start + 7])
        assert tree.root() == rfc_mth(LEAVES[: len(tree)])
    tree.append(leaf_hash(b"one more"))
    assert tree.root() == rfc_mth([*LEAVES, leaf_hash(b"one more")])
    assert tree.leaf_hash(0) == LEAVES[0]
    assert tree.inclusion_proof(0, 5) == TREE.inclusion_proof(0, 5)


def test_generators_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TREE.root(MAX_LEAVES + 1)
    with pytest.raises(ValueError):
        TREE.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        TREE.consistency_proof(0, 5)
    with pytest.raises(ValueError):
        TREE.consistency_proof(6, 5)
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES[:4], 0, 5)
    with pytest.raises(ValueError):
        MerkleTree([b"short"])
    assert TREE.consistency_proof(5, 5) == []


@given(st.lists(st.integers(1, 40), max_size=10))
# A case hashes the tree at every size, hundreds of roots: its time says nothing of the
# code (on a loaded machine the first case went over the 200 ms default).
@settings(deadline=None)
def test_subtrees_of_blocks_hashed_elsewhere_give_the_root_at_every_size(blocks: list[int]) -> None:
    """Blocks of leaves with their inner levels (`levels_of`, as a verify worker makes
    them): where a block starts on a multiple of its top subtree's size, the subtrees
    of each of its prefixes (`prefix_subtrees`) pushed onto the range before it give the
    root at that size; elsewhere its leaves are hashed again (`grow`)."""
    rng = CompactRange()
    done = 0
    for count in blocks:
        leaves = LEAVES[done : done + count]
        block = joined(levels_of(leaves))
        if done % (1 << (len(block) - 1)):
            rng.grow(leaves)
        else:
            for size in range(done + 1, done + len(leaves) + 1):
                part = rng.copy()
                for height, node in prefix_subtrees(block, size - done):
                    part.push(height, node)
                assert part.size == size and part.root() == rfc_mth(LEAVES[:size])
            for height, node in prefix_subtrees(block, len(leaves)):
                rng.push(height, node)
        done += len(leaves)
        assert rng.size == done and rng.root() == rfc_mth(LEAVES[:done])


def joined(levels: list[list[bytes]]) -> list[bytes]:
    """Levels as a verify worker sends them: each one's hashes end to end."""
    return [b"".join(level) for level in levels]


def test_a_pushed_subtree_is_taken_as_it_came_and_must_start_on_its_size() -> None:
    rng = CompactRange()
    rng.grow(LEAVES[:8])
    rng.push(1, b"\x00" * 32)  # leaves 8 and 9, hashed elsewhere (here: wrongly)
    assert rng.size == 10
    assert rng.root() == node_hash(rfc_mth(LEAVES[:8]), b"\x00" * 32)
    with pytest.raises(ValueError, match="height 2 cannot start at size 10"):
        rng.push(2, rfc_mth(LEAVES[10:14]))
    assert rng.size == 10
    twin = rng.copy()
    twin.push(1, rfc_mth(LEAVES[10:12]))
    assert (twin.size, rng.size) == (12, 10)
