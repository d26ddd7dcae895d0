"""SQLite's write-ahead log off the request path: syncing it, and copying it back.

A commit appends its pages to the WAL without a sync (``synchronous=NORMAL``). Two
things happen to them afterwards, both in threads:

- the `Checkpointer` syncs the WAL within `Checkpointer.interval` of a commit (one
  ``fdatasync`` for the commits of that time), so a power cut loses tens of
  milliseconds of commits at most; and, less often (`Checkpointer.copy_every`), copies
  the WAL back into the database file, so the WAL starts over and stays small;
- `WalSyncs` syncs it on demand, before anything leaves the gateway on the strength of
  a commit (a package to a partner, a checkpoint to a witness).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

from gateway.errors import StorageError


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
    """Syncs the WAL and copies it back into the database file, in a thread with a
    connection of its own.

    `committed()`, called after every COMMIT, only sets an event. The thread wakes and
    makes the commits since its last round durable: with an ``fdatasync`` of the WAL,
    or, once `copy_every` seconds have passed since the last copy, with ``PRAGMA
    wal_checkpoint(PASSIVE)``, which syncs the WAL, copies into the database file what
    no reader still needs (neither waiting for nor blocking the writer) and syncs that
    file. It then rests `interval` seconds, so that one sync covers the commits of that
    time. Should the commits stop, the copy follows `copy_every` after the last sync.

    Copying every `copy_every` rather than at every round writes a page that the
    commits of that time changed again and again (an index's, say) into the database
    file once, not once a round: about half the kernel's time of a placement, with
    the same tens of milliseconds a power cut may lose (see docs/benchmarks.md).

    A round that fails loses nothing: the pages stay in the WAL, and the next tries
    again. Once the WAL has been copied back whole, the next writer starts it over from
    the beginning, so with any pause between writes the file stays small; under writes
    without a pause it grows until the connection's ``wal_autocheckpoint``, where the
    committing connection checkpoints (little is left to copy by then) and starts over.
    """

    def __init__(self, file: Path, interval: float = 0.05, copy_every: float = 0.5) -> None:
        self.file = file
        self.interval = interval
        self.copy_every = copy_every
        self.runs = 0  # copies (checkpoints) run, for tests and benchmarks
        self.syncs = 0  # syncs of the WAL alone
        self._dirty = False  # committed since the last sync
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._dirty = True
        self._wake.set()

    def close(self) -> None:
        """Stop the thread, letting a round in progress finish; the commits it had not
        synced yet are synced."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # the committing connection's own checkpoints take over
        try:
            self._rounds(conn)
        finally:
            conn.close()

    def _rounds(self, conn: sqlite3.Connection) -> None:
        copied = time.monotonic()
        left = False  # synced, not yet copied back
        while not self._stop.is_set():
            woke = self._wake.wait(self.copy_every if left else None)
            self._wake.clear()
            if self._stop.is_set():
                break
            if woke and time.monotonic() - copied < self.copy_every:
                self._sync()
                left = True
            else:
                self._dirty = False  # the checkpoint syncs the WAL first
                left = not self._copy(conn)
                copied = time.monotonic()
            self._stop.wait(self.interval)
        self._sync()  # stopping: what was committed since the last round

    def _sync(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        try:
            sync_file(wal_of(self.file))
        except OSError:
            self._dirty = True  # the next round tries again
            return
        self.syncs += 1

    def _copy(self, conn: sqlite3.Connection) -> bool:
        """Checkpoint; True if the WAL was copied back whole."""
        try:
            _, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return False
        self.runs += 1
        return bool(copied >= pages)
