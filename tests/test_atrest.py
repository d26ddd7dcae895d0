"""Encryption at rest: what is stored is ciphertext under a data key per data subject,
wrapped by a key-encryption key; rotation re-wraps keys, not rows; an older database is
upgraded in place; an instance without the key refuses instead of forking keys."""

from __future__ import annotations

import asyncio
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.core import Gateway, open_database
from gateway.errors import KeyStoreError, StorageError
from gateway.filecache import SETTLE_SECONDS
from gateway.inbound import pipeline as inbound
from gateway.lifecycle.columns import original_at
from gateway.onboarding import registry
from gateway.onboarding.custody import FileCustody
from gateway.onboarding.keys import KeyStore
from gateway.placement import service as placement
from gateway.plugin.manager import get_plugin_manager
from gateway.storage.atrest import FileKek, KeyRing
from gateway.storage.migrations import MIGRATIONS
from schemas.case import Case
from tests.callbacks import dumps, event
from tests.helpers import invoke, sample_case, stored_package, workspace_sql
from tests.lifecycle import leaks, table_text
from tests.partners import agency_profile, init_workspace

CASE = Case.model_validate_json(sample_case().read_text())
#: What the sample case's packages carry to the agency, and what its free text may echo.
PERSONAL = ["张伟", "13812341999", "01065551234", "110101199003071234"]


async def place_and_report(gw: Gateway) -> placement.Placement:
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    await inbound.ingest(
        gw,
        "acme-collect",
        dumps(event(placed.case_ref, "accepted")).encode(),
        channel="callback",
        webhook_id="msg_1",
    )
    note = event(placed.case_ref, "complaint", summary="张伟 says 13812341999 was called at night")
    await inbound.ingest(gw, "acme-collect", dumps(note).encode(), channel="callback", webhook_id="msg_2")
    return placed


def test_the_key_encryption_key_is_made_at_init_readable_by_its_owner_only(workspace: Path) -> None:
    path = workspace / "keys" / "bank" / "storage.kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().split("\n")[0].split()) == 2


async def test_stored_personal_data_is_ciphertext_and_reads_back(gw: Gateway) -> None:
    placed = await place_and_report(gw)
    assert leaks((await table_text(gw)).encode(), PERSONAL) == []
    package = await stored_package(gw, placed.package_id)
    assert package["signed"].count(".") == 2 and package["sealed"].count(".") == 4  # JWS and JWE
    shown = await placement.show(gw, placed.package_id)
    assert shown["claims"]["data"]["debtor"]["name"] == "张伟"
    async with gw.db.transaction() as tx:
        row = await tx.fetchone(
            "SELECT body, original, partner_id, webhook_id FROM events WHERE type = 'complaint'"
        )
        original = await gw.keyring.open(
            tx, original_at(row["partner_id"], row["webhook_id"]), row["original"]
        )
    assert '"<redacted> says <redacted> was called at night"' in row["body"]
    assert original is not None and "张伟 says 13812341999" in original


async def test_a_value_moved_to_another_row_does_not_open(gw: Gateway) -> None:
    first = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    second = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    async with gw.db.transaction() as tx:
        await tx.execute(
            "UPDATE package_bodies SET signed = (SELECT signed FROM package_bodies WHERE package_id = ?)"
            " WHERE package_id = ?",
            (first.package_id, second.package_id),
        )
    with pytest.raises(StorageError, match="does not decrypt"):
        await placement.show(gw, second.package_id)


def test_rotation_rewraps_the_data_keys_and_leaves_the_rows(onboarded: Path) -> None:
    placed = invoke(
        "-c", onboarded, "place", sample_case(), "--partner", "acme-collect", "--purpose", "collection"
    )
    package_id = placed.output.strip()
    with workspace_sql(onboarded) as sql:
        rows = sql("SELECT package_id, signed, sealed FROM package_bodies")
        keys = sql("SELECT id, kek_id, wrapped FROM data_keys")
    kek = onboarded / "keys" / "bank" / "storage.kek"
    old = kek.read_text().split()[0]
    rotated = invoke("-c", onboarded, "keys", "rotate-storage")
    assert rotated.exit_code == 0 and f"retired {old}" in rotated.output, rotated.output
    with workspace_sql(onboarded) as sql:
        assert sql("SELECT package_id, signed, sealed FROM package_bodies") == rows
        after = sql("SELECT id, kek_id, wrapped FROM data_keys")
    new = kek.read_text().split()[0]
    assert new != old and len(kek.read_text().strip().split("\n")) == 1
    assert [(k["id"], k["kek_id"]) for k in after] == [(k["id"], new) for k in keys]
    assert all(a["wrapped"] != b["wrapped"] for a, b in zip(after, keys, strict=True))
    shown = invoke("-c", onboarded, "package", "show", package_id)
    assert shown.exit_code == 0 and "张伟" in shown.output


