"""Checking RFC 9162 (RFC 6962) Merkle proofs: what an auditor, a witness or a partner
does with a proof the log serves.

`verify_inclusion` and `verify_consistency` follow RFC 9162 sections 2.1.3.2 and
2.1.4.2, with the edge cases of the transparency-dev/merkle verifier. The tree and the
proofs themselves are `gateway.audit.merkle`.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.audit.merkle import HASH_SIZE, node_hash


class ProofError(ValueError):
    """A Merkle proof failed to verify or is malformed."""


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, want {HASH_SIZE}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, node in enumerate(proof):
        _check_hash(f"proof hash {i}", node)


def _check_root(what: str, computed: bytes, expected: bytes) -> None:
    if computed != expected:
        raise ProofError(
            f"{what} mismatch: proof gives {computed.hex()}, expected {expected.hex()}"
        )


def _decompose(index: int, size: int) -> tuple[int, int]:
    """Split the inclusion proof of `index` in a tree of `size` leaves.

    Returns the number of hashes below the level where the paths to `index` and to
    the last leaf part (inner), and the number above it (border, all left siblings).
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, node in enumerate(proof):
        seed = node_hash(seed, node) if (index >> i) & 1 == 0 else node_hash(node, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    # Only the left siblings: this rebuilds the earlier (smaller) version of the subtree.
    for i, node in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(node, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for node in proof:
        seed = node_hash(node, seed)
    return seed


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` leaves with `root`.

    Raises ProofError on any failure.
    """
    if index < 0:
        raise ProofError(f"negative leaf index {index}")
    if index >= size:
        raise ProofError(f"leaf index {index} outside a tree of size {size}")
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_proof_hashes(proof)
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(
            f"inclusion proof has {len(proof)} hashes, want {inner + border} "
            f"for leaf {index} of {size}"
        )
    computed = _chain_inner(leaf_hash, proof[:inner], index)
    computed = _chain_border_right(computed, proof[inner:])
    _check_root(f"root of size {size}", computed, root)


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree of `new_size` leaves with `new_root` extends the one of
    `old_size` leaves with `old_root`.

    Raises ProofError on any failure. As in transparency-dev/merkle, a proof from
    size 0 is refused (every tree trivially extends the empty one, so such a call is
    a caller bug), and equal sizes need an empty proof and equal roots.
    """
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size <= 0:
        raise ProofError(f"no consistency proof from tree size {old_size}")
    if old_size == new_size:
        if proof:
            raise ProofError(f"sizes are equal ({old_size}) but the proof is not empty")
        _check_root(f"root of size {old_size}", new_root, old_root)
        return
    if not proof:
        raise ProofError(f"empty consistency proof from size {old_size} to {new_size}")
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    _check_proof_hashes(proof)

    # The proof is an inclusion proof, in the new tree, of the largest perfect subtree
    # ending at old_size, starting with that subtree's hash unless it is the whole old
    # tree (old_size a power of two), whose hash the verifier already has.
    inner, border = _decompose(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1
    inner -= shift
    if old_size == 1 << shift:
        seed, path = old_root, proof
        expected = inner + border
    else:
        seed, path = proof[0], proof[1:]
        expected = 1 + inner + border
    if len(proof) != expected:
        raise ProofError(
            f"consistency proof has {len(proof)} hashes, want {expected} "
            f"from size {old_size} to {new_size}"
        )
    index = (old_size - 1) >> shift
    computed_old = _chain_inner_right(seed, path[:inner], index)
    computed_old = _chain_border_right(computed_old, path[inner:])
    _check_root(f"root of size {old_size}", computed_old, old_root)
    computed_new = _chain_inner(seed, path[:inner], index)
    computed_new = _chain_border_right(computed_new, path[inner:])
    _check_root(f"root of size {new_size}", computed_new, new_root)
