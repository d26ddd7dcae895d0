"""`verify_database` over a SQLite file with worker processes (`gateway.audit.parallel`)
says exactly what the single-process read says: the same summary for a good log, and
for a tampered one the same first bad index and the same words.

Real SQLite files and real worker processes; the threshold and range size are turned
down so that a log of a few thousand entries spans several ranges, and every problem
sits in a range that is not the first. The parallel path is SQLite's only, so these
tests use a SQLite file whichever backend the suite runs against.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import merkle, ranges, verifydb
from gateway.audit import parallel as parallel_module
from gateway.audit.checkpoint import parse_and_verify
from gateway.audit.errors import AuditError, VerificationFailed
from gateway.audit.signer import LogSigner
from gateway.audit.verify import Summary
from gateway.core import open_database
from tests.test_audit_verify_paths import ORIGIN, fill

ENTRIES = 3050  # 50 of them not signed yet: the writer's tree state is checked too
EVERY = 100
RANGE = 512  # ranges [0, 512), [512, 1024), ...: six of them, each a whole subtree
#: Ranges that are not subtrees: the workers then return leaf hashes only and the tree
#: is hashed in the parent; every test of the two paths runs with both.
RANGES = [RANGE, 500]
WORKERS = 2

Sql = Callable[..., list[tuple[object, ...]]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A SQLite log of ENTRIES entries signed every EVERY, and its verification key."""
    path = tmp_path_factory.mktemp("parallel") / "audit.db"
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.generate(), every=EVERY)

    async def build() -> None:
        db = await open_database(f"sqlite:///{path}")
        try:
            await fill(db, signer, ENTRIES, batch=EVERY)
        finally:
            await db.close()

    asyncio.run(build())
    return path, signer.vkey


@pytest.fixture
def log_file(template: tuple[Path, str], tmp_path: Path) -> Path:
    source = template[0]
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", tmp_path / f"audit.db{suffix}")
    return tmp_path / "audit.db"


@pytest.fixture
def vkey(template: tuple[Path, str]) -> str:
    return template[1]


def single(path: Path, vkey: str, deep: bool, progress: list[int] | None = None) -> Summary:
    return verifydb._verify_sqlite_file(
        str(path), verifydb.Trust(vkey), None if progress is None else progress.append, deep, workers=1
    )


def parallel(
    path: Path, vkey: str, deep: bool, progress: list[int] | None = None, range_size: int = RANGE
) -> Summary:
    return verifydb._verify_sqlite_file(
        str(path),
        verifydb.Trust(vkey),
        None if progress is None else progress.append,
        deep,
        workers=WORKERS,
        min_entries=0,
        range_size=range_size,
    )


def same(a: Summary, b: Summary) -> None:
    assert {**a.as_dict(), "seconds": 0} == {**b.as_dict(), "seconds": 0}


def children() -> list[int]:
    """The processes this one started that are still there (zombies too: not waited for)."""
    me = str(os.getpid())
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = (Path(entry.path) / "status").read_text()
            except OSError:
                continue  # ended meanwhile
            if f"\nPPid:\t{me}\n" in status:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("range_size", RANGES)
