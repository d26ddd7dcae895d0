"""Verifying a large SQLite audit log on every core.

The entries are split into contiguous index ranges, each checked by
`gateway.audit.ranges.check_range` (the per-entry work: reading the rows, the lint,
hashing the leaves, comparing the stored hashes), either in this process or in a
worker process. `RangeWorkers` starts one worker process fewer than there are cores
to use, keeps each a few ranges ahead, and checks ranges here too whenever the next
range due is not back yet: every core works, this one included. Each range's leaf
hashes (and its inner tree levels) go to the `LogVerifier` in index order
(`feed_digests`), which builds the tree and checks the checkpoints; a problem found in
a range is reported after the checkpoints before it, as in-process. The workers start
first, and this process reads and checks the signed checkpoints while they start.

A worker is a plain child process running `ranges.serve`: this process writes it
"FIRST END" lines and reads its results from a pipe, in its own thread, between ranges
of its own. No helper thread passes messages: one would wait for the interpreter lock,
held by the hashing here, at every hand-over, and the workers with it. The pipe is
made large enough to hold a result or two (where the system allows), so a worker does
not wait for this process to read one either.

Snapshot: the main process holds one read transaction (checkpoints, the last index,
the writer's tree state) and hands out the ranges of [0, last index + 1). Entries are
append-only, so a worker, reading a later snapshot, sees the same rows below that;
entries appended meanwhile are not read, as the single-process read would not see them.
"""

from __future__ import annotations

import bisect
import json
import os
import selectors
import sqlite3
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.audit.errors import AuditError
from gateway.audit.ranges import RangeResult, check_range

if TYPE_CHECKING:
    from gateway.audit.verify import LogVerifier

#: Logs with fewer entries are verified in-process: starting workers would cost more.
MIN_ENTRIES = 100_000
#: Entries per range: small, so that at the end no process waits long for the last
#: range of another, yet a whole range's result (64 bytes an entry: leaf hashes and
#: inner levels) fits twice in a worker's pipe of 1 MiB. A power of two, so that a
#: range is a whole subtree and its inner nodes are hashed with it (see `check_range`).
RANGE = 1 << 13
#: Processes at most, by default.
MAX_WORKERS = 8
#: Ranges handed to each worker ahead: it never waits for this process to hand it the
#: next one, and memory stays flat however long the log.
AHEAD = 3
#: The pipe a worker writes its results to, where the system lets its size be set.
PIPE_BYTES = 1 << 20
#: What a worker process runs: the main process's module search path first (as
#: multiprocessing's spawn does), then `ranges.serve`.
_BOOT = (
    "import json, sys; setup = json.loads(sys.stdin.readline()); sys.path[:0] = setup['sys_path'];"
    " from gateway.audit.ranges import serve; serve(setup['path'], setup['deep'])"
)


class VerifyCancelled(AuditError):
    """The verify was called off (Ctrl-C) before it finished."""


def keyed_by_index(conn: sqlite3.Connection) -> bool:
    """Whether `idx` is the table's rowid, as the gateway's ``idx INTEGER PRIMARY KEY``
    makes it: then every index is a distinct integer, and an ordered read strictly
    increases, which the quick checks take for granted (`check_batch`, `check_range`).
    A table made again outside the gateway may lack it. ``INTEGER PRIMARY KEY DESC``
    and ``WITHOUT ROWID`` tables look the same in ``table_info`` but keep the key in an
    index of its own (origin ``pk``), and admit other values."""
    columns = conn.execute("PRAGMA table_info(audit_entries)").fetchall()
    keys = [(bytes(name), bytes(kind).upper()) for _, name, kind, _, _, pk in columns if pk]
    indexes = conn.execute("PRAGMA index_list(audit_entries)").fetchall()
    return keys == [(b"idx", b"INTEGER")] and not any(bytes(row[3]) == b"pk" for row in indexes)


def worker_count(workers: int | None = None) -> int:
    """`workers`, or by default one per CPU this process may run on, at most 8: how many
    processes check ranges, this one included."""
    if workers is not None:
        return max(1, workers)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_WORKERS)


