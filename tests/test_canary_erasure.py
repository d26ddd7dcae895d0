"""The done-when test of the personal data lifecycle: a canary case goes to two partners,
is delivered, reported on with free text, erased at the person's request, attested
deleted by both, and purged; afterwards the canary is nowhere (database file, WAL,
logs, exports) in any form, and the audit log still verifies and still proves who
received what, by pseudonym."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner, Result

from gateway.cli.main import cli
from gateway.delivery.dispatch import Dispatcher
from gateway.http.app import create_app
from gateway.placement import service as placement
from schemas.case import Case
from tests.callbacks import dumps, signed_headers
from tests.helpers import sample_case, stored_package
from tests.lifecycle import (
    CANARY,
    Partners,
    canary_case,
    database_bytes,
    leaks,
    report,
    table_text,
    two_agencies,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def cli_run(ws: Path, *args: str, stdin: str | None = None) -> Result:
    """The real CLI, in a thread (it runs its own event loop), as an operator would."""
    result = CliRunner().invoke(cli, ["-c", str(ws), *args], input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


async def callback(client: TestClient, p: Partners, partner: str, body: dict[str, Any]) -> None:
    text = dumps(body)
    answer = await client.post(
        f"/v1/partners/{partner}/callbacks",
        data=text.encode(),
        headers=signed_headers(p.secrets[partner], text, at=p.clock.now),
    )
    assert answer.status == 202, await answer.text()


async def deliver(p: Partners) -> None:
    stats = await Dispatcher(p.gw).run_once()
    assert stats.dead == 0, stats


async def work_on_the_case(client: TestClient, p: Partners, refs: dict[str, str]) -> None:
    """Both partners accept and report, echoing the debtor in their free text."""
    for partner, ref in refs.items():
        await callback(client, p, partner, report(ref, "accepted", p.clock))
        note = f"spoke with {CANARY['name']} on {CANARY['phone']}; mail {CANARY['email']}"
        await callback(
            client,
            p,
            partner,
            report(
                ref,
                "contact_attempt",
                p.clock,
                channel="voice",
                target="debtor",
                outcome="connected",
                text=note,
            ),
        )
        complaint = report(ref, "complaint", p.clock, summary=f"{CANARY['name']} complained")
        await callback(client, p, partner, complaint)


async def attest(client: TestClient, p: Partners, refs: dict[str, str]) -> None:
    for partner, ref in refs.items():
        statement = f"all records of {CANARY['name']} ({CANARY['id_number']}) deleted"
        await callback(
            client,
            p,
            partner,
            report(
                ref, "deletion_attested", p.clock, deleted_at=p.clock.now.isoformat(), statement=statement
            ),
        )


async def test_an_erased_canary_is_nowhere_and_the_log_still_proves_the_disclosures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, database_url: str | None
) -> None:
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    async with two_agencies(tmp_path) as p:
        ws = p.gw.settings.base_dir
        refs = {}
        for partner in p.agencies:
            placed = await placement.place(p.gw, canary_case(), partner, "collection", actor="test")
            refs[partner] = placed.case_ref
        other = await placement.place(p.gw, _other_case(), "agency-a", "collection", actor="test")
        await deliver(p)
        assert all(a.claims for a in p.agencies.values())  # the partners read the canary
        await _the_scan_finds_what_is_there(p, other.package_id, database_url)
        async with TestClient(TestServer(create_app(p.gw.settings, gateway=p.gw))) as client:
            await work_on_the_case(client, p, refs)
            await _stored_screened(p)
            erased = await asyncio.to_thread(
                cli_run,
                ws,
                "subject",
                "erase",
                "--id-type",
                "resident_id",
                "--id-number",
                "-",
                "--reason",
                "data subject request under PIPL art. 47",
                "--json",
                stdin=CANARY["id_number"] + "\n",
            )
            outputs.append(erased.output)
            p.clock.now = datetime.now(UTC) + timedelta(seconds=1)  # the command ran on the real clock
            await deliver(p)  # the deletion requests go out
            purposes = [c["purpose"] for a in p.agencies.values() for c in a.claims.values()]
            assert purposes.count("recall") == 2
            await attest(client, p, refs)
        for args in (
            ("retention", "run", "--json"),
            ("subject", "status", "--json"),
            ("retention", "show", "--json"),
        ):
            outputs.append((await asyncio.to_thread(cli_run, ws, *args)).output)
        status = json.loads(outputs[-2])
        assert status[0]["complete"] and status[0]["attested"] == 2, status
        for package in await _packages(p):
            outputs.append((await asyncio.to_thread(cli_run, ws, "package", "show", package)).output)
        outputs.append(await table_text(p.gw))
        assert (await stored_package(p.gw, other.package_id))["signed"]  # another person's case is kept
    await _audit_still_proves(ws, outputs, tmp_path)
    exported = b"".join(f.read_bytes() for f in (tmp_path / "bundle").rglob("*") if f.is_file())
    found = {
        "logs": leaks(caplog.text.encode(), CANARY.values()),
        "outputs": leaks("\n".join(outputs).encode(), CANARY.values()),
        "export": leaks(exported, CANARY.values()),
    }
    if database_url is None:
        found["database file, WAL"] = leaks(database_bytes(ws), CANARY.values())
    assert found == {name: [] for name in found}


async def _the_scan_finds_what_is_there(p: Partners, package_id: str, database_url: str | None) -> None:
    """The scan's own check: the name in a decrypted package (inside base64url), the bank's
    case id stored in clear beside a case until its reference is purged."""
    signed = (await stored_package(p.gw, package_id))["signed"]
    assert leaks(signed.encode(), ["张伟"]) == ["张伟"]
    if database_url is None:
        stored = database_bytes(p.gw.settings.base_dir)
        assert leaks(stored, [CANARY["case_id"], "张伟"]) == [CANARY["case_id"]]


def _other_case() -> Case:
    return Case.model_validate_json(sample_case().read_text())


async def _stored_screened(p: Partners) -> None:
    """Before the erasure: the reports' free text is stored screened, its original only encrypted."""
    async with p.gw.db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT body, original FROM events WHERE type IN ('contact_attempt', 'complaint')"
        )
    assert len(rows) == 4
    for row in rows:
        assert leaks(row["body"].encode(), CANARY.values()) == [], row["body"]
        assert row["original"].startswith("enc1:") and not leaks(row["original"].encode(), CANARY.values())


