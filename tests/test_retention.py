"""Retention: each kind of personal data is purged when its rule says, never while a
case needs it or is under a legal hold; every purge is an audit entry of counts; the
log still verifies and package show says what was purged."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import query, verifydb
from gateway.cli.audit import workspace_vkey
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.errors import ConfigError
from gateway.inbound import pipeline as inbound
from gateway.lifecycle import erasure
from gateway.lifecycle import retention as lifecycle
from gateway.onboarding import registry
from gateway.placement import recall
from gateway.placement import service as placement
from gateway.supervision.retention import Schedule
from gateway.supervision.rules import read_rule_pack
from schemas.case import Case
from tests.callbacks import dumps
from tests.helpers import sample_case
from tests.partners import PARTNER, Clock, agency_workspace
from tests.partners import rows as fetch

CASE = Case.model_validate_json(sample_case().read_text())
DAY = 86400.0
counter = iter(range(10**6))


async def tell(gw: Gateway, ref: str, type_: str, **fields: Any) -> None:
    body = {"type": type_, "case_ref": ref, "occurred_at": gw.now().isoformat(), **fields}
    await inbound.ingest(
        gw, PARTNER, dumps(body).encode(), channel="callback", webhook_id=f"m{next(counter)}"
    )


async def purged(gw: Gateway) -> dict[str, int]:
    done = await lifecycle.run(gw, actor="test")
    return {kind: n for kind, n in done.counts.by_kind.items() if n}


async def placed_and_worked(gw: Gateway) -> placement.Placement:
    placed = await placement.place(gw, CASE, PARTNER, "collection", actor="test")
    assert (await Dispatcher(gw).run_once()).delivered == 1
    await tell(gw, placed.case_ref, "accepted")
    await tell(gw, placed.case_ref, "dispute", reason="张伟 disputes the fees")
    return placed


async def test_each_kind_goes_when_its_rule_says_and_the_log_records_it(tmp_path: Path) -> None:
    clock = Clock()
    async with agency_workspace(tmp_path, clock=clock) as (gw, _agency, _ca):
        placed = await placed_and_worked(gw)
        assert await purged(gw) == {}
        clock.advance(31 * DAY)  # past the package's exp (30 days): its sealed form goes
        assert await purged(gw) == {"package_sealed": 1}
        assert (await placement.show(gw, placed.package_id))["claims"]["data"]["debtor"]["name"] == "张伟"
        clock.advance(60 * DAY)  # 91 days after the report: its original goes, the screened text stays
        assert await purged(gw) == {"event_original": 1}
        dispute = (await fetch(gw, "SELECT body FROM events WHERE type = 'dispute'"))[0]["body"]
        assert json.loads(dispute)["reason"] == "<redacted> disputes the fees"
        await recall.recall(gw, CASE.case_id, PARTNER, "contract ended", actor="test")
        await Dispatcher(gw).run_once()
        await tell(
            gw, placed.case_ref, "deletion_attested", deleted_at=gw.now().isoformat(), statement="done"
        )
        clock.advance(29 * DAY)
        assert await purged(gw) == {}  # 30 days after the attestation, not before
        clock.advance(2 * DAY)
        assert await purged(gw) == {"package_sealed": 1, "package_plaintext": 2}
        shown = await placement.show(gw, placed.package_id)
        assert (
            shown["claims"] is None and shown["purged_at"] and shown["payload_digest"].startswith("sha256:")
        )
        clock.advance(1826 * DAY)  # the pack's 5 years: screened text and the bank's case id go
        assert await purged(gw) == {"event_original": 1, "event_text": 2, "case_reference": 1}
        ids = {
            r["case_id"]
            for r in await fetch(gw, "SELECT case_id FROM packages UNION SELECT case_id FROM events")
        }
        assert ids == {placement.case_token(gw, CASE.case_id)}
        await _the_log_records_counts_and_verifies(gw)


async def _the_log_records_counts_and_verifies(gw: Gateway) -> None:
    entries = await query.entries(gw.db, query.EntryFilter(kind="retention_purge"))
    assert [e["entry"]["package_plaintexts"] for e in entries] == [0, 0, 2, 0]
    assert {e["entry"]["trigger"] for e in entries} == {"retention"} and all(
        "subject" not in e["entry"] for e in entries
    )
    summary = await verifydb.verify_database(gw.db, workspace_vkey(gw), None, deep=True)
    assert summary.entries == (await fetch(gw, "SELECT COUNT(*) AS n FROM audit_entries"))[0]["n"]


async def test_a_case_under_a_legal_hold_keeps_everything_until_released(tmp_path: Path) -> None:
    clock = Clock()
    async with agency_workspace(tmp_path, clock=clock) as (gw, _agency, _ca):
        placed = await placed_and_worked(gw)
        await erasure.hold(gw, CASE.case_id, "litigation C-2026-1001", actor="test")
        clock.advance(10 * 366 * DAY)
        assert await purged(gw) == {}
        shown = await lifecycle.show(gw)
        assert {row["kind"] for row in shown} >= {"package_plaintext", "event_original", "case_reference"}
        assert await erasure.release(gw, CASE.case_id, "litigation over", actor="test") == []
        assert await purged(gw) == {"package_sealed": 1, "event_original": 1, "event_text": 1}
        assert (await placement.show(gw, placed.package_id))["claims"] is not None  # no attestation yet
        holds = await query.entries(
            gw.db, query.EntryFilter(case_token=placement.case_token(gw, CASE.case_id))
        )
        kinds = [e["entry"]["kind"] for e in holds]
        assert kinds.count("legal_hold") == 1 and kinds.count("legal_hold_released") == 1


async def test_a_partners_own_days_win_over_the_packs(tmp_path: Path) -> None:
    clock = Clock()
    retention = "[retention]\npackage_plaintext = 0\nevent_original = 1\n"
    async with agency_workspace(tmp_path, clock=clock) as (gw, _agency, _ca):
        profile = gw.settings.base_dir / f"{PARTNER}.toml"
        profile.write_text(profile.read_text().replace("[limits]", retention + "\n[limits]"))
        await registry.add(gw, profile, actor="test", update=True)
        placed = await placed_and_worked(gw)
        await recall.recall(gw, CASE.case_id, PARTNER, "contract ended", actor="test")
        await Dispatcher(gw).run_once()
        await tell(
            gw, placed.case_ref, "deletion_attested", deleted_at=gw.now().isoformat(), statement="done"
        )
        clock.advance(DAY + 1)
        assert await purged(gw) == {"package_sealed": 2, "package_plaintext": 2, "event_original": 2}
        row = next(r for r in await lifecycle.show(gw) if r["kind"] == "event_text")
        assert row["rule"] == "1825 days after the report's arrival" and row["held"] == 3


def test_a_rule_pack_must_name_each_kinds_moment(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "gateway" / "supervision" / "rulepacks" / "cn.toml").read_text()
    bad = tmp_path / "cn.toml"
    bad.write_text(
        text.replace('event_original = { after = "received"', 'event_original = { after = "closed"')
    )
    with pytest.raises(ConfigError, match="event_original.after: must be 'received'"):
        read_rule_pack(bad)


def test_the_schedule_counts_from_each_moment() -> None:
    pack = read_rule_pack(
        Path(__file__).parents[1] / "gateway" / "supervision" / "rulepacks" / "us-reg-f.toml"
    )
    schedule = Schedule(pack.retention.personal, pack.retention.years)
    assert schedule.days("event_text") == 1095 and schedule.days("event_text", {"event_text": 10}) == 10
    assert schedule.rule("package_plaintext") == "30 days after the partner's deletion attestation"
    now = Clock().now
    assert now - schedule.cutoff("package_plaintext", now) == timedelta(days=30)
