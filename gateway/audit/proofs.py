"""Inclusion and consistency proofs served from the database, in O(log n) rows.

A proof needs one subtree hash per level. Subtrees of 2**NODE_HEIGHT leaves and up are
stored as they complete (`audit_nodes`); smaller ones are hashed from at most two
blocks of leaf hashes (the block of the leaf being proved and the log's last, partial
block). The ranges a proof needs do not depend on the hashes, so the RFC 9162
algorithms run twice: once to learn the ranges, once on the fetched hashes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from gateway.audit import log, merkle
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.errors import AuditError
from gateway.audit.log import NODE_HEIGHT
from gateway.storage import Database, Row, Transaction


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf: str
    leaf_hash: bytes
    proof: list[bytes]
    root: bytes
    checkpoint: str | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        """JSON for an auditor: RFC 9162 hashes in base64, as the checkpoint writes them."""
        return {
            "index": self.index,
            "size": self.size,
            "leaf": self.leaf,
            "leaf_hash": _b64(self.leaf_hash),
            "proof": [_b64(node) for node in self.proof],
            "root": _b64(self.root),
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    proof: list[bytes]
    old_checkpoint: str | None = None
    new_checkpoint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": _b64(self.old_root),
            "new_root": _b64(self.new_root),
            "proof": [_b64(node) for node in self.proof],
            "old_checkpoint": self.old_checkpoint,
            "new_checkpoint": self.new_checkpoint,
        }


class _Subtrees:
    """Subtree hashes of the first `size` leaves, fetched for a known set of ranges."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.wanted: set[tuple[int, int]] = set()
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.leaves: dict[int, bytes] = {}
        self.note: str | None = None
        self._blocks: dict[int, merkle.MerkleTree] = {}

    def record(self, start: int, end: int) -> bytes:
        self.wanted.add((start, end))
        return b"\x00" * merkle.HASH_SIZE

    async def fetch(
        self, tx: Transaction, leaf_index: int | None = None, *, check_size: bool = False
    ) -> Row | None:
        """Read every wanted hash in one query (a round trip costs more than the rows);
        with `leaf_index`, that entry's leaf and leaf hash too, returned as a row; with
        `check_size`, the writer's size (refusing a larger `size`) and the note signed
        at `size`, if any, into `self.note`."""
        parts, params, node_count = self._query(leaf_index, check_size)
        found = None
        state = None
        if parts:
            leaves, nodes = self.leaves, self.nodes
            for row in await tx.fetchall(" UNION ALL ".join(parts), params):
                kind = row["kind"]
                if kind == 0:
                    leaves[row["idx"]] = bytes(row["hash"])
                elif kind == 1:
                    nodes[(row["height"], row["idx"])] = bytes(row["hash"])
                elif kind == 2:
                    found = row
                else:
                    state = row
        if state is not None:
            current = state["idx"] or 0
            if self.size > current:
                raise AuditError(f"tree size {self.size} outside 0..{current}")
            self.note = state["leaf"]
        if len(self.nodes) != node_count:
            raise AuditError("stored subtree hashes are missing; run `gateway audit verify`")
        return found

    def _query(self, leaf_index: int | None, check_size: bool) -> tuple[list[str], list[Any], int]:
        """The parts of `fetch`'s one query, their parameters, and how many stored
        subtree hashes it asks for. Rows are told apart by ``kind``: 0 a leaf hash of a
        block, 1 a stored subtree hash, 2 the entry asked for, 3 the writer's state."""
        node_keys = set()
        blocks = set()
        for start, end in self.wanted:
            for height, index in _perfect(start, end):
                if height >= NODE_HEIGHT:
                    node_keys.add((height, index))
                else:
                    blocks.add((index << height) >> NODE_HEIGHT)
        parts: list[str] = []
        params: list[Any] = []
        for block in sorted(blocks):
            first = block << NODE_HEIGHT
            parts.append(
                "SELECT 0 AS kind, 0 AS height, idx, leaf_hash AS hash, NULL AS leaf"
                " FROM audit_entries WHERE idx >= ? AND idx < ?"
            )
            params += (first, min(first + (1 << NODE_HEIGHT), self.size))
        keys = sorted(node_keys)
        if keys:
            where = " OR ".join(["(height = ? AND idx = ?)"] * len(keys))
            parts.append("SELECT 1 AS kind, height, idx, hash, NULL AS leaf"
                f" FROM audit_nodes WHERE {where}")
            params += [value for key in keys for value in key]
        if leaf_index is not None:
            parts.append("SELECT 2 AS kind, 0 AS height, idx, leaf_hash AS hash, leaf"
                " FROM audit_entries WHERE idx = ?")
            params.append(leaf_index)
        if check_size:
            parts.append(
                "SELECT 3 AS kind, 0 AS height, (SELECT size FROM audit_tree WHERE id = 1) AS idx,"
                " NULL AS hash, (SELECT note FROM audit_checkpoints WHERE size = ?) AS leaf"
            )
            params.append(self.size)
        return parts, params, len(keys)

    def hash(self, start: int, end: int) -> bytes:
        """A `merkle.SubtreeHash` over the fetched rows."""
        covering = []
        for height, index in _perfect(start, end):
            if height >= NODE_HEIGHT:
                covering.append(self.nodes[(height, index)])
            else:
                first = index << height
                offset = first & ((1 << NODE_HEIGHT) - 1)
                block = self._block(first >> NODE_HEIGHT)
                covering.append(block.subtree_hash(offset, offset + (1 << height)))
        result = covering.pop()
        while covering:
            result = merkle.node_hash(covering.pop(), result)
        return result


    def _block(self, block: int) -> merkle.MerkleTree:
        """Every level of one block of leaves, hashed once for all the ranges in it."""
        tree = self._blocks.get(block)
        if tree is None:
            first = block << NODE_HEIGHT
            try:
                leaves = [self.leaves[i] for i in range(first, min(first + (1 << NODE_HEIGHT), self.size))]
            except KeyError as exc:
                raise AuditError(f"leaf hash {exc} is missing; run `gateway audit verify`") from None
            tree = self._blocks[block] = merkle.MerkleTree(leaves)
        return tree