async def test_an_instance_without_the_key_refuses(onboarded: Path) -> None:
    settings = load_settings(onboarded)
    async with await Gateway.open(settings) as gw:
        placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    (onboarded / "keys" / "bank" / "storage.kek").unlink()
    async with await Gateway.open(settings) as gw:
        with pytest.raises(KeyStoreError, match="storage.kek"):
            await placement.show(gw, placed.package_id)
        other = CASE.model_copy(update={"debtor": CASE.debtor.model_copy(update={"id_number": "X1"})})
        with pytest.raises(KeyStoreError, match="copy keys/bank/storage.kek"):
            await placement.place(gw, other, "acme-collect", "collection", actor="test")
    assert not (onboarded / "keys" / "bank" / "storage.kek").exists()  # no second key made


#: The version that brought encryption at rest (it creates data_keys).
_AT_REST = next(
    n for n, steps in enumerate(MIGRATIONS, start=1) if any("CREATE TABLE data_keys" in str(s) for s in steps)
)
#: What that migration added, taken away again: the database as an older gateway left it.
_BEFORE_7 = [
    # A package's body back in its row, where it was until version 16.
    *(
        f"ALTER TABLE packages ADD COLUMN {c} TEXT NOT NULL DEFAULT ''" for c in ("sealed", "signed")
    ),
    "UPDATE packages SET sealed = (SELECT sealed FROM package_bodies WHERE package_id = id),"
    " signed = (SELECT signed FROM package_bodies WHERE package_id = id)",
    # The index version 17 dropped, back.
    "CREATE INDEX events_subject ON events (subject_token, occurred_at)",
    "DROP TABLE erasure_cases",
    "DROP TABLE erasures",
    "DROP TABLE legal_holds",
    "DROP TABLE data_keys",
    "DROP INDEX packages_subject",
    *(
        f"ALTER TABLE {t} DROP COLUMN {c}"
        for t, c in (
            ("packages", "sealed_purged_at"),
            ("packages", "plaintext_purged_at"),
            ("events", "original"),
            ("events", "original_purged_at"),
            ("events", "text_purged_at"),
            ("assignments", "reference_purged_at"),
        )
    ),
    # The versions after it run again too: their tables and indexes go as well.
    *(
        f"DROP INDEX IF EXISTS {index}"
        for steps in MIGRATIONS[_AT_REST:]
        for index in re.findall(r"CREATE INDEX (\w+)", " ".join(str(step) for step in steps))
    ),
    *(
        f"DROP TABLE {table}"
        for steps in MIGRATIONS[_AT_REST:]
        for table in re.findall(r"CREATE TABLE (\w+)", " ".join(str(step) for step in steps))
    ),
    f"DELETE FROM schema_version WHERE version >= {_AT_REST}",
]


async def test_an_older_database_is_encrypted_when_first_opened(onboarded: Path) -> None:
    settings = load_settings(onboarded)
    async with await Gateway.open(settings) as gw:
        placed = await place_and_report(gw)
        clear = await stored_package(gw, placed.package_id)
        async with gw.db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT id, partner_id, webhook_id, original FROM events WHERE type = 'complaint'"
            )
            original = await gw.keyring.open(
                tx, original_at(row["partner_id"], row["webhook_id"]), row["original"]
            )
        async with gw.db.transaction() as tx:
            for statement in _BEFORE_7:
                await tx.execute(statement)
            await tx.execute(
                "UPDATE packages SET signed = ?, sealed = ? WHERE id = ?",
                (clear["signed"], clear["sealed"], clear["id"]),
            )
            await tx.execute("UPDATE events SET body = ? WHERE id = ?", (original, row["id"]))
    (onboarded / "keys" / "bank" / "storage.kek").unlink()
    async with await Gateway.open(settings) as gw:
        assert leaks((await table_text(gw)).encode(), PERSONAL) == []
        assert (await placement.show(gw, placed.package_id))["claims"]["data"]["debtor"]["name"] == "张伟"
        assert (await stored_package(gw, placed.package_id))["sealed"] == clear["sealed"]
        async with gw.db.transaction() as tx:
            again = await tx.fetchone("SELECT body, original FROM events WHERE id = ?", (row["id"],))
            assert (
                await gw.keyring.open(tx, original_at("acme-collect", "msg_2"), again["original"]) == original
            )
    assert "<redacted> says <redacted>" in again["body"]
    assert stat.S_IMODE((onboarded / "keys" / "bank" / "storage.kek").stat().st_mode) == 0o600


