"""Supervision through the callback pipeline, counted the way the sources count: late
reports complete caps, one number is one number whichever partner dialled it, requests
bind every partner, every zone the person may be in."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.core import Gateway
from gateway.errors import InvalidInput
from gateway.http import create_app
from gateway.inbound import pipeline as inbound
from gateway.placement import service as placement
from gateway.supervision.rules import load_rule_pack
from schemas.case import Case
from tests.callbacks import dumps, event, signed_headers
from tests.helpers import dial_by_token, receive_numbers, sample_case

SHANGHAI = ZoneInfo("Asia/Shanghai")
CASE = Case.model_validate_json(sample_case().read_text())
counter = iter(range(10**6))


async def report(gw: Gateway, partner: str, body: dict[str, Any]) -> inbound.Ingested:
    return await inbound.ingest(
        gw, partner, dumps(body).encode(), channel="callback", webhook_id=f"cnt_{next(counter)}"
    )


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI)


def call(
    ref: str, at: datetime, token: str | None, outcome: str = "no_answer", **extra: Any
) -> dict[str, Any]:
    if token is not None:
        extra["number_token"] = token
    return event(ref, "contact_attempt", at=at, channel="voice", target="debtor", outcome=outcome, **extra)


class Placed:
    """A case placed with a partner that dials by token, and accepted."""

    def __init__(self, partner: str, ref: str, mobile: str) -> None:
        self.partner, self.ref, self.mobile = partner, ref, mobile


async def placed_with(gw: Gateway, tmp_path: Path, case: Case = CASE) -> tuple[Placed, Placed]:
    await dial_by_token(gw, tmp_path, "acme-collect.toml", "collection")
    await dial_by_token(gw, tmp_path, "shenzhen-arbitration.toml", "arbitration")
    out = []
    for partner, purpose in (("acme-collect", "collection"), ("sz-arbitration", "arbitration")):
        done = await placement.place(gw, case, partner, purpose, actor="test")
        await report(gw, partner, event(done.case_ref, "accepted", at=local(19, 9)))
        out.append(Placed(partner, done.case_ref, done.claims["data"]["debtor"]["phones"][0]["number"]))
    return out[0], out[1]


async def violations(gw: Gateway) -> list[dict[str, Any]]:
    async with gw.db.transaction() as tx:
        return await tx.fetchall("SELECT partner_id, rule, evidence, event_id FROM violations ORDER BY id")


async def test_a_late_report_completes_the_cap_and_charges_the_call_that_crossed_it(
    gw: Gateway, tmp_path: Path
) -> None:
    acme, arb = await placed_with(gw, tmp_path)
    ids = [(await report(gw, acme.partner, call(acme.ref, local(20, h), acme.mobile, "connected"))).event_id
           for h in (10, 11, 12)]  # fmt: skip
    assert await violations(gw) == []
    late = await report(gw, arb.partner, call(arb.ref, local(20, 9), arb.mobile, "connected"))
    [breach] = late.violations
    assert breach.rule == "cn.voice-connected-daily" and breach.evidence["count"] == 4
    [row] = await violations(gw)
    assert (row["partner_id"], row["event_id"]) == (acme.partner, ids[2])  # the 12:00 call
    assert json.loads(row["evidence"])["found_on_event"] == late.event_id


async def test_one_number_is_capped_across_partners(gw: Gateway, tmp_path: Path) -> None:
    acme, arb = await placed_with(gw, tmp_path)
    assert acme.mobile != arb.mobile  # each partner's token is its own
    for minute in range(4):
        found = await report(gw, acme.partner, call(acme.ref, local(20, 9, minute), acme.mobile))
        assert found.violations == []
    for minute in range(2):
        found = await report(gw, arb.partner, call(arb.ref, local(20, 10, minute), arb.mobile))
        assert found.violations == []
    seventh = await report(gw, arb.partner, call(arb.ref, local(20, 11), arb.mobile))
    assert [b.rule for b in seventh.violations] == ["cn.attempts-per-number-daily"]
    assert seventh.violations[0].evidence["count"] == 7


async def test_partners_who_dial_numbers_in_clear_report_the_token_beside_them_and_share_the_cap(
    gw: Gateway, tmp_path: Path
) -> None:
    placed = []
    for name, partner, purpose in (
        ("acme-collect.toml", "acme-collect", "collection"),
        ("shenzhen-arbitration.toml", "sz-arbitration", "arbitration"),
    ):
        await receive_numbers(gw, tmp_path, name, purpose, "keep")
        done = await placement.place(gw, CASE, partner, purpose, actor="test")
        await report(gw, partner, event(done.case_ref, "accepted", at=local(19, 9)))
        mobile = done.claims["data"]["debtor"]["phones"][0]
        assert mobile["number"] == CASE.debtor.phones[0].number  # in clear, to dial
        placed.append(Placed(partner, done.case_ref, mobile["number_token"]))
    acme, arb = placed
    assert acme.mobile != arb.mobile  # each partner's token is its own
    found = []
    for minute in range(5):  # ten calls to one number on one day, the partners in turn
        for who in (acme, arb):
            reported = await report(gw, who.partner, call(who.ref, local(20, 9, minute), who.mobile))
            found += reported.violations
    assert [(b.rule, b.evidence["count"]) for b in found] == [
        ("cn.attempts-per-number-daily", count) for count in (7, 8, 9, 10)
    ]


@pytest.mark.parametrize(
    "token", [None, "tok_unknown", "acme"], ids=["missing", "unknown", "another-partners"]
)
async def test_a_call_without_a_number_the_gateway_knows_is_flagged(
    gw: Gateway, tmp_path: Path, token: str | None
) -> None:
    acme, arb = await placed_with(gw, tmp_path)
    reported = acme.mobile if token == "acme" else token
    found = await report(gw, arb.partner, call(arb.ref, local(20, 10), reported))
    [breach] = found.violations
    assert breach.rule == "cn.attempts-per-number-daily" and "without a number" in breach.message


async def test_a_request_heard_by_one_partner_binds_the_other(gw: Gateway, tmp_path: Path) -> None:
    gw.rules = load_rule_pack("us-reg-f")  # type: ignore[misc]
    acme, arb = await placed_with(gw, tmp_path)
    gw.clock = lambda: local(20, 10, 5)  # the gateway learns of the request at 10:05
    ceased = event(acme.ref, "contact_request", at=local(20, 10), kind="cease")
    assert (await report(gw, acme.partner, ceased)).violations == []
    gw.clock = lambda: local(20, 16)
    before = await report(gw, arb.partner, call(arb.ref, local(20, 10, 2), arb.mobile))
    assert before.violations == []  # the other partner could not know yet
    after = await report(gw, arb.partner, call(arb.ref, local(20, 15), arb.mobile))
    assert [b.rule for b in after.violations] == ["us.cease-communication"]


async def test_a_late_request_flags_the_calls_made_after_it(gw: Gateway, tmp_path: Path) -> None:
    gw.rules = load_rule_pack("us-reg-f")  # type: ignore[misc]
    acme, _ = await placed_with(gw, tmp_path)
    made = await report(gw, acme.partner, call(acme.ref, local(20, 15), acme.mobile))
    asked = event(acme.ref, "contact_request", at=local(20, 10), kind="opt_out", channel="voice")
    [breach] = (await report(gw, acme.partner, asked)).violations
    assert breach.rule == "us.medium-opt-out"
    [row] = await violations(gw)
    assert row["event_id"] == made.event_id


async def test_an_incomplete_request_is_refused(gw: Gateway, tmp_path: Path) -> None:
    acme, _ = await placed_with(gw, tmp_path)
    with pytest.raises(InvalidInput, match="names the channel"):
        await report(gw, acme.partner, event(acme.ref, "contact_request", kind="opt_out"))


async def test_a_number_in_another_zone_is_called_within_the_hours_of_both(
    gw: Gateway, tmp_path: Path
) -> None:
    gw.rules = load_rule_pack("us-reg-f")  # type: ignore[misc]
    data = json.loads(sample_case().read_text())
    data["debtor"]["timezone"] = "America/New_York"
    data["debtor"]["phones"][0]["timezone"] = "America/Los_Angeles"
    acme, _ = await placed_with(gw, tmp_path, Case.model_validate(data))
    new_york = ZoneInfo("America/New_York")
    early = call(acme.ref, datetime(2026, 11, 20, 9, 30, tzinfo=new_york), acme.mobile)
    [breach] = (await report(gw, acme.partner, early)).violations
    assert breach.rule == "us.hours" and breach.evidence["zones"] == ["America/Los_Angeles"]
    home = data["debtor"]["phones"][1]["number"]
    assert home not in json.dumps(breach.evidence)


async def test_the_reporting_partner_is_told_only_its_own_breaches(
    gw: Gateway, tmp_path: Path, aiohttp_client: Any
) -> None:
    acme, arb = await placed_with(gw, tmp_path)
    for hour in (10, 11, 12):
        await report(gw, acme.partner, call(acme.ref, local(20, hour), acme.mobile, "connected"))
    client = await aiohttp_client(create_app(gw.settings, gateway=gw))
    secret = gw.keys.add_webhook_secret(arb.partner).read_text().split()[-1]
    body = dumps(call(arb.ref, local(20, 9), arb.mobile, "connected"))
    answer = await client.post(
        f"/v1/partners/{arb.partner}/callbacks", data=body.encode(), headers=signed_headers(secret, body)
    )
    assert answer.status == 202 and (await answer.json())["violations"] == []
    assert [row["partner_id"] for row in await violations(gw)] == [acme.partner]


async def test_a_third_party_is_contacted_once_ever_across_partners(gw: Gateway, tmp_path: Path) -> None:
    gw.rules = load_rule_pack("us-reg-f")  # type: ignore[misc]
    spouse = ("debtor.phones[].number", "emergency_contacts[].phone")
    tokens = {}
    for name, partner, purpose in (
        ("acme-collect.toml", "acme-collect", "collection"),
        ("shenzhen-arbitration.toml", "sz-arbitration", "arbitration"),
    ):
        await dial_by_token(gw, tmp_path, name, purpose, spouse)
        done = await placement.place(gw, CASE, partner, purpose, actor="test")
        await report(gw, partner, event(done.case_ref, "accepted", at=local(1, 9)))
        tokens[partner] = (done.case_ref, done.claims["data"]["emergency_contacts"][0]["phone"])

    def locate(partner: str, at: datetime) -> dict[str, Any]:
        ref, token = tokens[partner]
        text = "Could you confirm a good phone number?"
        return event(ref, "contact_attempt", at=at, channel="voice", target="third_party",
                     outcome="connected", number_token=token, text=text)  # fmt: skip

    assert (await report(gw, "acme-collect", locate("acme-collect", local(1, 10)))).violations == []
    again = await report(gw, "sz-arbitration", locate("sz-arbitration", local(21, 10)))  # 20 days on
    assert [b.rule for b in again.violations] == ["us.third-party-locate-once"]


#: (partner index, hour, minute, outcome): two partners' calls to the same mobile on one day.
CALLS = [
    (0, 9, 0, "connected"),
    (1, 9, 30, "refused"),
    (0, 10, 0, "no_answer"),
    (1, 11, 0, "connected"),
    (0, 12, 0, "connected"),
    (1, 13, 0, "no_answer"),
    (0, 14, 0, "no_answer"),
    (1, 15, 0, "connected"),
]


@pytest.mark.parametrize("order", ["as made", "reversed", "interleaved"])
async def test_the_violations_do_not_depend_on_the_order_of_the_reports(
    gw: Gateway, tmp_path: Path, order: str
) -> None:
    acme, arb = await placed_with(gw, tmp_path)
    calls = {"as made": CALLS, "reversed": CALLS[::-1], "interleaved": CALLS[1::2] + CALLS[::2]}[order]
    for who, hour, minute, outcome in calls:
        placed = (acme, arb)[who]
        await report(gw, placed.partner, call(placed.ref, local(20, hour, minute), placed.mobile, outcome))
    async with gw.db.transaction() as tx:
        found = await tx.fetchall(
            "SELECT v.partner_id, v.rule, e.occurred_at FROM violations v JOIN events e ON e.id = v.event_id"
        )
    assert sorted((r["rule"], r["partner_id"], r["occurred_at"][11:16]) for r in found) == [
        ("cn.attempts-per-number-daily", "acme-collect", "06:00"),  # the 7th call, 14:00 in Shanghai
        ("cn.attempts-per-number-daily", "sz-arbitration", "07:00"),  # the 8th
        ("cn.voice-connected-daily", "acme-collect", "04:00"),  # the 4th conversation, 12:00
        ("cn.voice-connected-daily", "sz-arbitration", "07:00"),  # the 5th
    ]
