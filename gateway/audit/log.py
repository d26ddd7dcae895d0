"""Appending to the audit log, inside the caller's transaction, and signing checkpoints.

An entry is in the log if and only if the action it records committed: the caller
passes the transaction that performs the action, and the tree state (`audit_tree`),
the stored subtree hashes (`audit_nodes`) and any checkpoint that falls due are
written in that same transaction. A crash therefore never leaves the tree state and
the entries apart.

The tree state is a `CompactRange`: one hash per set bit of the size, so an append
hashes O(log n) nodes and reads one row, however long the log. Perfect subtrees of
2**NODE_HEIGHT leaves and up are stored as they complete; proofs read them instead
of every leaf hash (see `gateway.audit.query`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit.canonical import canonical_entry as canonical
from gateway.audit.errors import AuditError
from gateway.audit.merkle import HASH_SIZE, LEAF_PREFIX, CompactRange, Subtree, levels_of
from gateway.audit.signer import LogSigner
from gateway.clock import isotime, utcnow
from gateway.storage import Database, Lock, Transaction
from schemas.audit import Entry

#: Subtrees of 16 leaves and up are stored: about n/8 rows, and a proof then reads and
#: hashes at most two blocks of 16 leaf hashes. (Logs began with 64 and up; the
#: migration that came with 16 stores the smaller ones: `store_subtrees`.)
NODE_HEIGHT = 4
_REBUILD_BATCH = 10_000


async def _subtrees_of_16_and_32(tx: Transaction) -> None:
    await store_subtrees(tx, 4, 6)


#: The upgrade steps of the audit log's tables, by the names `gateway.storage.migrations`
#: gives them.
DATA_STEPS = {"audit-subtrees-16-32": _subtrees_of_16_and_32}


@dataclass(frozen=True)
class CheckpointRecord:
    size: int
    note: str
    created_at: str


async def append(
    tx: Transaction, entries: Sequence[Entry], *, signer: LogSigner | None = None
) -> list[int]:
    """Add entries at the end of the log; return their indices.

    With a `signer`, a checkpoint is signed when the size crosses a multiple of
    `signer.every`; without one, it is left for the next `checkpoint_now`.
    """
    if not entries:
        return []
    # One sequencer at a time, so indices never interleave between instances.
    await tx.take_turns(Lock.AUDIT_LOG)
    tree = await load_tree(tx)
    start = tree.size
    hashes: list[bytes] = []
    # A large batch goes in chunks, and the next chunk is serialized and hashed while
    # the database inserts one: PostgreSQL in its server, SQLite in a thread of its
    # own (`Transaction.insert_many`). One insert is in flight at a time, and nothing
    # else runs on the transaction meanwhile.
    if len(entries) <= _CHUNK:
        # One statement (a group of placements and reports): nothing to overlap.
        await tx.executemany(_INSERT, _rows(entries, start, hashes))
        return await _finish(tx, tree, _grow(tree, hashes), signer)
    pending: asyncio.Future[None] | None = None
    try:
        for first in range(0, len(entries), _CHUNK):
            rows = _rows(entries[first : first + _CHUNK], start + first, hashes)
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(tx.insert_many(_INSERT, rows))
            await asyncio.sleep(0)  # let it start
        grown = _grow(tree, hashes)
        assert pending is not None  # entries is not empty
        await pending
    except BaseException:
        if pending is not None and not pending.done():
            # Let the insert in flight end before the caller rolls back.
            await asyncio.wait([pending])
        if pending is not None and not pending.cancelled():
            pending.exception()  # retrieved: the error being raised is the first one
        raise
    return await _finish(tx, tree, grown, signer)


async def _finish(tx: Transaction, tree: CompactRange, grown: _Grown, signer: LogSigner | None) -> list[int]:
    """Store the grown tree, sign a checkpoint if one fell due; the new indices."""
    start = tree.size
    tree = await _store(tx, grown)
    if signer is not None and tree.size // signer.every > start // signer.every:
        await write_checkpoint(tx, signer, tree)
    return list(range(start, tree.size))


#: Entries per INSERT statement of a batch (see `append`).
_CHUNK = 500
_INSERT = (
    "INSERT INTO audit_entries (idx, leaf, leaf_hash, kind, partner_id, case_token, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_Row = tuple[int, str, bytearray, str, str | None, str | None, str]


def _rows(entries: Sequence[Entry], start: int, hashes: list[bytes]) -> list[_Row]:
    """The audit_entries rows of `entries` from index `start`; appends their leaf hashes."""
    rows = []
    leaf_prefix = LEAF_PREFIX.copy  # a copy of the hashed prefix: cheaper than a new hash
    add_hash = hashes.append
    for index, entry in enumerate(entries, start):
        leaf = canonical(entry)
        sha = leaf_prefix()
        sha.update(leaf)
        digest = sha.digest()
        add_hash(digest)
        fields = entry.__dict__
        rows.append(
            (
                index,
                leaf.decode("utf-8"),
                # sqlite3 binds a bytearray as it is, and looks for an adapter for
                # bytes first (~1 us a value, a tenth of an insert).
                bytearray(digest),
                fields["kind"],
                fields.get("partner"),
                fields.get("case"),
                fields["at"],
            )
        )
    return rows


async def load_tree(tx: Transaction) -> CompactRange:
    """The writer's tree state, rebuilt from the entries if it was never stored.

    Refuses to go on when the state and the entries disagree: appending to a log
    that was changed behind the gateway's back would bury the change.
    """
    row = await tx.fetchone("SELECT size, nodes FROM audit_tree WHERE id = 1")
    count = await tx.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries")
    if row is None:
        return await _rebuild(tx)
    tree = tree_from_row(row)
    if tree.size != count:
        raise AuditError(
            f"audit log tree state records {tree.size} entries but the table holds {count}: "
            "the log was changed outside the gateway; run `gateway audit verify`"
        )
    return tree


def tree_from_row(row: dict[str, Any]) -> CompactRange:
    """The compact range stored in an `audit_tree` row (nodes concatenated)."""
    blob = bytes(row["nodes"])
    try:
        return CompactRange(row["size"], [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)])
    except ValueError as exc:
        raise AuditError(
            f"audit log tree state is damaged ({exc}): the log was changed outside the gateway "
            "(`gateway audit verify` names the first changed entry)"
        ) from None


async def _rebuild(tx: Transaction) -> CompactRange:
    tree = CompactRange()
    await tx.execute("INSERT INTO audit_tree (id, size, nodes) VALUES (1, 0, ?)", (b"",))
    while True:
        rows = await tx.fetchall(
            "SELECT idx, leaf_hash FROM audit_entries WHERE idx >= ? ORDER BY idx LIMIT ?",
            (tree.size, _REBUILD_BATCH),
        )
        if not rows:
            return tree
        if rows[0]["idx"] != tree.size or rows[-1]["idx"] != tree.size + len(rows) - 1:
            raise AuditError(
                f"audit log has a gap after entry {tree.size - 1}; run `gateway audit verify`"
            )
        tree = await _extend(tx, tree, [bytes(r["leaf_hash"]) for r in rows])


async def _extend(tx: Transaction, tree: CompactRange, hashes: Sequence[bytes]) -> CompactRange:
    """Append leaf hashes to `tree`, storing completed subtrees and the new state."""
    return await _store(tx, _grow(tree, hashes))


#: A grown tree: its size, its compact range nodes, and the completed subtrees to
#: store as (height, index, hash).
_Grown = tuple[int, list[bytes], list[Subtree]]


def _grow(tree: CompactRange, hashes: Sequence[bytes]) -> _Grown:
    """`tree` with `hashes` appended (`tree` itself unchanged), and the subtrees of
    NODE_HEIGHT and up completed on the way, to be stored."""
    grown = CompactRange(tree.size, tree.nodes)
    completed = grown.grow(hashes, report_from=NODE_HEIGHT)
    return grown.size, list(grown.nodes), completed


_INSERT_NODES = "INSERT INTO audit_nodes (height, idx, hash) VALUES (?, ?, ?)"


async def _store(tx: Transaction, grown: _Grown) -> CompactRange:
    size, nodes, completed = grown
    if completed:
        # bytearray: see `_rows`.
        await tx.executemany(_INSERT_NODES, [(h, i, bytearray(node)) for h, i, node in completed])
    await tx.execute(
        "UPDATE audit_tree SET size = ?, nodes = ? WHERE id = 1", (size, b"".join(nodes))
    )
    return CompactRange(size, nodes)


async def store_subtrees(tx: Transaction, low: int, high: int) -> None:
    """Store the perfect subtrees of heights `low` to `high` - 1 of the whole log: for a
    log written while only those of `high` and up were (a migration). A log with no
    tree state yet gets them all when `load_tree` rebuilds it."""
    await tx.take_turns(Lock.AUDIT_LOG)  # no append in between, on PostgreSQL
    if await tx.fetchone("SELECT size FROM audit_tree WHERE id = 1") is None:
        return
    batch = max(_REBUILD_BATCH >> high << high, 1 << high)  # whole subtrees of `high` per batch
    first = 0
    while True:
        rows = await tx.fetchall(
            "SELECT idx, leaf_hash FROM audit_entries WHERE idx >= ? ORDER BY idx LIMIT ?",
            (first, batch),
        )
        if rows and (rows[0]["idx"] != first or rows[-1]["idx"] != first + len(rows) - 1):
            raise AuditError(f"audit log has a gap after entry {first - 1}; run `gateway audit verify`")
        # A batch starts at a multiple of 2**high, so its levels hold whole subtrees.
        levels = levels_of([bytes(row["leaf_hash"]) for row in rows])
        found = [
            (height, (first >> height) + i, bytearray(node))
            for height in range(low, min(high, len(levels)))
            for i, node in enumerate(levels[height])
        ]
        if found:
            await tx.executemany(_INSERT_NODES, found)
        if len(rows) < batch:
            return
        first += batch


async def write_checkpoint(tx: Transaction, signer: LogSigner, tree: CompactRange) -> CheckpointRecord:
    clock = signer.clock or utcnow
    record = CheckpointRecord(tree.size, signer.sign(tree.size, tree.root()), isotime(clock()))
    await tx.execute(
        "INSERT INTO audit_checkpoints (size, note, created_at) VALUES (?, ?, ?)",
        (record.size, record.note, record.created_at),
    )
    return record


async def latest_checkpoint(tx: Transaction) -> CheckpointRecord | None:
    row = await tx.fetchone(
        "SELECT size, note, created_at FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
    )
    return None if row is None else CheckpointRecord(row["size"], row["note"], row["created_at"])


async def checkpoint_now(db: Database, signer: LogSigner) -> CheckpointRecord:
    """Sign a checkpoint of the log as it is now, unless the latest one already covers
    every entry (then return that one): safe to call on a timer, from several processes."""
    async with db.transaction() as tx:
        await tx.take_turns(Lock.AUDIT_LOG)
        tree = await load_tree(tx)
        latest = await latest_checkpoint(tx)
        if latest is not None and latest.size == tree.size:
            return latest
        return await write_checkpoint(tx, signer, tree)


# -- witnesses' cosignatures, kept beside the checkpoint they sign -------------------------

#: (size, line) of every stored cosignature from a size on, in a stable order.
COSIGNATURES_SQL = "SELECT size, line FROM audit_cosignatures WHERE size >= ? ORDER BY size, witness"


def group_lines(rows: Sequence[Any]) -> dict[int, list[str]]:
    """Cosignature rows, (size, line) tuples or rows with those keys, by size."""
    lines: dict[int, list[str]] = {}
    for row in rows:
        size, line = (row["size"], row["line"]) if isinstance(row, dict) else row
        lines.setdefault(size, []).append(line.decode("utf-8") if isinstance(line, bytes) else line)
    return lines


async def cosignature_lines(tx: Transaction, since_size: int = 0) -> dict[int, list[str]]:
    return group_lines(await tx.fetchall(COSIGNATURES_SQL, (since_size,)))


def cosigned(note: str, lines: Sequence[str] | None) -> str:
    """A checkpoint note with the cosignature lines stored for it after its signature."""
    return note + "".join(lines) if lines else note


async def store_cosignature(tx: Transaction, size: int, witness: str, line: str, at: str) -> None:
    """Keep a witness's verified cosignature of the checkpoint at `size` (the newest
    one per witness and size wins)."""
    await tx.execute("DELETE FROM audit_cosignatures WHERE size = ? AND witness = ?", (size, witness))
    await tx.execute(
        "INSERT INTO audit_cosignatures (size, witness, line, created_at) VALUES (?, ?, ?, ?)",
        (size, witness, line, at),
    )
