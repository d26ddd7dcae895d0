"""Verifying a large SQLite audit log on every core.

The per-entry work of `gateway audit verify` (reading the rows, the lint, hashing the
leaves, comparing the stored hashes) is split into contiguous index ranges, each
checked in a worker process by `gateway.audit.verify.check_batch`, the same code the
single-process path runs (without the lint, a range is first hashed the quick way,
`_hashed_whole`, and read again by `check_batch` only if something in it is wrong).
The parent gets each range's leaf hashes back as one bytes object, in index order,
and feeds them to its `LogVerifier` (`feed_digests`), which builds the tree and checks
the checkpoints while the workers read on; a problem a worker found is reported after
the checkpoints before it, as in-process. The workers start first (`RangeWorkers`),
and the parent reads and checks the signed checkpoints while they take their first
ranges.

Snapshot: the parent holds one read transaction (checkpoints, the last index, the
writer's tree state) and hands out the ranges of [0, last index + 1). Entries are
append-only, so a worker, reading a later snapshot, sees the same rows below that;
entries appended meanwhile are not read, as the single-process read would not see them.

This module is what a worker imports (spawned, not forked: the parent has threads), so
it imports little at the top.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import types
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.audit.errors import AuditError
from gateway.audit.merkle import levels_of
from gateway.audit.verify import check_batch

if TYPE_CHECKING:
    from gateway.audit.verify import LogVerifier, Problem

#: Logs with fewer entries are verified in-process: starting workers would cost more.
MIN_ENTRIES = 100_000
#: Entries per worker task: big enough to keep the per-task cost small, small enough
#: that the parent's tree work follows the workers closely. A power of two, so that a
#: range is a whole subtree and its worker hashes the inner nodes too (see
#: `verify_range`).
RANGE = 1 << 16
#: Worker processes at most, by default.
MAX_WORKERS = 8
#: Ranges handed out per worker ahead of the parent: the workers never wait for it,
#: and memory stays flat however long the log.
AHEAD = 2
#: Rows per fetch of the bulk verify read, in a worker or in-process: large, to keep
#: per-call overhead out of the hash loop (about 8 MB of leaves).
BULK = 10_000


class VerifyCancelled(AuditError):
    """The verify was called off (Ctrl-C) before it finished."""


def connect(path: str) -> sqlite3.Connection:
    """A read-only connection to the SQLite file at `path` for the bulk verify read:
    leaves read as UTF-8 bytes without a str round trip, no implicit transactions."""
    conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, isolation_level=None)
    conn.text_factory = bytes
    # Pages straight from the file's mapping, not a read() call each (the log's pages
    # are read once, in order); SQLite caps it at its compile-time limit.
    conn.execute("PRAGMA mmap_size = 4294967296")
    return conn


def entries_sql(deep: bool) -> str:
    """The rows as `check_batch` takes them: with the lint, the leaf itself; without,
    the leaf with the leaf-hash prefix in front, concatenated by SQLite (one bytes
    object a row to hash, no copy in Python)."""
    leaf = "leaf" if deep else "X'00' || leaf"
    # A NULL stored hash (the column changed outside the gateway) reads as one that
    # does not match: None is what a bundle, which stores none, gives.
    return f"SELECT idx, {leaf}, COALESCE(leaf_hash, X'') FROM audit_entries"


def keyed_by_index(conn: sqlite3.Connection) -> bool:
    """Whether `idx` is the table's rowid, as the gateway's ``idx INTEGER PRIMARY KEY``
    makes it: then every index is a distinct integer, and an ordered read strictly
    increases, which the quick checks take for granted (`check_batch`, `_hashed_whole`).
    A table made again outside the gateway may lack it. ``INTEGER PRIMARY KEY DESC``
    and ``WITHOUT ROWID`` tables look the same in ``table_info`` but keep the key in an
    index of its own (origin ``pk``), and admit other values."""
    columns = conn.execute("PRAGMA table_info(audit_entries)").fetchall()
    keys = [(bytes(name), bytes(kind).upper()) for _, name, kind, _, _, pk in columns if pk]
    indexes = conn.execute("PRAGMA index_list(audit_entries)").fetchall()
    return keys == [(b"idx", b"INTEGER")] and not any(bytes(row[3]) == b"pk" for row in indexes)


def worker_count(workers: int | None = None) -> int:
    """`workers`, or by default one per CPU this process may run on, at most 8."""
    if workers is not None:
        return max(1, workers)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_WORKERS)


class RangeWorkers:
    """Worker processes checking the entries [0, `end`) of the SQLite file at `path`,
    `range_size` entries a task. They start, and take their first ranges, as soon as
    this is made, so that they read and hash while the parent does its own serial work
    (reading and signature-checking the checkpoints, a tenth of a second at a million
    entries); `feed` then hands their results to the verifier. `close` it on every
    way out."""

    def __init__(self, path: str, end: int, *, deep: bool, workers: int, range_size: int = RANGE) -> None:
        self.deep = deep
        self._path = path
        self._ranges = ((first, min(first + range_size, end)) for first in range(0, end, range_size))
        self._outstanding: deque[tuple[int, int, Future[tuple[bytes, Problem | None, list[bytes]]]]] = deque()
        self._pool = ProcessPoolExecutor(workers, mp_context=_SpawnContext(), initializer=_worker_started)
        try:
            self._hand_out(workers * AHEAD)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # On any way out (a problem found, Ctrl-C, a dead worker): no new ranges, and
        # the workers end once the ranges they are on are done.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _hand_out(self, count: int) -> None:
        for first, last in itertools.islice(self._ranges, count):
            future = self._pool.submit(verify_range, self._path, first, last, self.deep)
            self._outstanding.append((first, last, future))

    def feed(self, verifier: LogVerifier, stop: threading.Event | None = None) -> None:
        """Feed `verifier` (made with the same `deep`) every range in order. Raises
        VerificationFailed at the first problem, as feeding the rows in-process would;
        VerifyCancelled once `stop` is set; AuditError if a worker process dies."""
        if verifier.deep != self.deep:
            raise ValueError("the verifier and the workers must agree on deep")
        outstanding = self._outstanding
        while outstanding:
            first, last, future = outstanding.popleft()
            try:
                digests, problem, upper = future.result()
            except BrokenProcessPool as exc:
                raise AuditError(f"audit verify: a worker process ended unexpectedly ({exc})") from None
            if stop is not None and stop.is_set():
                raise VerifyCancelled("audit verify cancelled")
            self._hand_out(1)  # before the tree work here, so the workers keep busy
            verifier.feed_digests(first, digests, problem, upper)
            if verifier.size < last:
                # The log ends before the range does (rows removed since the parent's
                # snapshot): what is missing is for `finish` to name.
                return


def verify_range(path: str, first: int, end: int, deep: bool) -> tuple[bytes, Problem | None, list[bytes]]:
    """In a worker: the entries [first, end), the quick way without the lint
    (`_hashed_whole`), else (the lint, or anything wrong) through `check_batch`, which
    names the first problem. Returns their leaf hashes, concatenated, up to the first
    problem, and that problem or None. When the range's last rows are missing, the
    first row after it shows what took their place, as the next row of an in-process
    read would. With no problem, and a range that starts on a multiple of the largest
    power of two within it (ranges of `RANGE` do), also the range's inner tree levels
    (`merkle.levels_of`, each concatenated): the parent then stores them instead of
    hashing them, and the tree work, half the hashing, is spread over the workers too."""
    conn = connect(path)
    try:
        whole = None if deep else _hashed_whole(conn, first, end)
        if whole is not None:
            return b"".join(whole), None, _upper_levels(first, whole)
        # The lint, or something is wrong: row by row, naming the entry.
        select = entries_sql(deep)
        cursor = conn.execute(f"{select} WHERE idx >= ? AND idx < ? ORDER BY idx", (first, end))
        parts: list[bytes] = []
        expected = first
        problem: Problem | None = None
        while problem is None and (rows := cursor.fetchmany(BULK)):
            digests, problem = check_batch(rows, expected, deep=deep, prefixed=not deep)
            parts += digests
            expected += len(digests)
        cursor.close()
        if problem is None and expected < end:
            after = conn.execute(f"{select} WHERE idx >= ? ORDER BY idx LIMIT 1", (end,)).fetchall()
            problem = check_batch(after, expected, deep=deep, prefixed=not deep)[1]
        return b"".join(parts), problem, [] if problem else _upper_levels(first, parts)
    finally:
        conn.close()


def _hashed_whole(conn: sqlite3.Connection, first: int, end: int) -> list[bytes] | None:
    """Without the lint, the quick way: the leaf hashes of [first, end) if every entry
    is there and matches its stored hash, else None (`verify_range` then reads row by
    row and names what is wrong). The index column is not read (a sixth of the read):
    in a table `keyed_by_index` the indices are distinct integers, so `end - first`
    rows between them are every index of the range, in order."""
    cursor = conn.execute(
        "SELECT X'00' || leaf, COALESCE(leaf_hash, X'') FROM audit_entries"
        " WHERE idx >= ? AND idx < ? ORDER BY idx",
        (first, end),
    )
    sha = hashlib.sha256
    parts: list[bytes] = []
    try:
        while rows := cursor.fetchmany(BULK):
            digests = [sha(leaf).digest() for leaf, _ in rows]
            if [stored for _, stored in rows] != digests:
                return None
            parts += digests
    except TypeError:  # a leaf that is neither text nor a blob (NULL)
        return None
    finally:
        cursor.close()
    return parts if len(parts) == end - first else None


def _upper_levels(first: int, parts: list[bytes]) -> list[bytes]:
    """The inner levels of the range from `first` whose leaf hashes are `parts`, each
    concatenated, if it starts on a multiple of the largest power of two within it;
    else none (the parent hashes them)."""
    if len(parts) > 1 and first % (1 << (len(parts).bit_length() - 1)) == 0:
        return [b"".join(level) for level in levels_of(parts)[1:]]
    return []


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    """A spawned worker that does not import the parent's main module.

    A spawned process normally imports it (as ``__mp_main__``) so that functions
    defined there can be sent to it. A worker here runs only this module, and the main
    module may be heavy (the `gateway` console script imports the whole CLI, half a
    second a worker) or a script without an ``if __name__ == "__main__"`` guard, which
    would run again in every worker. So the main module is out of sight while the
    process starts (`get_preparation_data` reads ``sys.modules["__main__"]`` then).
    """

    def start(self) -> None:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            super().start()
        finally:
            sys.modules["__main__"] = main


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = _WorkerProcess


def _worker_started() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and ends the
    # workers (`pool.shutdown`). Should the parent be killed outright, they end too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: BaseProcess) -> None:
    parent.join()  # returns once the parent process is gone
    os._exit(1)