class RangeWorkers:
    """The entries [0, `end`) of the SQLite file at `path`, `range_size` entries a
    range, checked by `workers` processes: this one and `workers` - 1 worker processes,
    which start, and take their first ranges, as soon as this is made. `feed` then
    hands every range's result to the verifier in order. `close` it on every way out."""

    def __init__(self, path: str, end: int, *, deep: bool, workers: int, range_size: int = RANGE) -> None:
        self.deep = deep
        self._end = end
        self._size = range_size
        self._sizes: list[int] | None = None
        """Where the verifier reads roots, once `feed` has it (`keep_from`)."""
        self._unassigned = 0  # the first entry of the ranges no process has yet
        self._results: dict[int, RangeResult] = {}
        self._workers: list[_Worker] = []
        self._answers = selectors.DefaultSelector()
        try:
            for _ in range(max(workers - 1, 1)):
                worker = _Worker(path, deep)
                self._workers.append(worker)
                self._answers.register(worker.fd, selectors.EVENT_READ, worker)
            self._top_up()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the workers (at once: a range under way is of no more use) and reap them."""
        self._answers.close()
        for worker in self._workers:
            worker.stop()

    def feed(
        self, verifier: LogVerifier, conn: sqlite3.Connection, stop: threading.Event | None = None
    ) -> None:
        """Feed `verifier` (made with the same `deep`) every range in order, checking
        ranges here too, on `conn` (a connection to the same file), whenever the next
        one due is not back yet. Raises VerificationFailed at the first problem, as
        feeding the rows in-process would; VerifyCancelled once `stop` is set;
        AuditError if a worker process dies."""
        if verifier.deep != self.deep:
            raise ValueError("the verifier and the workers must agree on deep")
        self._sizes = verifier.root_sizes()
        for first in range(0, self._end, self._size):
            last = min(first + self._size, self._end)
            result = self._result(first, conn)
            if stop is not None and stop.is_set():
                raise VerifyCancelled("audit verify cancelled")
            verifier.feed_digests(first, *result)
            if verifier.size < last:
                # The log ends before the range does (rows removed since the main
                # process's snapshot): what is missing is for `finish` to name.
                return

    def _result(self, first: int, conn: sqlite3.Connection) -> RangeResult:
        """The result of the range from `first`: back from a worker, or checked here
        (that range, if no worker has it, or the next one no worker has, while it is
        under way)."""
        results = self._results
        while first not in results:
            self._collect(wait=False)
            if first in results:
                break
            if self._left():
                start, end = self._take()
                results[start] = check_range(conn, start, end, self.deep, self._keep(start, end))
            else:
                self._collect(wait=True)
        return results.pop(first)

    def _collect(self, *, wait: bool) -> None:
        """Take in the results the workers have written (waiting for one if `wait`), and
        hand them new ranges."""
        if any(worker.pending for worker in self._workers):
            # A worker with nothing to do writes nothing: it is ready only once it ended.
            for key, _ in self._answers.select(None if wait else 0):
                self._results.update(key.data.read())
        self._top_up()

    def _top_up(self) -> None:
        # Near the end, one range ahead each: the rest is left for this process, so that
        # it does not wait at the end for ranges queued behind a worker's current one.
        ahead = AHEAD if self._left() >= AHEAD * len(self._workers) else 1
        for worker in self._workers:
            while len(worker.pending) < ahead and self._left():
                first, end = self._take()
                worker.assign(first, end, self._keep(first, end))

    def _keep(self, first: int, end: int) -> int:
        """`keep_from` the verifier's sizes; every level while they are not known yet
        (the ranges handed out as the workers start)."""
        return 0 if self._sizes is None else keep_from(self._sizes, first, end)

    def _left(self) -> int:
        """How many ranges no process has yet."""
        return -(-(self._end - self._unassigned) // self._size)

    def _take(self) -> tuple[int, int]:
        first = self._unassigned
        self._unassigned = min(first + self._size, self._end)
        return first, self._unassigned


def keep_from(sizes: Sequence[int], first: int, end: int) -> int:
    """The lowest height of the range [first, end)'s levels the main process needs, if
    the range is a whole subtree (`check_range` returns its levels): the verifier takes
    the subtree whole and reads the root at each of `sizes` (sorted) within it from the
    subtrees of that prefix, which lie no lower than its lowest set bit. The top alone
    if no size falls within; everything (0) for a range that is no whole subtree."""
    count = end - first
    if count < 2 or count & (count - 1) or first % count:
        return 0
    top = count.bit_length() - 1
    within = sizes[bisect.bisect_right(sizes, first) : bisect.bisect_left(sizes, end)]
    return min([top, *(((size - first) & -(size - first)).bit_length() - 1 for size in within)])


class _Worker:
    """One worker process and its two pipes (see the module docstring)."""

    def __init__(self, path: str, deep: bool) -> None:
        self.pending: deque[int] = deque()  # the ranges handed to it, by first index
        self._buffer = bytearray()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._tasks = self._proc.stdin
        self.fd = self._proc.stdout.fileno()
        try:
            _enlarge(self.fd)
            self._send({"sys_path": [str(entry) for entry in sys.path], "path": path, "deep": deep})
        except BaseException:
            self.stop()
            raise

    def assign(self, first: int, end: int, keep: int) -> None:
        self._send(f"{first} {end} {keep}")
        self.pending.append(first)

    def _send(self, message: object) -> None:
        line = message if isinstance(message, str) else json.dumps(message)
        try:
            self._tasks.write(line.encode() + b"\n")
        except BrokenPipeError:
            raise self._ended() from None

    def read(self) -> list[tuple[int, RangeResult]]:
        """The results that arrived whole, reading what the pipe holds (once: it holds
        at least a byte, or the process ended)."""
        data = os.read(self.fd, PIPE_BYTES + (1 << 16))
        if not data:
            raise self._ended()
        buffer = self._buffer
        buffer += data
        done: list[tuple[int, RangeResult]] = []
        while (newline := buffer.find(b"\n")) >= 0:
            first, problem, sizes = json.loads(buffer[:newline])
            if len(buffer) - newline - 1 < sum(sizes):
                break  # the rest is still on its way
            parts, at = [], newline + 1
            for size in sizes:
                parts.append(bytes(buffer[at : at + size]))
                at += size
            del buffer[:at]
            if self.pending.popleft() != first:
                raise AuditError(f"audit verify: a worker answered for entries from {first} out of turn")
            done.append((first, (parts[0], None if problem is None else tuple(problem), parts[1:])))
        return done

    def _ended(self) -> AuditError:
        code = self._proc.wait()
        return AuditError(f"audit verify: a worker process ended unexpectedly (exit code {code})")

    def stop(self) -> None:
        """End the process at once: it only reads, and whatever it has not answered is
        of no more use. Waiting for it to close its connection and its interpreter
        after its last range cost ~30 ms at the end of every verify."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._tasks.close()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _enlarge(fd: int) -> None:
    """Make the pipe of `fd` hold PIPE_BYTES, where the system lets it (Linux)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # elsewhere, or above the system's limit: a worker may then wait to write
