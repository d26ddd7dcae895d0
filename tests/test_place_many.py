"""Placing many cases at once: `gateway place DIR` and `placement.place_many`, a batch
per transaction, refusals skipped and named, nothing half-placed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.core import Gateway, open_database
from gateway.errors import PolicyViolation, StorageError
from gateway.onboarding import registry
from gateway.placement import recall
from gateway.placement import service as placement
from schemas.case import Case
from tests.helpers import fail_audit_inserts, invoke, sample_case, workspace_sql

BASE = json.loads(sample_case().read_text())


def case_data(n: int, *, time_barred: bool = False) -> dict:
    data = json.loads(json.dumps(BASE))
    data["case_id"] = f"C-2026-{n:04d}"
    data["debtor"]["id_number"] = f"1101011990030{n:05d}"
    if time_barred:
        data["loan"]["last_due_date"] = "2021-01-05"
        data["loan"]["last_acknowledged"] = None
        data["loan"]["last_payment_date"] = None  # a payment restarts the period too
    return data


def write_cases(folder: Path, count: int, *, time_barred: tuple[int, ...] = ()) -> list[str]:
    folder.mkdir()
    for n in range(count):
        (folder / f"case-{n:03d}.json").write_text(
            json.dumps(case_data(n, time_barred=n in time_barred), ensure_ascii=False)
        )
    return [f"C-2026-{n:04d}" for n in range(count)]


def place(ws: Path, *args: str | Path, partner: str = "acme-collect", purpose: str = "collection"):
    return invoke("-c", ws, "place", *args, "--partner", partner, "--purpose", purpose)


def test_a_directory_of_cases_is_placed_batch_by_batch(onboarded: Path, tmp_path: Path) -> None:
    ids = write_cases(tmp_path / "cases", 7)
    result = place(onboarded, tmp_path / "cases", "--batch", "3", "--quiet")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [case_id for case_id, _ in lines] == ids
    assert "placed 7 of 7 cases with acme-collect" in result.stderr
    with workspace_sql(onboarded) as sql:
        packages = {r["id"]: r["case_id"] for r in sql("SELECT id, case_id FROM packages")}
        disclosures = sql("SELECT leaf FROM audit_entries WHERE kind = 'disclosure' ORDER BY idx")
    assert packages == {package_id: case_id for case_id, package_id in lines}
    assert [json.loads(r["leaf"])["package_id"] for r in disclosures] == [p for _, p in lines]
    verified = invoke("-c", onboarded, "audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_a_refused_case_is_named_and_the_others_are_placed(onboarded: Path, tmp_path: Path) -> None:
    ids = write_cases(tmp_path / "cases", 5, time_barred=(1, 3))
    result = place(
        onboarded, tmp_path / "cases", "--batch", "2", partner="sz-arbitration", purpose="arbitration"
    )
    assert result.exit_code == 1
    placed = [line.split()[0] for line in result.stdout.splitlines()]
    assert placed == [ids[0], ids[2], ids[4]]
    assert f"{ids[1]}: refused by rule limitation-period" in result.stderr
    assert f"{ids[3]}: refused by rule limitation-period" in result.stderr
    assert "placed 3 of 5 cases with sz-arbitration; 2 refused" in result.stderr
    with workspace_sql(onboarded) as sql:
        assert sorted(r["case_id"] for r in sql("SELECT case_id FROM packages")) == placed
        assert len(sql("SELECT idx FROM audit_entries WHERE kind = 'disclosure'")) == 3


def test_one_invalid_file_places_nothing(onboarded: Path, tmp_path: Path) -> None:
    write_cases(tmp_path / "cases", 4)
    bad = tmp_path / "cases" / "case-002.json"
    bad.write_text('{"case_id": "x"}')
    result = place(onboarded, tmp_path / "cases")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "1 of 4 case files are invalid, nothing placed" in result.output
    assert str(bad) in result.output and "debtor: Field required" in result.output
    with workspace_sql(onboarded) as sql:
        assert sql("SELECT id FROM packages") == []


def test_files_and_directories_mix_and_a_file_named_twice_counts_once(
    onboarded: Path, tmp_path: Path
) -> None:
    ids = write_cases(tmp_path / "cases", 2)
    result = place(onboarded, tmp_path / "cases", tmp_path / "cases" / "case-000.json", sample_case())
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == [*ids, BASE["case_id"]]
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = place(onboarded, empty, sample_case())
    assert nothing.exit_code == 1 and f"{empty}: no *.json case files" in nothing.output


def test_a_case_in_two_files_places_nothing(onboarded: Path, tmp_path: Path) -> None:
    write_cases(tmp_path / "cases", 3)
    copy = tmp_path / "cases" / "case-copy.json"
    copy.write_text((tmp_path / "cases" / "case-001.json").read_text())
    result = place(onboarded, tmp_path / "cases")
    assert result.exit_code == 1
    assert f"{copy}: case C-2026-0001 is in {tmp_path / 'cases' / 'case-001.json'} too" in result.output
    with workspace_sql(onboarded) as sql:
        assert sql("SELECT id FROM packages") == []


def test_a_directory_prints_case_ids_even_with_one_case_and_batches_are_capped(
    onboarded: Path, tmp_path: Path
) -> None:
    (case_id,) = write_cases(tmp_path / "cases", 1)
    result = place(onboarded, tmp_path / "cases")
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[0] == case_id
    too_big = place(onboarded, tmp_path / "cases", "--batch", str(placement.MAX_BATCH + 1))
    assert too_big.exit_code == 2 and "--batch" in too_big.output


def test_a_run_stopped_by_an_error_names_the_first_file_not_placed(onboarded: Path, tmp_path: Path) -> None:
    ids = write_cases(tmp_path / "cases", 5)

    async def disk_full_after_two_packages() -> None:
        db = await open_database(load_settings(onboarded).database_url)
        try:
            async with db.transaction() as tx:
                await fail_audit_inserts(tx, "packages", after=2)
        finally:
            await db.close()

    asyncio.run(disk_full_after_two_packages())
    result = place(onboarded, tmp_path / "cases", "--batch", "2")
    assert result.exit_code == 1
    assert [line.split()[0] for line in result.stdout.splitlines()] == ids[:2]
    assert "stopped after 2 of 5 cases (2 placed, 0 refused)" in result.stderr
    assert f"not placed: {tmp_path / 'cases' / 'case-002.json'} and the files after it" in result.stderr


def test_an_interrupted_run_prints_every_case_it_placed_and_stops(onboarded: Path, tmp_path: Path) -> None:
    ids = write_cases(tmp_path / "cases", 500)
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "-c", str(onboarded), "place", str(tmp_path / "cases"),
         "--partner", "acme-collect", "--purpose", "collection", "--batch", "100", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as run:
        assert run.stdout is not None and run.stderr is not None
        first = run.stdout.readline()  # the first batch is placed
        run.send_signal(signal.SIGINT)  # Ctrl-C while the next one is written, or before it
        # Read on through the same buffer (communicate() would skip what readline
        # buffered); with --quiet, stderr holds a line or two and cannot fill its pipe.
        out, err = run.stdout.read(), run.stderr.read()
        run.wait(timeout=120)
    printed = [line.split()[0] for line in [first, *out.splitlines()] if line.strip()]
    with workspace_sql(onboarded) as sql:
        stored = sorted(r["case_id"] for r in sql("SELECT case_id FROM packages"))
    # Whatever was placed was said, so a second run can start where this one stopped.
    assert sorted(printed) == stored
    assert printed == ids[: len(printed)] and 100 <= len(printed) < len(ids)
    assert run.returncode != 0
    assert f"interrupted after {len(printed)} of 500 cases ({len(printed)} placed" in err
    assert f"not placed: {tmp_path / 'cases' / f'case-{len(printed):03d}.json'}" in err


async def test_a_partner_suspended_during_a_run_receives_nothing_more(gw: Gateway) -> None:
    cases = [Case.model_validate(case_data(n)) for n in range(6)]
    done = []
    with pytest.raises(PolicyViolation, match="suspended"):
        async for case, outcome in placement.place_many(
            gw, cases, "acme-collect", "collection", actor="test", batch=2
        ):
            done.append((case.case_id, outcome))
            if len(done) == 2:
                await registry.set_status(gw, "acme-collect", "suspended", reason="review", actor="test")
    assert [case_id for case_id, _ in done] == [cases[0].case_id, cases[1].case_id]
    assert {p["case_id"] for p in await placement.list_packages(gw)} == {c for c, _ in done}


async def test_a_batch_that_fails_leaves_nothing_of_itself(gw: Gateway) -> None:
    cases = [Case.model_validate(case_data(n)) for n in range(4)]
    first = [o async for o in placement.place_many(gw, cases[:2], "acme-collect", "collection", actor="t")]
    async with gw.db.transaction() as tx:
        await fail_audit_inserts(tx)
    with pytest.raises(StorageError, match="disk full"):
        async for _ in placement.place_many(gw, cases[2:], "acme-collect", "collection", actor="t"):
            pass
    placed = {p["case_id"] for p in await placement.list_packages(gw)}
    assert placed == {c.case_id for c, _ in first}
    async with gw.db.transaction() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM assignments") == 2


async def test_a_batch_refuses_a_recalled_case_and_writes_every_row_of_the_others(gw: Gateway) -> None:
    """A batch writes its rows a table at a time: each placed case still gets its
    package, assignment, contact points and number tokens, and a case recalled from the
    partner (found by one query for the batch) is refused, even named twice."""
    assert case_data(0)["debtor"]["phones"] == case_data(2)["debtor"]["phones"]
    cases = [Case.model_validate(case_data(n)) for n in range(3)]
    await placement.place(gw, cases[1], "acme-collect", "collection", actor="t")
    await recall.recall(gw, cases[1].case_id, "acme-collect", "complaint review", actor="t")
    batch = [cases[0], cases[1], cases[2], cases[1], cases[0]]
    outcomes = [o async for _, o in placement.place_many(gw, batch, "acme-collect", "collection", actor="t")]
    refused = [o for o in outcomes if isinstance(o, PolicyViolation)]
    assert [o.rule for o in refused] == ["recalled", "recalled"]
    assert [isinstance(o, placement.Placement) for o in outcomes] == [True, False, True, False, True]
    placed = [o for o in outcomes if isinstance(o, placement.Placement)]
    async with gw.db.transaction() as tx:
        for p in placed:
            row = await tx.fetchone("SELECT case_id, state FROM packages WHERE id = ?", (p.package_id,))
            assert row is not None and row["state"] == "queued"
        states = await tx.fetchall("SELECT case_id, state FROM assignments ORDER BY case_id")
        points = await tx.fetchall("SELECT DISTINCT subject_token FROM contact_points")
        tokens = await tx.fetchall("SELECT DISTINCT subject_token FROM number_tokens")
        disclosures = await tx.fetchval("SELECT COUNT(*) FROM audit_entries WHERE kind = 'disclosure'")
    assert [(r["case_id"], r["state"]) for r in states] == [
        (cases[0].case_id, "placed"), (cases[1].case_id, "recalled"), (cases[2].case_id, "placed"),
    ]  # fmt: skip
    assert len(points) == 3  # three debtors, each with their numbers on file
    # The three share their phone numbers: the partner's token for each names the debtor
    # it was last sent for, the upserts running in the order of the batch.
    assert [r["subject_token"] for r in tokens] == [placement.subject_token(gw, cases[0])]
    assert disclosures == 1 + len(placed)


async def test_limitation_is_checked_per_case(gw: Gateway) -> None:
    old = Case.model_validate(case_data(1, time_barred=True))
    fresh = Case.model_validate(case_data(2))
    batches = placement.place_many(gw, [old, fresh], "sz-arbitration", "arbitration", actor="t")
    outcomes = [outcome async for _, outcome in batches]
    assert isinstance(outcomes[0], PolicyViolation) and outcomes[0].rule == "limitation-period"
    assert isinstance(outcomes[1], placement.Placement)
    async with gw.db.transaction() as tx:
        leaves = await tx.fetchall("SELECT leaf FROM audit_entries WHERE kind = 'disclosure'")
        keys = await tx.fetchall("SELECT scope FROM data_keys")
    assert [json.loads(r["leaf"])["package_id"] for r in leaves] == [outcomes[1].package_id]
    # A data key for the debtor placed, none for the one refused: nothing of theirs is stored.
    assert [r["scope"] for r in keys] == [placement.subject_token(gw, fresh)]