def _perfect(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees (height, index at that height) covering [start, end)."""
    out = []
    count = end - start
    for height in range(count.bit_length() - 1, -1, -1):
        if count >> height & 1:
            out.append((height, start >> height))
            start += 1 << height
    return out


async def _size_and_note(tx: Transaction, size: int | None) -> tuple[int, str | None]:
    if size is None:
        latest = await log.latest_checkpoint(tx)
        if latest is None:
            raise AuditError("no signed checkpoint yet: run `gateway audit checkpoint`")
        return latest.size, latest.note
    # One round trip for both.
    row = await tx.fetchone(
        "SELECT (SELECT size FROM audit_tree WHERE id = 1) AS current,"
        " (SELECT note FROM audit_checkpoints WHERE size = ?) AS note",
        (size,),
    )
    current = (row or {}).get("current") or 0
    if not 0 <= size <= current:
        raise AuditError(f"tree size {size} outside 0..{current}")
    return size, (row or {}).get("note")


def _signed_root(note: str | None) -> bytes | None:
    if note is None:
        return None
    return Checkpoint.from_text(note[: note.rindex("\n\n") + 1]).root


async def inclusion_proof(db: Database, index: int, size: int | None = None) -> InclusionProof:
    """Proof that entry `index` is in the tree of `size` entries (default: the latest
    checkpoint), with the leaf, the root and that size's checkpoint note if any."""
    async with db.transaction() as tx:
        # With a plausible size, its check rides on the one query for the hashes.
        checked = size is None or not 0 <= index < size
        if checked:
            size, note = await _size_and_note(tx, size)
        assert size is not None
        if not 0 <= index < size:
            raise AuditError(f"entry {index} is not in the log at size {size} (0..{size - 1})")
        subtrees = _Subtrees(size)
        merkle.inclusion_proof_from(subtrees.record, index, size)
        subtrees.record(0, size)
        row = await subtrees.fetch(tx, index, check_size=not checked)
        if not checked:
            note = subtrees.note
    assert row is not None  # indices below the tree size always exist (load_tree checks)
    proof = merkle.inclusion_proof_from(subtrees.hash, index, size)
    root = subtrees.hash(0, size)
    _check_root(root, note, size)
    return InclusionProof(index, size, row["leaf"], bytes(row["hash"]), proof, root, note)


async def consistency_proof(db: Database, old_size: int, new_size: int | None = None) -> ConsistencyProof:
    """Proof that the tree of `new_size` entries (default: the latest checkpoint)
    only appended to the tree of `old_size` entries."""
    async with db.transaction() as tx:
        new_size, new_note = await _size_and_note(tx, new_size)
        if not 0 < old_size <= new_size:
            raise AuditError(f"no consistency proof from size {old_size} to {new_size}: need 0 < OLD <= NEW")
        _, old_note = await _size_and_note(tx, old_size)
        subtrees = _Subtrees(new_size)
        merkle.consistency_proof_from(subtrees.record, old_size, new_size)
        subtrees.record(0, old_size)
        subtrees.record(0, new_size)
        await subtrees.fetch(tx)
    proof = merkle.consistency_proof_from(subtrees.hash, old_size, new_size)
    old_root, new_root = subtrees.hash(0, old_size), subtrees.hash(0, new_size)
    _check_root(old_root, old_note, old_size)
    _check_root(new_root, new_note, new_size)
    return ConsistencyProof(old_size, new_size, old_root, new_root, proof, old_note, new_note)


def _check_root(root: bytes, note: str | None, size: int) -> None:
    signed = _signed_root(note)
    if signed is not None and signed != root:
        raise AuditError(
            f"the stored tree does not match the checkpoint signed at size {size}: "
            "run `gateway audit verify`"
        )