@pytest.mark.parametrize("deep", [False, True], ids=["hashes", "deep"])
def test_a_good_log_gives_the_same_summary_both_ways(
    log_file: Path, vkey: str, deep: bool, range_size: int
) -> None:
    seen: list[int] = []
    summary = parallel(log_file, vkey, deep, seen, range_size)
    same(summary, single(log_file, vkey, deep))
    assert (summary.entries, summary.checkpoints, summary.unsigned) == (ENTRIES, 30, 50)
    # Progress as each range is verified, in order.
    assert seen == sorted(seen) and len(seen) == -(-ENTRIES // range_size) and seen[-1] == ENTRIES


@pytest.fixture(scope="module")
def odd_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A log signed every 37 entries: its checkpoints fall at odd places within the
    ranges (a worker then returns every level, the leaf hashes too) as well as even ones."""
    path = tmp_path_factory.mktemp("parallel-odd") / "audit.db"
    signer = LogSigner(ORIGIN, Ed25519PrivateKey.generate(), every=37)

    async def build() -> None:
        db = await open_database(f"sqlite:///{path}")
        try:
            await fill(db, signer, ENTRIES, batch=37)
        finally:
            await db.close()

    asyncio.run(build())
    return path, signer.vkey


def test_checkpoints_anywhere_in_a_range_are_checked_both_ways(
    odd_template: tuple[Path, str], tmp_path: Path
) -> None:
    """Workers return a whole-subtree range's levels from the lowest one a root within it
    needs: the same summary as in one process, a kept checkpoint at an odd size found,
    and an entry rewritten with its stored hash (its range hashes through) caught at the
    checkpoint after it, the same way."""
    path = tmp_path / "audit.db"
    shutil.copy(odd_template[0], path)
    vkey = odd_template[1]
    with sqlite3.connect(path) as conn:
        [(note,)] = conn.execute("SELECT note FROM audit_checkpoints WHERE size = ?", (37 * 41,)).fetchall()
    kept = parse_and_verify(note, vkey)
    assert kept.size % 2 == 1 and 1024 < kept.size < 1536  # odd, inside the third range of 512
    trust = verifydb.Trust(vkey, known=kept)
    summary = verifydb._verify_sqlite_file(str(path), trust, None, False, workers=WORKERS, min_entries=0,
                                           range_size=RANGE)
    same(summary, verifydb._verify_sqlite_file(str(path), trust, None, False, workers=1))
    assert summary.checkpoints == ENTRIES // 37

    tamper(path, changed_leaf_and_hash)
    with pytest.raises(VerificationFailed) as one:
        verifydb._verify_sqlite_file(str(path), trust, None, False, workers=1)
    with pytest.raises(VerificationFailed) as many:
        verifydb._verify_sqlite_file(str(path), trust, None, False, workers=WORKERS, min_entries=0,
                                     range_size=RANGE)
    assert (many.value.index, many.value.last) == (one.value.index, one.value.last)
    assert str(many.value) == str(one.value)
    assert one.value.last == 37 * 47 - 1  # 1713 is in the checkpoint range ending at 1739


def test_a_range_returns_the_levels_from_the_lowest_a_root_within_needs() -> None:
    assert parallel_module.keep_from([], 0, 512) == 9  # nothing within: the top alone
    assert parallel_module.keep_from([512], 0, 512) == 9  # at its end: the top
    assert parallel_module.keep_from([100, 600], 512, 1024) == 3  # 88 = 0b1011000
    assert parallel_module.keep_from([100, 513, 600], 512, 1024) == 0  # an odd place
    assert parallel_module.keep_from([700], 0, 500) == 0  # no whole subtree: every level
    assert parallel_module.keep_from([700], 256, 768) == 0  # not aligned on its size


def test_a_small_log_stays_in_process(log_file: Path, vkey: str) -> None:
    """Below the threshold no worker is started; the default threshold is far above this log."""
    seen: list[int] = []
    trust = verifydb.Trust(vkey)
    summary = verifydb._verify_sqlite_file(str(log_file), trust, seen.append, False, workers=WORKERS)
    same(summary, single(log_file, vkey, False))
    # Batches read in order, not range by range.
    assert seen == [*range(ranges.BULK, ENTRIES, ranges.BULK), ENTRIES]


# -- tampering: the same verdict both ways ----------------------------------------------


def leaf(sql: Sql, idx: int) -> bytes:
    text = sql("SELECT leaf FROM audit_entries WHERE idx = ?", (idx,))[0][0]
    assert isinstance(text, str)
    return text.encode()


def changed(data: bytes) -> bytes:
    """A leaf with one field changed: still canonical and a valid entry."""
    return data.replace(b'"new_kid":"x"', b'"new_kid":"y"')


def set_leaf(sql: Sql, idx: int, data: bytes, *, rehash: bool) -> None:
    if rehash:
        sql(
            "UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = ?",
            (data.decode(), merkle.leaf_hash(data), idx),
        )
    else:
        sql("UPDATE audit_entries SET leaf = ? WHERE idx = ?", (data.decode(), idx))


def insert(sql: Sql, idx: int, data: bytes) -> None:
    sql(
        "INSERT INTO audit_entries (idx, leaf, leaf_hash, kind, at) VALUES (?, ?, ?, 'key_rotated', '')",
        (idx, data.decode(), merkle.leaf_hash(data)),
    )


def changed_leaf(sql: Sql) -> None:
    set_leaf(sql, 1713, changed(leaf(sql, 1713)), rehash=False)


def changed_leaf_and_hash(sql: Sql) -> None:
    set_leaf(sql, 1713, changed(leaf(sql, 1713)), rehash=True)


def changed_hash(sql: Sql) -> None:
    sql("UPDATE audit_entries SET leaf_hash = ? WHERE idx = 1713", (merkle.leaf_hash(b"other"),))


def deleted(sql: Sql) -> None:
    sql("DELETE FROM audit_entries WHERE idx = 1713")


def deleted_at_a_range_end(sql: Sql) -> None:
    """The last entries of a range: the next one is the first of the next range."""
    sql("DELETE FROM audit_entries WHERE idx IN (1998, 1999)")


def deleted_at_a_subtree_range_end(sql: Sql) -> None:
    """The same at the end of a range of 512, a whole subtree."""
    sql("DELETE FROM audit_entries WHERE idx IN (2046, 2047)")


def inserted_out_of_range(sql: Sql) -> None:
    insert(sql, 10**12, changed(leaf(sql, 1713)))


def inserted_at_the_end(sql: Sql) -> None:
    insert(sql, ENTRIES, changed(leaf(sql, 1713)))


def inserted_below_zero(sql: Sql) -> None:
    insert(sql, -5, changed(leaf(sql, 1713)))


def swapped(sql: Sql) -> None:
    a, b = leaf(sql, 1713), leaf(sql, 1714)
    set_leaf(sql, 1713, b, rehash=True)
    set_leaf(sql, 1714, a, rehash=True)


def non_canonical(sql: Sql) -> None:
    set_leaf(sql, 1713, leaf(sql, 1713).replace(b",", b", ", 1), rehash=True)


def two_in_one_range(sql: Sql) -> None:
    """A change that only the checkpoint at 1800 shows, then one in the same range that
    the entry itself shows: the checkpoint is the first problem, in log order."""
    set_leaf(sql, 1713, changed(leaf(sql, 1713)), rehash=True)
    set_leaf(sql, 1813, changed(leaf(sql, 1813)), rehash=False)


def two_in_two_ranges(sql: Sql) -> None:
    set_leaf(sql, 2713, changed(leaf(sql, 2713)), rehash=False)
    sql("DELETE FROM audit_entries WHERE idx = 1713")


def remade(sql: Sql, key: str = "INTEGER PRIMARY KEY", options: str = "") -> None:
    """The table made again outside the gateway, without its NOT NULLs (SQLite cannot
    alter a column), `idx` declared `key`."""
    sql(
        f"CREATE TABLE loose (idx {key}, leaf TEXT, leaf_hash BLOB, kind TEXT,"
        f" partner_id TEXT, case_token TEXT, at TEXT) {options}"
    )
    sql("INSERT INTO loose SELECT * FROM audit_entries")
    sql("DROP TABLE audit_entries")
    sql("ALTER TABLE loose RENAME TO audit_entries")


def null_leaf(sql: Sql) -> None:
    remade(sql)
    sql("UPDATE audit_entries SET leaf = NULL WHERE idx = 1713")


def null_leaf_hash(sql: Sql) -> None:
    remade(sql)
    sql("UPDATE audit_entries SET leaf_hash = NULL WHERE idx = 1713")


def repeated_without_a_key(sql: Sql) -> None:
    """A repeat in place of the next entry, in a table no longer keyed by the index:
    the count of the range is right, its order is not."""
    remade(sql, key="INTEGER")
    sql("UPDATE audit_entries SET idx = 1713 WHERE idx = 1714")


def foreign_checkpoint(sql: Sql) -> None:
    """The checkpoint at 2000, its root kept, signed by another key: found while the
    workers, already started, read the first ranges."""
    from gateway.audit.checkpoint import Checkpoint, sign_checkpoint

    note = sql("SELECT note FROM audit_checkpoints WHERE size = 2000")[0][0]
    assert isinstance(note, str)
    root = Checkpoint.from_text(note[: note.index("\n\n") + 1]).root
    forged = sign_checkpoint(Checkpoint(ORIGIN, 2000, root), ORIGIN, Ed25519PrivateKey.generate())
    sql("UPDATE audit_checkpoints SET note = ? WHERE size = 2000", (forged,))


def relabelled_under_a_descending_key(sql: Sql) -> None:
    """``INTEGER PRIMARY KEY DESC`` is no rowid: the key admits 1712.5, which a check of
    only the first and last index of a read, or of its count, would let by."""
    remade(sql, key="INTEGER PRIMARY KEY DESC")
    sql("UPDATE audit_entries SET idx = 1712.5 WHERE idx = 1713")


def relabelled_without_rowid(sql: Sql) -> None:
    remade(sql, options="WITHOUT ROWID")
    sql("UPDATE audit_entries SET idx = 1712.5 WHERE idx = 1713")


def null_index(sql: Sql) -> None:
    remade(sql, key="INTEGER")
    sql("INSERT INTO audit_entries SELECT NULL, leaf, leaf_hash, kind, partner_id, case_token, at"
        " FROM audit_entries WHERE idx = 1713")  # fmt: skip


def text_index(sql: Sql) -> None:
    remade(sql, key="INTEGER")
    sql("UPDATE audit_entries SET idx = 'x' WHERE idx = 1713")


TAMPERING: list[tuple[Callable[[Sql], None], str, str | None]] = [
    (changed_leaf, "entry 1713: the stored leaf hash does not match the leaf", None),
    (changed_leaf_and_hash, "entries 1700..1799: do not hash to the root signed at size 1800", None),
    (changed_hash, "entry 1713: the stored leaf hash does not match the leaf", None),
    (deleted, "entry 1713: missing or moved (the next entry has index 1714)", None),
    (deleted_at_a_range_end, "entry 1998: missing or moved (the next entry has index 2000)", None),
    (deleted_at_a_subtree_range_end, "entry 2046: missing or moved (the next entry has index 2048)", None),
    (inserted_out_of_range, "entry 3050: missing or moved (the next entry has index 1000000000000)", None),
    (inserted_at_the_end, "entry 3050: not in the writer's tree state", None),
    (inserted_below_zero, "entry -5: out of order or repeated (expected index 0)", None),
    (swapped, "entries 1700..1799: do not hash to the root signed at size 1800", None),
    (
        non_canonical,
        "entries 1700..1799: do not hash to the root signed at size 1800",
        "entry 1713: leaf is not in RFC 8785 canonical form",
    ),
    (two_in_one_range, "entries 1700..1799: do not hash to the root signed at size 1800", None),
    (two_in_two_ranges, "entry 1713: missing or moved (the next entry has index 1714)", None),
    (foreign_checkpoint, "checkpoint at size 2000: ", None),
    (null_leaf, "entry 1713: the leaf is missing (NULL)", None),
    (null_leaf_hash, "entry 1713: the stored leaf hash does not match the leaf", None),
    (repeated_without_a_key, "entry 1713: out of order or repeated (expected index 1714)", None),
    (relabelled_under_a_descending_key, "entry 1713: missing or moved (the next row has index 1712.5)", None),
    (relabelled_without_rowid, "entry 1713: missing or moved (the next row has index 1712.5)", None),
    (null_index, "entry 0: missing or moved (the next row has index None)", None),
    (text_index, "entry 1713: missing or moved (the next entry has index 1714)", None),
]


def _name(value: object) -> str:
    return getattr(value, "__name__", "")


def tamper(path: Path, how: Callable[[Sql], None]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        how(lambda statement, params=(): conn.execute(statement, params).fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("range_size", RANGES)
@pytest.mark.parametrize("deep", [False, True], ids=["hashes", "deep"])
@pytest.mark.parametrize(("how", "problem", "deep_problem"), TAMPERING, ids=_name)
def test_tampering_gets_the_same_verdict_both_ways(
    log_file: Path,
    vkey: str,
    deep: bool,
    how: Callable[[Sql], None],
    problem: str,
    deep_problem: str | None,
    range_size: int,
) -> None:
    tamper(log_file, how)
    with pytest.raises(VerificationFailed) as one:
        single(log_file, vkey, deep)
    with pytest.raises(VerificationFailed) as many:
        parallel(log_file, vkey, deep, range_size=range_size)
    assert not children()  # the workers are gone, whatever was found
    assert (many.value.index, many.value.last, many.value.size) == (
        one.value.index,
        one.value.last,
        one.value.size,
    )
    assert str(many.value) == str(one.value)
    assert (deep_problem if deep and deep_problem else problem) in str(many.value)


async def test_verify_database_uses_the_workers_and_can_be_kept_in_process(
    tmp_path: Path, log_file: Path, vkey: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the public call, with the threshold turned down: workers by default,
    none with ``workers=1``; both agree."""
    from gateway.audit import parallel as module

    monkeypatch.setattr(module, "MIN_ENTRIES", 0)
    monkeypatch.setattr(module, "RANGE", RANGE)
    db = await open_database(f"sqlite:///{log_file}")
    try:
        seen: list[int] = []
        many = await verifydb.verify_database(db, vkey, seen.append, deep=False, workers=WORKERS)
        one = await verifydb.verify_database(db, vkey, deep=False, workers=1)
    finally:
        await db.close()
    same(many, one)
    assert seen[-1] == ENTRIES


def test_a_worker_that_dies_ends_the_verify_with_an_error(
    log_file: Path, vkey: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process that ends before answering (killed, out of memory) ends the
    verify with an error that says so, not with a hang or a verdict; none is left."""
    from gateway.audit import parallel as module

    monkeypatch.setattr(module, "_BOOT", "import os; os._exit(3)")
    with pytest.raises(AuditError, match=r"a worker process ended unexpectedly \(exit code 3\)"):
        parallel(log_file, vkey, False)
    assert not children()
