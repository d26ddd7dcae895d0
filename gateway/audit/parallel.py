"""Verifying a large SQLite audit log on every core.

The per-entry work of `gateway audit verify` (reading the rows, the lint, hashing the
leaves, comparing the stored hashes) is split into contiguous index ranges, each
checked in a worker process by `gateway.audit.verify.check_batch`, the same code the
single-process path runs. The parent gets each range's leaf hashes back as one bytes
object, in index order, and feeds them to its `LogVerifier` (`feed_digests`), which
builds the tree and checks the checkpoints while the workers read on; a problem a
worker found is reported after the checkpoints before it, as in-process.

Snapshot: the parent holds one read transaction (checkpoints, the last index, the
writer's tree state) and hands out the ranges of [0, last index + 1). Entries are
append-only, so a worker, reading a later snapshot, sees the same rows below that;
entries appended meanwhile are not read, as the single-process read would not see them.

This module is what a worker imports (spawned, not forked: the parent has threads), so
it imports little at the top.
"""

from __future__ import annotations

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
    return f"SELECT idx, {leaf}, leaf_hash FROM audit_entries"


def worker_count(workers: int | None = None) -> int:
    """`workers`, or by default one per CPU this process may run on, at most 8."""
    if workers is not None:
        return max(1, workers)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_WORKERS)


def verify_entries(
    verifier: LogVerifier,
    path: str,
    end: int,
    *,
    workers: int,
    range_size: int = RANGE,
    stop: threading.Event | None = None,
) -> None:
    """Feed `verifier` the entries [0, `end`) of the SQLite file at `path`, checked by
    `workers` processes a range of `range_size` entries at a time. Raises
    VerificationFailed at the first problem, as feeding the rows in-process would;
    VerifyCancelled once `stop` is set; AuditError if a worker process dies."""
    deep = verifier.deep
    ranges = ((first, min(first + range_size, end)) for first in range(0, end, range_size))
    outstanding: deque[tuple[int, int, Future[tuple[bytes, Problem | None, list[bytes]]]]] = deque()
    pool = ProcessPoolExecutor(workers, mp_context=_SpawnContext(), initializer=_worker_started)
    try:

        def hand_out(count: int) -> None:
            for first, last in itertools.islice(ranges, count):
                outstanding.append((first, last, pool.submit(verify_range, path, first, last, deep)))

        hand_out(workers * AHEAD)
        while outstanding:
            first, last, future = outstanding.popleft()
            try:
                digests, problem, upper = future.result()
            except BrokenProcessPool as exc:
                raise AuditError(f"audit verify: a worker process ended unexpectedly ({exc})") from None
            if stop is not None and stop.is_set():
                raise VerifyCancelled("audit verify cancelled")
            hand_out(1)  # before the tree work here, so the workers keep busy
            verifier.feed_digests(first, digests, problem, upper)
            if verifier.size < last:
                # The log ends before the range does (rows removed since the parent's
                # snapshot): what is missing is for `finish` to name.
                return
    finally:
        # On any way out (a problem found, Ctrl-C, a dead worker): no new ranges, and
        # the workers end once the ranges they are on are done.
        pool.shutdown(wait=True, cancel_futures=True)


def verify_range(path: str, first: int, end: int, deep: bool) -> tuple[bytes, Problem | None, list[bytes]]:
    """In a worker: the entries [first, end) through `check_batch`. Returns their leaf
    hashes, concatenated, up to the first problem, and that problem or None. When the
    range's last rows are missing, the first row after it shows what took their place,
    as the next row of an in-process read would. With no problem, and a range that
    starts on a multiple of the largest power of two within it (ranges of `RANGE`
    do), also the range's inner tree levels (`merkle.levels_of`, each concatenated):
    the parent then stores them instead of hashing them, and the tree work, half the
    hashing, is spread over the workers too."""
    conn = connect(path)
    try:
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
        upper: list[bytes] = []
        if problem is None and len(parts) > 1 and first % (1 << (len(parts).bit_length() - 1)) == 0:
            upper = [b"".join(level) for level in levels_of(parts)[1:]]
        return b"".join(parts), problem, upper
    finally:
        conn.close()


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
