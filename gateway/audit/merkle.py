"""RFC 9162 (RFC 6962) Merkle tree hashing and proofs.

The audit log is a Merkle tree over its entries, so a signed checkpoint (size, root)
commits to every entry before it: an inclusion proof shows that one entry is in the
tree, a consistency proof that a later tree only appended to an earlier one.

Everything here is pure Python on hashlib, and the hot paths (whole-tree roots,
appends, per-level builds) keep the work per node down to the SHA-256 call itself,
because the auditor re-hashes the whole log and its cost is bound by the hashing.

- `root_from_leaf_hashes`: the root of a list of leaf hashes, level by level.
- `CompactRange`: O(log n) state to append leaves (or whole subtrees hashed elsewhere)
  and read the root at every size (the writer's state, and the auditor's while it
  checks checkpoints in a stream).
- `MerkleTree`: every level kept in memory, so roots and proofs at any earlier
  size cost O(log n) hashes.
- `inclusion_proof` / `consistency_proof`: the RFC 9162 PROOF and SUBPROOF
  algorithms over a plain list; the `_from` variants take any source of subtree
  hashes, which is how `MerkleTree` serves them fast.

Checking a proof (`verify_inclusion`, `verify_consistency`) is `gateway.audit.proofcheck`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256

# Hash of the leaves [start, end) of the tree, for the range of one RFC 9162 tree node:
# start is a multiple of a power of two that is at least end - start.
SubtreeHash = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


#: SHA-256 fed the 0x00 prefix of a leaf (RFC 9162): a leaf hash is a copy of it fed the leaf.
LEAF_PREFIX = _sha256(b"\x00")
_NODE_PREFIX = _sha256(b"\x01")


def parents(level: Sequence[bytes]) -> list[bytes]:
    """The hashes of the pairs of `level`, in order (an unpaired last node is left out):
    each from a copy of the hashed 0x01 prefix, fed the two children, which costs 5%
    less than hashing ``b"\x01" + left + right`` (no concatenated copy)."""
    new = _NODE_PREFIX.copy
    above: list[bytes] = []
    add = above.append
    pairs = iter(level)
    for left, right in zip(pairs, pairs, strict=False):
        sha = new()
        sha.update(left)
        sha.update(right)
        add(sha.digest())
    return above


def leaf_hashes(leaves: Iterable[bytes]) -> list[bytes]:
    """`leaf_hash` of each of `leaves`, each from a copy of the hashed prefix: no copy
    of the leaf (a verify reads and hashes a million of them; the prefix put in front
    by SQL cost a copy of each in SQLite). Raises TypeError for a leaf that is no
    bytes-like object (NULL, a number)."""
    new = LEAF_PREFIX.copy
    digests: list[bytes] = []
    add = digests.append
    for leaf in leaves:
        sha = new()
        sha.update(leaf)
        add(sha.digest())
    return digests


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The root of the tree whose leaf hashes are `hashes`.

    Pairing each level and carrying an odd last node up unchanged gives the same root
    as the RFC's split at the largest power of two, without recursion.
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        carry = level[-1] if len(level) & 1 else None  # an odd last node is carried up
        level = parents(level)
        if carry is not None:
            level.append(carry)
    return level[0]


#: A perfect subtree: (height, index among the subtrees of that height, hash).
Subtree = tuple[int, int, bytes]


def _set_bits(size: int) -> list[int]:
    """The heights of a compact range's nodes, highest first: one per set bit of the size."""
    return [h for h in range(size.bit_length() - 1, -1, -1) if size >> h & 1]


