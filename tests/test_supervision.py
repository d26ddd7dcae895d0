"""Supervision end to end through the callback pipeline: violations, automatic
suspension, recall and deletion attestation, limitation, scorecards."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.core import Gateway
from gateway.errors import Conflict, PolicyViolation
from gateway.inbound import pipeline as inbound
from gateway.placement import recall
from gateway.placement import service as placement
from gateway.supervision import scorecards as supervision
from schemas.case import Case
from tests.callbacks import dumps, event
from tests.helpers import dial_by_token, invoke, sample_case

SHANGHAI = ZoneInfo("Asia/Shanghai")
CASE = Case.model_validate_json(sample_case().read_text())
counter = iter(range(10**6))


async def report(gw: Gateway, partner: str, body: dict[str, Any]) -> inbound.Ingested:
    return await inbound.ingest(
        gw, partner, dumps(body).encode(), channel="callback", webhook_id=f"msg_{next(counter)}"
    )


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI)


#: The token each placement sent for the debtor's mobile number, by case_ref: what a
#: partner reports as number_token (per-number caps are flagged without one).
MOBILE: dict[str, str] = {}


async def place(gw: Gateway, partner: str, purpose: str) -> placement.Placement:
    placed = await placement.place(gw, CASE, partner, purpose, actor="test")
    MOBILE[placed.case_ref] = placed.claims["data"]["debtor"]["phones"][0]["number"]
    return placed


@pytest.fixture
async def active(gw: Gateway, tmp_path: Path) -> str:
    await dial_by_token(gw, tmp_path, "acme-collect.toml", "collection")
    placed = await place(gw, "acme-collect", "collection")
    await report(gw, "acme-collect", event(placed.case_ref, "accepted", at=local(20, 9)))
    return placed.case_ref


def call(ref: str, at: datetime, outcome: str = "connected", **extra: Any) -> dict[str, Any]:
    extra.setdefault("number_token", MOBILE[ref])
    return event(ref, "contact_attempt", at=at, channel="voice", target="debtor", outcome=outcome, **extra)


async def test_contact_at_night_is_a_violation_with_rule_and_evidence(gw: Gateway, active: str) -> None:
    ok = await report(gw, "acme-collect", call(active, local(20, 21, 59)))
    assert ok.violations == []
    late = await report(gw, "acme-collect", call(active, local(20, 22, 30)))
    assert [b.rule for b in late.violations] == ["cn.hours"]
    async with gw.db.transaction() as tx:
        row = await tx.fetchone("SELECT partner_id, rule, source, evidence FROM violations")
        entry = await tx.fetchval("SELECT leaf FROM audit_entries WHERE kind = 'violation'")
    assert row["partner_id"] == "acme-collect" and row["source"]
    assert json.loads(entry)["rule"] == "cn.hours"


async def test_frequency_is_counted_across_partners(gw: Gateway, active: str, tmp_path: Path) -> None:
    await dial_by_token(gw, tmp_path, "shenzhen-arbitration.toml", "arbitration")
    other = await place(gw, "sz-arbitration", "arbitration")
    await report(gw, "sz-arbitration", event(other.case_ref, "accepted", at=local(20, 9)))
    callers = [("acme-collect", active), ("sz-arbitration", other.case_ref), ("acme-collect", active)]
    for hour, (partner, ref) in zip((9, 10, 11), callers, strict=True):
        assert (await report(gw, partner, call(ref, local(21, hour)))).violations == []
    fourth = await report(gw, "acme-collect", call(active, local(21, 15)))
    assert "cn.voice-connected-daily" in [b.rule for b in fourth.violations]


async def test_partner_reaching_threshold_is_suspended_and_gets_nothing_more(
    gw: Gateway, active: str
) -> None:
    threshold = 5
    for minute in range(threshold):
        result = await report(gw, "acme-collect", call(active, local(20, 23, minute), outcome="no_answer"))
    assert result.suspended
    from gateway.onboarding import registry

    record = await registry.get(gw, "acme-collect")
    assert record.status == "suspended" and "automatic" in record.status_reason
    with pytest.raises(PolicyViolation, match="suspended"):
        await placement.place(gw, CASE, "acme-collect", "collection", actor="test")


async def test_recall_demands_deletion_attestation(gw: Gateway, active: str) -> None:
    done = await recall.recall(gw, CASE.case_id, "acme-collect", "debt sold", actor="test")
    assert done.notice_package_id
    shown = await placement.show(gw, done.notice_package_id)
    assert shown["claims"]["purpose"] == "recall" and shown["claims"]["case_ref"] == active
    with pytest.raises(Conflict, match="impossible"):
        await report(gw, "acme-collect", call(active, local(22, 10)))
    assert await supervision.overdue_attestations(gw) == []
    pending = await supervision.overdue_attestations(gw, overdue_only=False)
    assert [r["case_id"] for r in pending] == [CASE.case_id]
    gw.clock = lambda: datetime.now(UTC) + timedelta(days=16)
    assert [r["case_id"] for r in await supervision.overdue_attestations(gw)] == [CASE.case_id]
    await report(
        gw,
        "acme-collect",
        event(active, "deletion_attested", deleted_at=datetime.now(UTC).isoformat(), statement="erased"),
    )
    assert await supervision.overdue_attestations(gw, overdue_only=False) == []


async def test_expired_case_is_refused_for_arbitration_and_listed(gw: Gateway) -> None:
    old = CASE.model_copy(
        update={
            "loan": CASE.loan.model_copy(
                update={
                    "last_due_date": date(2022, 1, 5),
                    "last_acknowledged": None,
                    "last_payment_date": None,
                }
            )
        }
    )
    with pytest.raises(PolicyViolation, match="limitation period .* ended on 2025-01-05"):
        await placement.place(gw, old, "sz-arbitration", "arbitration", actor="test")
    await placement.place(gw, old, "acme-collect", "collection", actor="test")
    rows = await supervision.expiring(gw, timedelta(days=90))
    assert [(r["case_id"], r["expires"]) for r in rows] == [(CASE.case_id, "2025-01-05")]


async def test_a_recalled_case_goes_back_only_after_the_deletion_is_attested(
    gw: Gateway, active: str
) -> None:
    await recall.recall(gw, CASE.case_id, "acme-collect", "complaint review", actor="test")
    with pytest.raises(PolicyViolation, match="recalled from 'acme-collect'.*not attested yet"):
        await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    await report(
        gw,
        "acme-collect",
        event(active, "deletion_attested", deleted_at=datetime.now(UTC).isoformat(), statement="erased"),
    )
    again = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    assert again.case_ref == active
    async with gw.db.transaction() as tx:
        row = await tx.fetchone(
            "SELECT state, accepted_at, recalled_at, deletion_due, attested_at FROM assignments"
            " WHERE case_ref = ?",
            (active,),
        )
    assert row == {"state": "placed", "accepted_at": None, "recalled_at": None, "deletion_due": None,
                   "attested_at": None}  # fmt: skip
    accepted = await report(gw, "acme-collect", event(active, "accepted", at=local(23, 9)))
    assert accepted.state == "active"
    assert await supervision.overdue_attestations(gw, overdue_only=False) == []


@pytest.mark.parametrize(
    ("within", "problem"),
    [
        ("90", "'90': write a number of days or weeks, e.g. 90d or 12w"),
        ("-5d", "'-5d': write a number of days or weeks"),
        ("100000000d", "'100000000d': at most 36500d (100 years)"),
        ("5300w", "'5300w': at most 36500d"),
    ],
)
def test_cases_expiring_window_is_checked(onboarded: Path, within: str, problem: str) -> None:
    result = invoke("-c", onboarded, "cases", "expiring", "--within", within)
    assert result.exit_code == 2 and f"Invalid value for --within: {problem}" in result.output
    assert invoke("-c", onboarded, "cases", "expiring", "--within", "36500d").exit_code == 0


async def test_scorecard(gw: Gateway, active: str) -> None:
    await report(gw, "acme-collect", call(active, local(21, 10), outcome="no_answer"))
    await report(gw, "acme-collect", call(active, local(21, 11)))
    await report(
        gw,
        "acme-collect",
        event(active, "promise_to_pay", at=local(21, 11, 5), amount="1000", due="2026-11-25"),
    )
    await report(gw, "acme-collect", event(active, "payment_reported", at=local(22, 9), amount="1000"))
    card = await supervision.scorecard(gw, "acme-collect")
    assert card.cases == 1 and card.contact_attempts == 2
    assert card.right_party_contact_rate == 0.5
    assert card.promise_to_pay_rate == 1.0 and card.promise_kept_rate == 1.0
    assert card.recovery_rate == round(1000 / 52310.45, 4)
    assert card.violations == 0 and card.violation_rate == 0.0


async def test_reminder_due_at_night_waits_for_the_contact_window(gw: Gateway) -> None:
    gw.clock = lambda: local(23, 23, 30)
    placed = await placement.place(gw, CASE, "notify-sms", "reminder", actor="test")
    async with gw.db.transaction() as tx:
        due = await tx.fetchval("SELECT next_attempt_at FROM packages WHERE id = ?", (placed.package_id,))
    assert datetime.fromisoformat(due).astimezone(SHANGHAI) == local(24, 8)


async def test_suspended_partner_receives_recall_notices_only(gw: Gateway, active: str) -> None:
    from gateway.delivery import outbox
    from gateway.onboarding import registry

    other = CASE.model_copy(update={"case_id": "C-2026-2002"})
    waiting = await placement.place(gw, other, "acme-collect", "collection", actor="test")
    done = await recall.recall(gw, CASE.case_id, "acme-collect", "complaint review", actor="test")
    await registry.set_status(gw, "acme-collect", "suspended", reason="review", actor="test")
    claimed = (await outbox.claim(gw, "acme-collect", "test-owner", 10, 30.0)).packages
    assert [c.package.package_id for c in claimed] == [done.notice_package_id]
    async with gw.db.transaction() as tx:
        state = await tx.fetchval("SELECT state FROM packages WHERE id = ?", (waiting.package_id,))
    assert state == "queued"


def test_operators_reasons_are_kept_free_of_personal_data(onboarded: Path) -> None:
    placed = invoke(
        "-c", onboarded, "place", sample_case(), "--partner", "acme-collect", "--purpose", "collection"
    )
    assert placed.exit_code == 0
    for command in (
        ("recall", CASE.case_id, "--partner", "acme-collect"),
        ("partners", "suspend", "acme-collect"),
        ("partners", "offboard", "acme-collect"),
    ):
        refused = invoke("-c", onboarded, *command, "--reason", "ID 110101199003071234 disputes")
        assert refused.exit_code == 1, command
        assert "holds a number of 7 or more digits" in refused.output
        assert "110101199003071234" not in refused.output
    long = invoke("-c", onboarded, "partners", "suspend", "acme-collect", "--reason", "x" * 501)
    assert long.exit_code == 1 and "at most 500" in long.output
    shown = json.loads(invoke("-c", onboarded, "partners", "list", "--json").output)
    assert {p["id"]: p["status"] for p in shown}["acme-collect"] == "active"
    log = json.loads(invoke("-c", onboarded, "audit", "log", "--json").output)
    assert [e["entry"]["kind"] for e in log].count("recall") == 0
    assert "110101199003071234" not in json.dumps(log)
