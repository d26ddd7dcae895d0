"""Erasure requests: the number never in the command line, every partner asked to
delete, local data gone at once, a legal hold recorded as the reason to wait and the
erasure resumed on release; the operator API does the same."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from gateway.audit import query
from gateway.cli.main import cli
from gateway.core import Gateway
from gateway.errors import NotFound
from gateway.http.app import create_app
from gateway.lifecycle import erasure
from gateway.onboarding import tokens
from gateway.placement import service as placement
from schemas.case import Case
from tests.helpers import invoke, sample_case, stored_package

CASE = Case.model_validate_json(sample_case().read_text())
SECOND = CASE.model_copy(update={"case_id": "C-2026-1003"})
NUMBER = CASE.debtor.id_number


def test_the_number_is_never_taken_from_the_command_line(onboarded: Path) -> None:
    result = invoke(
        "-c",
        onboarded,
        "subject",
        "erase",
        "--id-type",
        "resident_id",
        "--id-number",
        NUMBER,
        "--reason",
        "request",
    )
    assert result.exit_code == 2 and "standard input" in result.output


async def test_a_person_never_placed_is_refused(gw: Gateway) -> None:
    try:
        await erasure.erase(gw, "resident_id", "999", "request", actor="test")
    except NotFound as exc:
        assert "no case was placed" in str(exc)
    else:
        raise AssertionError("an erasure about nobody was recorded")


async def test_a_held_case_waits_with_its_reason_and_goes_on_when_released(gw: Gateway) -> None:
    first = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    second = await placement.place(gw, SECOND, "acme-collect", "collection", actor="test")
    await placement.place(gw, CASE, "sz-arbitration", "arbitration", actor="test")
    await erasure.hold(gw, SECOND.case_id, "litigation ARB-2026-003", actor="test")
    done = await erasure.erase(gw, "resident_id", NUMBER, "data subject request", actor="test")
    outcomes = sorted((c["partner"], c["outcome"]) for c in done["cases"])
    assert outcomes == [
        ("acme-collect", "held"),
        ("acme-collect", "notice_queued"),
        ("sz-arbitration", "notice_queued"),
    ]
    assert "acme-collect: legal hold: litigation ARB-2026-003" in done["waiting_for"]
    assert (await stored_package(gw, first.package_id))["signed"] is None  # recalled before it was sent: gone
    assert (await stored_package(gw, second.package_id))["signed"] is not None  # held
    (entry,) = [e["entry"] for e in await query.entries(gw.db, query.EntryFilter(kind="erasure_requested"))]
    assert (entry["cases"], entry["held"], entry["notices"]) == (3, 1, 2)
    assert entry["partners"] == ["acme-collect", "sz-arbitration"] and NUMBER not in str(entry)
    assert await erasure.release(gw, SECOND.case_id, "litigation over", actor="test") == [done["erasure_id"]]
    (after,) = await erasure.status(gw, done["erasure_id"])
    assert sorted(c["outcome"] for c in after["cases"]) == ["notice_queued"] * 3
    assert (await stored_package(gw, second.package_id))["signed"] is None  # recalled now, and purged


def test_cli_erase_status_and_holds(onboarded: Path) -> None:
    invoke("-c", onboarded, "place", sample_case(), "--partner", "acme-collect", "--purpose", "collection")
    held = invoke("-c", onboarded, "cases", "hold", CASE.case_id, "--reason", "regulator request 2026-11")
    assert held.exit_code == 0 and "legal hold" in held.output
    erased = CliRunner().invoke(
        cli,
        [
            "-c",
            str(onboarded),
            "subject",
            "erase",
            "--id-type",
            "resident_id",
            "--id-number",
            "-",
            "--reason",
            "data subject request",
        ],
        input=NUMBER + "\n",
    )
    assert erased.exit_code == 0, erased.output
    assert "open, 0 of 1 deletions attested" in erased.output and "regulator request 2026-11" in erased.output
    assert NUMBER not in erased.output
    listed = invoke("-c", onboarded, "subject", "status")
    assert "waiting for acme-collect: legal hold" in listed.output
    holds = invoke("-c", onboarded, "cases", "holds")
    assert "regulator request 2026-11" in holds.output


async def test_the_operator_api_takes_an_erasure_and_reports_it(gw: Gateway) -> None:
    await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    operator = await tokens.create(gw, "operator", "ops", actor="test")
    auditor = await tokens.create(gw, "auditor", "audit", actor="test")
    async with TestClient(TestServer(create_app(gw.settings, gateway=gw))) as client:
        made = await client.post(
            "/v1/erasures",
            json={"id_type": "resident_id", "id_number": NUMBER, "reason": "data subject request"},
            headers={"Authorization": f"Bearer {operator}"},
        )
        assert made.status == 201, await made.text()
        body = await made.json()
        assert body["subject"].startswith("subj_") and body["cases"][0]["outcome"] == "notice_queued"
        seen = await client.get(
            f"/v1/erasures/{body['erasure_id']}", headers={"Authorization": f"Bearer {auditor}"}
        )
        assert seen.status == 200 and (await seen.json())["erasure_id"] == body["erasure_id"]
        refused = await client.post(
            "/v1/erasures",
            json={"id_type": "resident_id", "id_number": NUMBER, "reason": "x"},
            headers={"Authorization": f"Bearer {auditor}"},
        )
        assert refused.status == 403
