"""SQLite's write-ahead log off the request path: copying it back, and syncing it.

A commit appends its pages to the WAL without a sync (``synchronous=NORMAL``). Two
things happen to them afterwards, in threads:

- the `Checkpointer` copies the WAL back into the database file within
  `Checkpointer.interval` of a commit, syncing it on the way (or by itself, where a
  reader keeps the pages from being copied), so a power cut loses tens of milliseconds
  of commits at most, and the WAL starts over and stays small;
- `WalSyncs` syncs it on demand, before anything leaves the gateway on the strength of
  a commit (a package to a partner, a checkpoint to a witness).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from pathlib import Path

from gateway.errors import StorageError

log = logging.getLogger(__name__)


def wal_of(file: Path) -> Path:
    return Path(f"{file}-wal")


class WalSyncs:
    """Syncs of the WAL file at `path`, one at a time, shared: a caller waits for a sync
    that began after it asked (one under way may have begun before its commit), and
    every caller that asks while one runs shares the next. However many lanes finish
    a claim together, one `fdatasync` runs and at most one more waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs = 0  # syncs run, for tests
        self._next: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def sync(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if self._runner is None:
                self._runner = asyncio.ensure_future(self._run())
        # Shielded: a caller that stops waiting leaves the sync to the others.
        await asyncio.shield(self._next)

    async def _run(self) -> None:
        round_: asyncio.Future[None] | None = None
        try:
            while (round_ := self._next) is not None:
                self._next = None
                try:
                    await asyncio.to_thread(sync_file, self.path)
                except OSError as exc:
                    round_.set_exception(
                        StorageError(f"database error: cannot write {self.path} to disk: {exc.strerror}")
                    )
                    round_.exception()  # retrieved: each waiter gets it, if any is left
                else:
                    round_.set_result(None)
                self.runs += 1
        finally:
            self._runner = None
            # Ended by a cancellation (the loop closing): no caller is left waiting forever.
            for left in (round_, self._next):
                if left is not None and not left.done():
                    left.cancel()
            self._next = None


def sync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL: the last connection checkpointed it whole (synced) and removed it
    try:
        # Its data, and its size where it grew: what SQLite's own sync of the WAL does.
        getattr(os, "fdatasync", os.fsync)(fd)
    finally:
        os.close(fd)


class Checkpointer:
    """Copies the WAL back into the database file, in a thread with its own connection.

    `committed()`, called after every COMMIT, only sets an event. The thread wakes, runs
    ``PRAGMA wal_checkpoint(PASSIVE)``, which neither waits for nor blocks the writer
    (it syncs the WAL, copies what no reader still needs into the database file, and
    syncs that file), then rests `interval` seconds so that one checkpoint (two fsyncs)
    covers the commits of that time. A checkpoint that could not copy everything (a
    reader of another process, a long report or ``gateway audit verify``, still needs
    the pages) may have copied, and so synced, nothing: the thread then syncs the WAL
    itself, so that the commits are on the disk tens of milliseconds later all the same.

    A checkpoint that fails loses nothing: the pages stay in the WAL, and the next
    wake-up tries again. Once the WAL has been copied back whole, the next writer starts
    it over from the beginning, so with any pause between writes the file stays small;
    under writes without a pause it grows until the connection's ``wal_autocheckpoint``,
    where the committing connection checkpoints (little is left to copy by then) and
    starts over.

    (Copying less often, with the WAL synced on its own at every round, was measured:
    3-4% less CPU a placement, 2-7% slower bulk writes, whose WAL then reached the
    committing connection's checkpoint with more left to copy: see docs/benchmarks.md.)
    """

    def __init__(self, file: Path, interval: float = 0.05) -> None:
        self.file = file
        self.interval = interval
        self.runs = 0  # checkpoints run, for tests and benchmarks
        self._dirty = False  # committed since the last round began
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._dirty = True
        self._wake.set()

    def close(self) -> None:
        """Stop the thread, letting a round in progress finish; what was committed since
        the last round gets one more (another process may keep the database open, so the
        last connection's own checkpoint may not come)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # the committing connection's own checkpoints take over
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    break
                self._wake.clear()
                self._round(conn)
                if self._stop.wait(self.interval):
                    break
            if self._dirty:
                self._round(conn)
        finally:
            conn.close()

    def _round(self, conn: sqlite3.Connection) -> None:
        """The commits so far made durable: by a checkpoint, which syncs the WAL before it
        copies; where it could not copy everything (a reader needs the pages, another
        connection was checkpointing), it may have synced nothing, so by a sync."""
        self._dirty = False
        if self._copy(conn):
            return
        try:
            sync_file(wal_of(self.file))
        except OSError as exc:
            log.warning("cannot write %s to disk: %s", wal_of(self.file), exc.strerror)

    def _copy(self, conn: sqlite3.Connection) -> bool:
        """Checkpoint; whether it copied back every frame of the WAL."""
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return False
        self.runs += 1
        return busy == 0 and copied >= frames