class KmsKek:
    """Stands in for a KMS that holds the key-encryption key (a plugin custody's): it
    keeps the key where the gateway's key store is not, and counts what it is asked."""

    def __init__(self, where: Path) -> None:
        self.calls: list[str] = []
        self._inner = FileKek(where)

    def current(self) -> str | None:
        return self._inner.current()

    def create(self) -> str:
        self.calls.append("create")
        return self._inner.create()

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        self.calls.append("wrap")
        return self._inner.wrap(data_key, aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        self.calls.append("unwrap")
        return self._inner.unwrap(kek_id, wrapped, aad)

    def add_next(self) -> str:
        return self._inner.add_next()

    def retire_others(self) -> list[str]:
        return self._inner.retire_others()


class KmsCustody(FileCustody):
    name = "kms-test"

    def __init__(self, keys: KeyStore, kms: KmsKek) -> None:
        super().__init__(keys)
        self.kms = kms

    def storage_keys(self) -> KmsKek:
        return self.kms


async def test_a_custody_that_holds_the_key_encryption_key_is_used_instead_of_the_file(
    tmp_path: Path,
) -> None:
    ws = init_workspace(tmp_path / "plain")
    profile, _ = agency_profile(ws, 18999, None)
    settings = load_settings(ws)
    kms = KmsKek(tmp_path / "kms")
    custody = KmsCustody(KeyStore(settings.keys_dir), kms)
    db = await open_database(settings.database_url, KeyRing(kms))
    async with Gateway(settings, db, get_plugin_manager(), custody=custody) as gw:
        await registry.add(gw, profile, actor="test")
        placed = await placement.place(gw, CASE, "acme-test", "collection", actor="test")
        assert (await placement.show(gw, placed.package_id))["claims"]["data"]["debtor"]["name"] == "张伟"
    assert kms.calls[:2] == ["create", "wrap"]
    assert not (ws / "keys" / "bank" / "storage.kek").exists()


def test_processes_making_the_first_key_together_end_with_one(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: FileKek(tmp_path).create(), range(16)))
    lines = (tmp_path / "storage.kek").read_text().strip().split("\n")
    assert len(lines) == 1 and set(made) == {lines[0].split()[0]}


async def test_the_first_writers_of_an_upgraded_workspace_share_one_key(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")  # keys as an older gateway made them: no storage.kek
    profile, _ = agency_profile(ws, 18999, None)
    async with await Gateway.open(load_settings(ws)) as gw:
        await registry.add(gw, profile, actor="test")
        people = [
            CASE.model_copy(
                update={"case_id": f"C-{n}", "debtor": CASE.debtor.model_copy(update={"id_number": f"N{n}"})}
            )
            for n in range(12)
        ]
        placed = await asyncio.gather(
            *(placement.place(gw, c, "acme-test", "collection", actor="test") for c in people)
        )
        for one in placed:
            assert (await placement.show(gw, one.package_id))["claims"]["data"]["debtor"]["name"] == "张伟"
    assert len((ws / "keys" / "bank" / "storage.kek").read_text().strip().split("\n")) == 1


async def test_two_instances_making_a_debtors_key_at_once_end_with_one(gw: Gateway) -> None:
    # Another instance: its own connection and key ring (the same KEK file).
    other = KeyRing(FileKek(gw.settings.keys_dir / "bank"))
    other_db = await open_database(gw.settings.database_url, other)
    try:
        async with other_db.transaction() as theirs:
            their_value = await other.seal(theirs, "subj_both", "t.x 1", "张伟")

            async def ours() -> str:
                async with gw.db.transaction() as tx:
                    return await gw.keyring.seal(tx, "subj_both", "t.x 2", "13812341999")

            # Ours starts while theirs holds its new key uncommitted: it waits for it
            # (SQLite: the write lock; PostgreSQL: the scope's unique key), then takes
            # the key they made instead of storing a second one.
            pending = asyncio.ensure_future(ours())
            await asyncio.sleep(0.3)
            assert not pending.done()
        our_value = await pending
        async with gw.db.transaction() as tx:
            assert await gw.keyring.open(tx, "t.x 1", their_value) == "张伟"
            keys = await tx.fetchall("SELECT id FROM data_keys WHERE scope = 'subj_both'")
        async with other_db.transaction() as theirs:
            assert await other.open(theirs, "t.x 2", our_value) == "13812341999"
        assert len(keys) == 1 and our_value.split(":")[1] == their_value.split(":")[1] == keys[0]["id"]
    finally:
        await other_db.close()


async def test_a_key_made_in_a_part_undone_is_made_again(gw: Gateway) -> None:
    async with gw.db.transaction() as tx:
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                await gw.keyring.prepare(tx, ["subj_undone"])
                raise RuntimeError("the placement failed")  # its rows, the new key's too, go
        value = await gw.keyring.seal(tx, "subj_undone", "t.x", "李娜")
    fresh = KeyRing(FileKek(gw.settings.keys_dir / "bank"))  # nothing remembered
    async with gw.db.transaction() as tx:
        assert await fresh.open(tx, "t.x", value) == "李娜"


def test_a_kek_rotated_by_another_instance_counts_at_the_next_use(tmp_path: Path) -> None:
    here, there = FileKek(tmp_path), FileKek(tmp_path)
    first = here.create()
    time.sleep(SETTLE_SECONDS + 0.2)  # settled: read once, then remembered
    wrapped_before = [here.wrap(b"k" * 32, b"aad") for _ in range(3)]
    assert [kid for kid, _ in wrapped_before] == [first] * 3
    rotated = there.add_next()
    kid, wrapped = here.wrap(b"k" * 32, b"aad")
    assert kid == rotated and there.unwrap(kid, wrapped, b"aad") == b"k" * 32
    assert here.unwrap(first, wrapped_before[0][1], b"aad") == b"k" * 32  # the old one still unwraps
    there.retire_others()
    with pytest.raises(KeyStoreError, match=first):
        here.unwrap(first, wrapped_before[0][1], b"aad")