async def _packages(p: Partners) -> list[str]:
    async with p.gw.db.transaction() as tx:
        return [r["id"] for r in await tx.fetchall("SELECT id FROM packages WHERE partner_id = 'agency-b'")]


async def _audit_still_proves(ws: Path, outputs: list[str], tmp_path: Path) -> None:
    verified = await asyncio.to_thread(cli_run, ws, "audit", "verify")
    assert verified.output.splitlines()[-1].startswith("OK"), verified.output
    log = json.loads((await asyncio.to_thread(cli_run, ws, "audit", "log", "--json")).output)
    kinds = [item["entry"]["kind"] for item in log]
    for kind in ("erasure_requested", "recall", "deletion_attested", "retention_purge", "erasure_completed"):
        assert kind in kinds, kinds
    purges = [item["entry"] for item in log if item["entry"]["kind"] == "retention_purge"]
    assert {e["trigger"] for e in purges} == {"erasure"} and sum(e["package_plaintexts"] for e in purges) == 4
    subject = await asyncio.to_thread(
        cli_run,
        ws,
        "audit",
        "subject",
        "--id-type",
        "resident_id",
        "--id-number",
        "-",
        "--json",
        stdin=CANARY["id_number"] + "\n",
    )
    report = json.loads(subject.output)
    assert sorted(d["partner"] for d in report["disclosures"]) == ["agency-a", "agency-b"]
    assert report["subject"].startswith("subj_")
    outputs += [verified.output, json.dumps(log), subject.output]
    outputs.append((await asyncio.to_thread(cli_run, ws, "audit", "export", str(tmp_path / "bundle"))).output)
