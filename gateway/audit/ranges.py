"""Checking one range of a SQLite audit log's entries: the per-entry work of `gateway
audit verify` (reading the rows, the lint, hashing the leaves, comparing the stored
hashes), as the main process runs it and as a worker process does
(`gateway.audit.parallel`), whose whole program `serve` is.

A worker process imports this module and little else, so it starts fast: what it
needs of the lint (pydantic, the entry schemas) is imported only when the lint runs.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from gateway.audit.entrycheck import check_batch
from gateway.audit.merkle import LEAF_PREFIX, levels_of

if TYPE_CHECKING:
    from gateway.audit.entrycheck import Problem

#: Rows per fetch of the verify read: about 1 MB of leaves, which stay in the CPU's
#: cache from the read to the hash (10,000 rows a fetch made the whole check 10% slower).
BULK = 1024

#: A range's result: its leaf hashes, concatenated, up to the first problem; that
#: problem or None; with no problem, its inner tree levels (see `check_range`).
RangeResult = tuple[bytes, "Problem | None", list[bytes]]


def connect(path: str) -> sqlite3.Connection:
    """A read-only connection to the SQLite file at `path` for the bulk verify read:
    leaves read as UTF-8 bytes without a str round trip, no implicit transactions."""
    conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, isolation_level=None)
    conn.text_factory = bytes
    # Each page read() into a small page cache, which stays in the CPU's cache: 10%
    # less CPU for a whole read than the file's pages mapped in (first touches fault
    # them in, and unmapping them at the end cost ~25 ms per 500,000 entries, as the
    # connection closed or a worker process ended).
    conn.execute("PRAGMA mmap_size = 0")
    conn.execute("PRAGMA cache_size = -256")
    return conn


#: The rows as `check_batch` takes them. A NULL stored hash (the column changed outside
#: the gateway) reads as one that does not match: None is what a bundle, which stores
#: none, gives.
ENTRIES_SQL = "SELECT idx, leaf, COALESCE(leaf_hash, X'') FROM audit_entries"


def check_range(conn: sqlite3.Connection, first: int, end: int, deep: bool, keep: int = 0) -> RangeResult:
    """The entries [first, end), the quick way without the lint (`_hashed_whole`), else
    (the lint, or anything wrong) through `check_batch`, which names the first problem.
    Returns their leaf hashes, concatenated, up to the first problem, and that problem
    or None. When the range's last rows are missing, the first row after it shows what
    took their place, as the next row of an in-process read would. With no problem,
    and a range that starts on a multiple of the largest power of two within it (ranges
    of `parallel.RANGE` do), also the range's inner tree levels (`merkle.levels_of`,
    each concatenated): the main process then stores them instead of hashing them, and
    the tree work, half the hashing, is spread over the processes too. `keep`: the
    lowest height the caller needs of such a range's levels: with no problem, the
    levels below it (the leaf hashes included) come back empty (`parallel.keep_from`:
    a worker then writes a few kilobytes a range instead of 64 bytes an entry)."""
    whole = None if deep else _hashed_whole(conn, first, end)
    if whole is not None:
        upper = _upper_levels(first, whole, keep)
        return b"" if upper and keep else b"".join(whole), None, upper
    # The lint, or something is wrong: row by row, naming the entry.
    cursor = conn.execute(f"{ENTRIES_SQL} WHERE idx >= ? AND idx < ? ORDER BY idx", (first, end))
    parts: list[bytes] = []
    expected = first
    problem: Problem | None = None
    while problem is None and (rows := cursor.fetchmany(BULK)):
        digests, problem = check_batch(rows, expected, deep=deep)
        parts += digests
        expected += len(digests)
    cursor.close()
    if problem is None and expected < end:
        after = conn.execute(f"{ENTRIES_SQL} WHERE idx >= ? ORDER BY idx LIMIT 1", (end,)).fetchall()
        problem = check_batch(after, expected, deep=deep)[1]
    return b"".join(parts), problem, [] if problem else _upper_levels(first, parts)


def _hashed_whole(conn: sqlite3.Connection, first: int, end: int) -> list[bytes] | None:
    """Without the lint, the quick way: the leaf hashes of [first, end) if every entry
    is there and matches its stored hash, else None (`check_range` then reads row by
    row and names what is wrong). The index column is not read (a sixth of the read):
    in a table `parallel.keyed_by_index` the indices are distinct integers, so
    `end - first` rows between them are every index of the range, in order."""
    # A NULL stored hash reads as None, which matches no digest.
    cursor = conn.execute(
        "SELECT leaf, leaf_hash FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx", (first, end)
    )
    parts: list[bytes] = []
    add = parts.append
    new = LEAF_PREFIX.copy  # `merkle.leaf_hashes`, inline: one loop hashes and compares
    try:
        while rows := cursor.fetchmany(BULK):
            for leaf, stored in rows:
                sha = new()
                sha.update(leaf)
                digest = sha.digest()
                if digest != stored:
                    return None
                add(digest)
    except TypeError:  # a leaf that is neither text nor a blob (NULL)
        return None
    finally:
        cursor.close()
    return parts if len(parts) == end - first else None


def _upper_levels(first: int, parts: list[bytes], keep: int = 0) -> list[bytes]:
    """The inner levels of the range from `first` whose leaf hashes are `parts`, each
    concatenated (those below height `keep` left empty), if it starts on a multiple of
    the largest power of two within it; else none (the main process hashes them)."""
    if len(parts) > 1 and first % (1 << (len(parts).bit_length() - 1)) == 0:
        levels = enumerate(levels_of(parts)[1:], 1)
        return [b"".join(level) if height >= keep else b"" for height, level in levels]
    return []


def serve(path: str, deep: bool, tasks: TextIO | None = None, results: BinaryIO | None = None) -> None:
    """A worker process's whole work: check each range "FIRST END KEEP" read from
    `tasks` (standard input), in order (KEEP: the lowest level wanted, see
    `check_range`), and write each result to `results` (standard output) as one line of
    JSON, [first, problem, [the lengths of the leaf hashes and of each level]], followed
    by those bytes. Ends when `tasks` ends: the main process closed it, or is gone."""
    # Ctrl-C reaches the whole process group: the main process handles it and ends
    # the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tasks = tasks or sys.stdin
    results = results or sys.stdout.buffer
    conn = connect(path)
    try:
        for line in tasks:
            first, end, keep = map(int, line.split())
            digests, problem, upper = check_range(conn, first, end, deep, keep)
            head = json.dumps([first, problem, [len(digests), *map(len, upper)]])
            results.write(b"".join([head.encode(), b"\n", digests, *upper]))
            results.flush()
    except BrokenPipeError:
        pass  # the main process is gone, or stopped reading: nothing is waiting for this
    finally:
        conn.close()