class CompactRange:
    """The roots of the perfect subtrees that make up a tree of `size` leaves.

    This is all the state needed to append and to compute the root: one hash per set
    bit of the size, highest subtree first. Persist `size` and `nodes`, and rebuild
    with `CompactRange(size, nodes)`.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self, size: int = 0, nodes: Iterable[bytes] = ()) -> None:
        node_list = list(nodes)
        if size < 0 or len(node_list) != size.bit_count():
            raise ValueError(
                f"a compact range of size {size} holds {max(size, 0).bit_count()} hashes, "
                f"got {len(node_list)}"
            )
        if any(len(node) != HASH_SIZE for node in node_list):
            raise ValueError(f"compact range hashes must be {HASH_SIZE} bytes")
        self._size = size
        self._nodes = node_list

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def append(self, leaf_hash: bytes) -> None:
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        hashes = list(leaf_hashes)
        bad = next((i for i, node in enumerate(hashes) if len(node) != HASH_SIZE), None)
        # The leaves before a bad one are appended, and the range stays consistent.
        self.grow(hashes if bad is None else hashes[:bad])
        if bad is not None:
            raise ValueError(f"leaf hash is {len(hashes[bad])} bytes, want {HASH_SIZE}")

    def grow(self, leaf_hashes: Sequence[bytes], *, report_from: int | None = None) -> list[Subtree]:
        """`extend` with SHA-256 digests just computed (not checked), a level at a
        time: at each height the new nodes (led by the range's own node of that height
        when the first new one is a right child) are hashed in pairs into the level
        above, and an unpaired last node becomes the range's node of that height.
        Returns the perfect subtrees of height `report_from` and up completed on the
        way, as (height, index at that height, hash), for a caller that stores them."""
        size = self._size
        old = dict(zip(_set_bits(size), self._nodes, strict=True))
        new: dict[int, bytes] = {}
        completed: list[Subtree] = []
        level = list(leaf_hashes)
        start, height = size, 0  # level[0] is node `start` of its height
        while level:
            if start & 1:
                level.insert(0, old.pop(height))
                start -= 1
            if len(level) & 1:
                new[height] = level[-1]
            level = parents(level)
            start >>= 1
            height += 1
            if report_from is not None and height >= report_from:
                completed += [(height, start + i, node) for i, node in enumerate(level)]
        self._size = size = size + len(leaf_hashes)
        self._nodes = [new[h] if h in new else old[h] for h in _set_bits(size)]
        return completed

    def push(self, height: int, node: bytes) -> None:
        """Append a perfect subtree of ``2 ** height`` leaves whose hash is `node`,
        hashed elsewhere; the size must be a multiple of ``2 ** height``."""
        size = self._size
        if size % (1 << height):
            raise ValueError(f"a subtree of height {height} cannot start at size {size}")
        nodes = self._nodes
        above = size >> height
        while above & 1:  # the range's node of this height is its left sibling
            node = _sha256(b"\x01" + nodes.pop() + node).digest()
            above >>= 1
        nodes.append(node)
        self._size = size + (1 << height)

    def copy(self) -> CompactRange:
        twin = CompactRange()
        twin._size, twin._nodes = self._size, list(self._nodes)
        return twin

    def root(self) -> bytes:
        nodes = self._nodes
        if not nodes:
            return EMPTY_ROOT
        root = nodes[-1]
        for i in range(len(nodes) - 2, -1, -1):
            root = _sha256(b"\x01" + nodes[i] + root).digest()
        return root


def levels_of(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """The levels of a block of leaves: level 0 the leaf hashes, level h + 1 the hashes
    of the pairs of level h (an unpaired last node waits, as in `MerkleTree`)."""
    levels = [list(leaf_hashes)]
    while len(levels[-1]) >= 2:
        levels.append(parents(levels[-1]))
    return levels


class _Level:
    """One level of a `MerkleTree`: its hashes end to end in one bytearray (a million
    leaves are then 64 MB less than as two million Python bytes objects)."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._data) // HASH_SIZE

    def __getitem__(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise IndexError(f"node {index} outside a level of {len(self)}")
        start = index * HASH_SIZE
        return bytes(self._data[start : start + HASH_SIZE])

    def extend(self, nodes: Sequence[bytes]) -> None:
        self._data += b"".join(nodes)


class MerkleTree:
    """A tree with every level in memory: roots and proofs at any size up to `len`.

    Level h holds the hashes of the perfect subtrees of 2**h leaves. Nodes straddling
    the right edge of a smaller tree are not stored; they are folded from the perfect
    subtrees that cover them, O(log n) hashes, and a proof needs at most one of them.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[_Level] = [_Level()]
        self.extend(leaf_hashes)

    def __len__(self) -> int:
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> None:
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        new = list(leaf_hashes)
        if any(len(node) != HASH_SIZE for node in new):
            raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes")
        self.extend_digests(new)

    def extend_digests(self, new: Sequence[bytes]) -> None:
        """`extend` without the length check, for SHA-256 digests just computed (the
        check costs a tenth of a verifier's tree work)."""
        self._add(0, new)

    def _add(self, height: int, nodes: Sequence[bytes]) -> None:
        """Append `nodes` at `height`, and above it the pairs they complete: each
        level's unpaired last node (if any) pairs with the first new one."""
        levels = self._levels
        while nodes:
            if height == len(levels):
                levels.append(_Level())
            level = levels[height]
            pending = [level[len(level) - 1], *nodes] if len(level) & 1 else nodes
            level.extend(nodes)
            nodes = parents(pending)
            height += 1

    def leaf_hash(self, index: int) -> bytes:
        return self._levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        size = self._check_size(size)
        return self.subtree_hash(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof_from(self.subtree_hash, index, self._check_size(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof_from(self.subtree_hash, old_size, self._check_size(new_size))

    def subtree_hash(self, start: int, end: int) -> bytes:
        """The hash of a tree node's leaves [start, end), a `SubtreeHash`."""
        levels = self._levels
        covering: list[bytes] = []
        count = end - start
        for height in range(count.bit_length() - 1, -1, -1):
            if count >> height & 1:
                covering.append(levels[height][start >> height])
                start += 1 << height
        result = covering.pop()
        while covering:
            result = _sha256(b"\x01" + covering.pop() + result).digest()
        return result

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return len(self)
        if not 0 <= size <= len(self):
            raise ValueError(f"tree size {size} outside 0..{len(self)}")
        return size


def prefix_subtrees(block: Sequence[bytes], count: int) -> list[tuple[int, bytes]]:
    """The perfect subtrees, highest first, that make up the first `count` leaves of a
    block whose levels are `block` (``block[h]`` its nodes of height h end to end, as
    `levels_of` makes them, each concatenated), as (height, hash): what a
    `CompactRange` at the block's start `push`es to take in those leaves."""
    subtrees: list[tuple[int, bytes]] = []
    done = 0
    for height in _set_bits(count):
        at = (done >> height) * HASH_SIZE
        subtrees.append((height, block[height][at : at + HASH_SIZE]))
        done += 1 << height
    return subtrees


def split_joined(joined: bytes) -> list[bytes]:
    """Hashes end to end, 32 bytes each, as a list (one C call: half the time of
    slicing in a list comprehension)."""
    return list(struct.unpack(f"{HASH_SIZE}s" * (len(joined) // HASH_SIZE), joined))


def _split(count: int) -> int:
    """The largest power of two smaller than `count` (count >= 2): RFC 9162's k."""
    return 1 << ((count - 1).bit_length() - 1)


def inclusion_proof_from(subtree_hash: SubtreeHash, index: int, size: int) -> list[bytes]:
    """RFC 9162 PATH(index, D[0:size]), with subtree hashes from `subtree_hash`."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            path.append(subtree_hash(middle, end))
            end = middle
        else:
            path.append(subtree_hash(start, middle))
            start = middle
    path.reverse()
    return path


def consistency_proof_from(subtree_hash: SubtreeHash, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 PROOF(old_size, D[0:new_size]), with subtree hashes from `subtree_hash`."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    proof: list[bytes] = []
    start, end = 0, new_size
    old_is_subtree = True  # SUBPROOF's b: the old tree is the node being descended into
    while old_size != end:
        middle = start + _split(end - start)
        if old_size <= middle:
            proof.append(subtree_hash(middle, end))
            end = middle
        else:
            proof.append(subtree_hash(start, middle))
            start = middle
            old_is_subtree = False
    if not old_is_subtree:
        proof.append(subtree_hash(start, end))
    proof.reverse()
    return proof


def _subtree_hash_of(leaf_hashes: Sequence[bytes], size: int) -> SubtreeHash:
    if not 0 <= size <= len(leaf_hashes):
        raise ValueError(f"tree size {size} outside 0..{len(leaf_hashes)}")
    return lambda start, end: root_from_leaf_hashes(leaf_hashes[start:end])


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Inclusion proof of leaf `index` in the tree of the first `size` leaf hashes.

    O(size) hashes: for repeated proofs over a large log use `MerkleTree`.
    """
    return inclusion_proof_from(_subtree_hash_of(leaf_hashes, size), index, size)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof between the trees of the first `old_size` and `new_size` leaves.

    O(new_size) hashes: for repeated proofs over a large log use `MerkleTree`.
    """
    return consistency_proof_from(_subtree_hash_of(leaf_hashes, new_size), old_size, new_size)
