"""A package's body (its sealed and signed forms) lives in ``package_bodies``, apart from
the row that delivery rewrites: a database of an older version keeps every package,
openable and deliverable, and claiming a package or storing its result never writes
its body."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.lifecycle.screen import package_data
from gateway.placement import service as placement
from gateway.storage import Transaction
from tests.helpers import stored_package
from tests.partners import Clock, agency_workspace, place_many, rows

LIMITS = "concurrency = 4\nrate_per_second = 1000\ntimeout = 2"
BODIES = "SELECT package_id, sealed, signed FROM package_bodies ORDER BY package_id"

#: Versions 16 and up undone: the bodies back in their packages' rows, as version 15
#: kept them, and the index version 17 dropped.
_BEFORE_16 = [
    "CREATE INDEX events_subject ON events (subject_token, occurred_at)",
    *(f"ALTER TABLE packages ADD COLUMN {c} TEXT NOT NULL DEFAULT ''" for c in ("sealed", "signed")),
    "DROP TABLE package_bodies",
    "DELETE FROM schema_version WHERE version >= 16",
]


async def as_version_15(gw: Gateway, clear: dict[str, dict[str, Any]]) -> None:
    """Make ``gw``'s database one a gateway of version 15 left: each package's ``clear``
    signed and sealed forms sealed as that version sealed them (the associated data
    written out here, not taken from the code under test), in the package's row."""
    async with gw.db.transaction() as tx:
        for statement in _BEFORE_16:
            await tx.execute(statement)
        for package_id, package in clear.items():
            signed, sealed = await gw.keyring.seal_all(
                tx,
                package["subject_token"],
                [(f"packages.signed {package_id}", package["signed"]),
                 (f"packages.sealed {package_id}", package["sealed"])],
            )  # fmt: skip
            await tx.execute(
                "UPDATE packages SET signed = ?, sealed = ? WHERE id = ?", (signed, sealed, package_id)
            )


async def test_a_database_of_version_15_keeps_its_packages_openable_and_deliverable(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits=LIMITS) as (gw, agency, _):
        [sent] = await place_many(gw, 1)
        assert (await Dispatcher(gw).run_once()).delivered == 1
        queued = await place_many(gw, 3)
        clear = {p: await stored_package(gw, p) for p in [sent, *queued]}
        await as_version_15(gw, clear)
        versions = {r["version"] for r in await rows(gw, "SELECT version FROM schema_version")}
        assert versions == set(range(1, 16))

        async with await Gateway.open(gw.settings, clock=gw.clock) as again:
            assert len(await rows(again, "SELECT version FROM schema_version WHERE version = 16")) == 1
            for package_id, before in clear.items():
                after = await stored_package(again, package_id)
                assert (after["signed"], after["sealed"]) == (before["signed"], before["sealed"])
                assert after["state"] == before["state"] and after["attempts"] == before["attempts"]
                shown = await placement.show(again, package_id)
                assert shown["claims"]["jti"] == package_id and shown["claims"]["data"]["debtor"]["name"]
            assert (await Dispatcher(again).run_once()).delivered == 3
            states = {r["id"]: r["state"] for r in await rows(again, "SELECT id, state FROM packages")}
    assert states == dict.fromkeys(clear, "delivered")
    assert dict(agency.effects) == dict.fromkeys(clear, 1), "each package reached the agency, once"
    assert all(agency.claims[p]["data"] == package_data(clear[p]["signed"]) for p in queued)


async def note_body_writes(tx: Transaction) -> None:
    """Record every write to a package's body in ``body_writes`` (a trigger)."""
    await tx.execute("CREATE TABLE body_writes (package_id TEXT NOT NULL)")
    if tx.dialect == "sqlite":
        await tx.execute(
            "CREATE TRIGGER body_written AFTER UPDATE ON package_bodies"
            " BEGIN INSERT INTO body_writes VALUES (new.package_id); END"
        )
        return
    await tx.execute(
        "CREATE FUNCTION note_body_write() RETURNS trigger LANGUAGE plpgsql AS"
        " 'BEGIN INSERT INTO body_writes VALUES (NEW.package_id); RETURN NEW; END'"
    )
    await tx.execute(
        "CREATE TRIGGER body_written AFTER UPDATE ON package_bodies"
        " FOR EACH ROW EXECUTE FUNCTION note_body_write()"
    )


async def test_claims_and_results_leave_the_bodies_alone(tmp_path: Path) -> None:
    clock = Clock()
    async with agency_workspace(tmp_path, limits=LIMITS, clock=clock) as (gw, agency, _):
        ids = await place_many(gw, 4)
        async with gw.db.transaction() as tx:
            await note_body_writes(tx)
        before = await rows(gw, BODIES)
        agency.script.extend(["500", "reject"])  # one retried, one dead, the others delivered
        first = await Dispatcher(gw).run_once()
        assert (first.delivered, first.dead) == (2, 1), first
        clock.advance(3600)
        assert (await Dispatcher(gw).run_once()).delivered == 1
        states = sorted(r["state"] for r in await rows(gw, "SELECT state FROM packages"))
        assert states == ["dead", "delivered", "delivered", "delivered"]
        attempts = sum(r["attempts"] for r in await rows(gw, "SELECT attempts FROM packages"))
        assert attempts == 5, "four claims, and the retried package's second"
        assert await rows(gw, BODIES) == before
        assert await rows(gw, "SELECT package_id FROM body_writes") == []

        async with gw.db.transaction() as tx:  # the trigger does see a write to a body
            await tx.execute("UPDATE package_bodies SET sealed = sealed WHERE package_id = ?", (ids[0],))
        assert await rows(gw, "SELECT package_id FROM body_writes") == [{"package_id": ids[0]}]
