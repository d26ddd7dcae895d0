"""Callbacks at the edges, over real HTTP: bodies that arrive in pieces or exceed the
limit, text that is too long, timestamps and dates out of range, unbounded amounts,
repeated or piled-up signature headers, unknown partners, replays of refused reports.
Each is taken in or refused with a 4xx problem, never a 5xx, and what a refusal stores
is stated."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from gateway.core import Gateway, open_database
from gateway.http import create_app
from gateway.onboarding import registry
from gateway.placement import service as placement
from tests.callbacks import (
    CASE,
    URL,
    counts,
    dumps,
    event,
    hmac_signature,
    placed_with_secrets,
    post,
    post_in_pieces,
    signed_headers,
)

MIB = 1024 * 1024
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def placed(gw: Gateway) -> dict[str, Any]:
    return await placed_with_secrets(gw)


@pytest.fixture
async def client(gw: Gateway, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(gw.settings, gateway=gw))


def padded(data: dict[str, Any], size: int) -> str:
    """``data`` as JSON, padded with whitespace (still valid JSON) to ``size`` bytes."""
    text = dumps(data)
    return text[:-1] + " " * (size - len(text.encode())) + "}"


async def accept(client: TestClient, placed: dict[str, Any]) -> None:
    body = dumps(event(placed["agency_ref"], "accepted", at=datetime.now(UTC) - timedelta(days=3)))
    resp = await post(client, "acme-collect", body, signed_headers(placed["secrets"]["acme-collect"], body))
    assert resp.status == 202, await resp.text()


async def stored(gw: Gateway, sql: str) -> Any:
    async with gw.db.transaction() as tx:
        return await tx.fetchval(sql)


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- bodies ----------------------------------------------------------------------------


async def test_a_signed_body_that_arrives_in_pieces_is_read_whole(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    body = padded(event(placed["agency_ref"], "accepted"), 300_000).encode()
    headers = signed_headers(placed["secrets"]["acme-collect"], body.decode())
    pieces = [body[:100_000], body[100_000:200_000], body[200_000:]]
    status, answer = await post_in_pieces(client.port, URL.format("acme-collect"), headers, pieces)
    assert status == 202, answer
    assert await counts(gw) == (1, 1)


async def test_a_body_over_the_limit_is_413_without_a_content_length_too(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    body = padded(event(placed["agency_ref"], "accepted"), MIB + 1).encode()
    headers = signed_headers(placed["secrets"]["acme-collect"], body.decode())
    pieces = [body[: MIB // 2], body[MIB // 2 :]]
    path = URL.format("acme-collect")
    status, answer = await post_in_pieces(client.port, path, headers, pieces, chunked=True)
    assert status == 413 and "larger than" in answer["detail"], answer
    assert await counts(gw) == (0, 0)


#: (event type, field, longest value taken, the event's other required fields)
TEXT_FIELDS = [
    ("accepted", "partner_reference", 200, {}),
    ("accepted", "package_id", 200, {}),
    ("rejected", "reason", 4000, {}),
    ("dispute", "reason", 4000, {}),
    ("complaint", "summary", 4000, {}),
    ("hardship", "summary", 4000, {}),
    ("returned", "reason", 4000, {}),
    ("closed", "reason", 4000, {}),
    ("message_failed", "reason", 4000, {}),
    ("arbitration_filed", "filing_number", 200, {}),
    ("award_issued", "summary", 4000, {}),
    ("deletion_attested", "statement", 4000, {"deleted_at": "2026-11-20T10:00:00+08:00"}),
    ("contact_attempt", "number_token", 200, {"channel": "sms", "target": "debtor", "outcome": "connected"}),
    ("contact_attempt", "text", 4000, {"channel": "sms", "target": "debtor", "outcome": "connected"}),
]


@pytest.mark.parametrize(
    ("type_", "field", "most", "extra"), TEXT_FIELDS, ids=[f"{t}.{f}" for t, f, *_ in TEXT_FIELDS]
)
async def test_text_over_its_length_limit_is_422(
    client: TestClient,
    placed: dict[str, Any],
    type_: str,
    field: str,
    most: int,
    extra: dict[str, Any],
) -> None:
    secret = placed["secrets"]["acme-collect"]
    at = datetime.now(UTC) - timedelta(hours=1)
    for length, refused in ((most, False), (most + 1, True)):
        body = dumps(event(placed["agency_ref"], type_, at=at, **extra, **{field: "x" * length}))
        resp = await post(client, "acme-collect", body, signed_headers(secret, body))
        detail = (await resp.json()).get("detail", "")
        assert (resp.status == 422 and f"{type_}.{field}" in detail) == refused, (length, resp.status, detail)


# -- timestamps and dates ----------------------------------------------------------------


def _digits(text: str, zero: str) -> str:
    return "".join(chr(ord(zero) + int(d)) for d in text)


STAMPS = {
    "superscript two": lambda now: "²",
    "Arabic-Indic digits": lambda now: _digits(now, "\u0660"),
    "fullwidth digits": lambda now: _digits(now, "\uff10"),
}


@pytest.mark.parametrize("kind", STAMPS, ids=list(STAMPS))
async def test_a_timestamp_of_anything_but_ascii_digits_is_400(
    kind: str, client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    stamp = STAMPS[kind](str(int(time.time())))
    body = dumps(event(placed["agency_ref"], "accepted"))
    headers = {
        "webhook-id": "msg_odd_stamp",
        "webhook-timestamp": stamp,
        "webhook-signature": hmac_signature(placed["secrets"]["acme-collect"], "msg_odd_stamp", stamp, body),
        "content-type": "application/json",
    }
    resp = await post(client, "acme-collect", body, headers)
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    assert "webhook-timestamp" in (await resp.json())["detail"]
    assert await counts(gw) == (0, 0)


YEAR_1 = "0001-01-01T00:00:00+14:00"
#: (event type, its fields, the field named in the refusal)
DATES = {
    "occurred_at in year 1": ("accepted", {"occurred_at": YEAR_1}, "occurred_at"),
    "a contact in year 1": (
        "contact_attempt",
        {"occurred_at": YEAR_1, "channel": "voice", "target": "debtor", "outcome": "connected"},
        "occurred_at",
    ),
    "occurred_at before 1970": ("complaint", {"occurred_at": "1969-12-31T23:59:59+00:00", "summary": "x"},
                                "occurred_at"),
    "hearing_at in year 1": ("hearing_scheduled", {"hearing_at": YEAR_1}, "hearing_at"),
    "hearing_at after 2100": ("hearing_scheduled", {"hearing_at": "2101-01-01T00:00:00+00:00"}, "hearing_at"),
    "deleted_at in year 1": ("deletion_attested", {"deleted_at": "0001-01-01T00:00:00", "statement": "x"},
                             "deleted_at"),
    "due in year 1": ("promise_to_pay", {"amount": "100.00", "due": "0001-01-01"}, "due"),
    "due after 2100": ("promise_to_pay", {"amount": "100.00", "due": "2101-01-01"}, "due"),
}


@pytest.mark.parametrize("kind", DATES, ids=list(DATES))
async def test_dates_outside_1970_to_2100_are_422(
    kind: str, client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    await accept(client, placed)  # so that a contact reaches the rules and their history window
    type_, fields, named = DATES[kind]
    body = dumps({**event(placed["agency_ref"], type_), **fields})
    resp = await post(client, "acme-collect", body, signed_headers(placed["secrets"]["acme-collect"], body))
    assert resp.status == 422, await resp.text()
    assert named in (await resp.json())["detail"]
    assert await counts(gw) == (1, 1)  # the acceptance alone


# -- amounts ------------------------------------------------------------------------------

AMOUNTS = ["1e400000", "1E+12", "1000000000000", "0", "-5", "12.345", "NaN", "Infinity", "", "twelve"]


async def test_amounts_are_finite_bounded_and_in_the_case_currency(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    await accept(client, placed)
    secret = placed["secrets"]["acme-collect"]

    async def report(**fields: Any) -> Any:
        body = dumps(event(placed["agency_ref"], "payment_reported", **fields))
        return await post(client, "acme-collect", body, signed_headers(secret, body))

    for amount in AMOUNTS:
        resp = await report(amount=amount)
        assert resp.status == 422 and "amount" in (await resp.json())["detail"], amount
    wrong = await report(amount="12.50", currency="USD")
    assert wrong.status == 422 and "CNY" in (await wrong.json())["detail"]
    assert await counts(gw) == (1, 1)
    for fields in ({"amount": "999999999999.99"}, {"amount": "12.5", "currency": "CNY"}):
        resp = await report(**fields)
        assert resp.status == 202, await resp.text()
    award = dumps(event(placed["arbitration_ref"], "award_issued", award_amount="1e400000"))
    arbitration = placed["secrets"]["sz-arbitration"]
    resp = await post(client, "sz-arbitration", award, signed_headers(arbitration, award))
    assert resp.status == 422 and "award_amount" in (await resp.json())["detail"]


async def test_the_scorecard_is_json_even_with_an_amount_stored_before_amounts_were_bounded(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    await accept(client, placed)
    async with gw.db.transaction() as tx:
        case = await tx.fetchone(
            "SELECT case_id, subject_token FROM assignments WHERE partner_id = 'acme-collect'"
        )
        at = datetime.now(UTC).isoformat()
        body = {"type": "payment_reported", "case_ref": placed["agency_ref"], "occurred_at": at,
                "package_id": None, "amount": "1E+400000"}
        await tx.execute(
            "INSERT INTO events (partner_id, case_ref, case_id, subject_token, type, occurred_at,"
            " received_at, source, webhook_id, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("acme-collect", placed["agency_ref"], case["case_id"], case["subject_token"],
             "payment_reported", at, at, "callback", "msg_before", json.dumps(body)),
        )
    from gateway.onboarding import tokens

    token = await tokens.create(gw, "auditor", "test", actor="test")
    auditor = {"Authorization": f"Bearer {token}"}
    resp = await client.get("/v1/partners/acme-collect/scorecard", headers=auditor)
    assert resp.status == 200
    card = strict_json(await resp.text())
    assert card["recovery_rate"] is None and card["cases"] == 1


def test_responses_refuse_nan_and_infinity() -> None:
    from gateway.http.routes import json_response

    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            json_response({"rate": value})
    assert json_response({"rate": 0.5}).text == '{"rate": 0.5}'


# -- signature headers ----------------------------------------------------------------------

REPEATED = {
    "webhook-id": "msg_other",
    "webhook-timestamp": str(int(time.time()) - 60),
    "webhook-signature": "v1," + base64.b64encode(bytes(32)).decode(),
}


@pytest.mark.parametrize("name", REPEATED, ids=list(REPEATED))
async def test_a_repeated_signature_header_is_400(
    name: str, client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    body = dumps(event(placed["agency_ref"], "accepted"))
    headers = list(signed_headers(placed["secrets"]["acme-collect"], body).items()) + [(name, REPEATED[name])]
    resp = await post(client, "acme-collect", body, headers)
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    assert name in (await resp.json())["detail"]
    assert await counts(gw) == (0, 0)


async def test_more_than_eight_signatures_are_refused_before_any_is_checked(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    body = dumps(event(placed["agency_ref"], "accepted"))
    old = "v1," + base64.b64encode(os.urandom(32)).decode()
    for more, status in (([], 202), (["v1a,AAAA"], 400), (["v1,"] * 1900, 400)):
        headers = signed_headers(placed["secrets"]["acme-collect"], body)  # a new webhook-id each
        signatures = " ".join(more + [old] * 7 + [headers["webhook-signature"]])
        resp = await post(client, "acme-collect", body, {**headers, "webhook-signature": signatures})
        assert resp.status == status, await resp.text()
        if status == 400:
            assert "at most 8" in (await resp.json())["detail"]
    assert await counts(gw) == (1, 1)


async def test_an_unknown_partner_is_answered_exactly_like_a_bad_signature(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    body = dumps(event(placed["agency_ref"], "accepted"))
    answers = set()
    for signature in ("v1," + base64.b64encode(os.urandom(32)).decode(),
                      "v1a," + base64.b64encode(os.urandom(64)).decode()):
        for partner in ("acme-collect", "nobody", "no-such-partner", "ACME", "a" * 70, "acme-collect."):
            headers = signed_headers(placed["secrets"]["acme-collect"], body)
            headers["webhook-signature"] = signature
            resp = await post(client, partner, body, headers)
            problem = await resp.json()
            assert problem.pop("request_id") == resp.headers["X-Request-Id"]  # each its own
            answers.add((resp.status, resp.content_type, json.dumps(problem, sort_keys=True)))
    assert len(answers) == 1, answers
    status, content_type, text = answers.pop()
    assert status == 401 and content_type == "application/problem+json"
    assert json.loads(text)["detail"].startswith("no valid signature")
    assert await counts(gw) == (0, 0)


async def test_a_forged_callback_is_refused_while_another_writer_holds_the_database(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    """The signature is checked before the report joins the writers: a forged one is
    answered at once, however long the database makes writers wait."""
    body = dumps(event(placed["agency_ref"], "accepted"))
    headers = {**signed_headers(placed["secrets"]["acme-collect"], body),
               "webhook-signature": "v1," + base64.b64encode(os.urandom(32)).decode()}
    other = await open_database(gw.settings.database_url)
    try:
        async with other.transaction() as tx:
            if tx.dialect == "postgresql":
                await tx.execute("LOCK TABLE partners IN ACCESS EXCLUSIVE MODE")
            # SQLite: this transaction holds the write lock (BEGIN IMMEDIATE).
            resp = await asyncio.wait_for(post(client, "acme-collect", body, headers), timeout=5)
            assert resp.status == 401
    finally:
        await other.close()
    assert await counts(gw) == (0, 0)


# -- reports the case's state does not allow ----------------------------------------------------


async def test_a_replayed_impossible_report_is_flagged_once(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    """Six copies of one signed report the case's state does not allow: one flag, one
    audit entry, one dedupe row; the copies are answered as replays and store nothing."""
    secret = placed["secrets"]["acme-collect"]
    promise = dumps(event(placed["agency_ref"], "promise_to_pay", amount="100.00", due="2026-12-31"))
    headers = signed_headers(secret, promise, msg_id="msg_too_early")
    details = []
    for _ in range(6):
        resp = await post(client, "acme-collect", promise, headers)
        assert resp.status == 409
        details.append((await resp.json())["detail"])
    assert "impossible" in details[0] and all("already received" in d for d in details[1:])
    assert await stored(gw, "SELECT COUNT(*) FROM violations") == 1
    assert await stored(gw, "SELECT COUNT(*) FROM audit_entries WHERE kind = 'violation'") == 1
    assert await counts(gw) == (0, 1)
    # A genuine breach on another case of the partner is the second violation, not the seventh.
    other = CASE.model_copy(update={"case_id": "C-REPLAY-2"})
    ref = (await placement.place(gw, other, "acme-collect", "collection", actor="test")).case_ref
    night = datetime.now(SHANGHAI).replace(hour=23, minute=10) - timedelta(days=1)
    for body in (dumps(event(ref, "accepted", at=night - timedelta(days=1))),
                 dumps(event(ref, "contact_attempt", at=night, channel="voice", target="debtor",
                             outcome="connected"))):
        resp = await post(client, "acme-collect", body, signed_headers(secret, body))
        assert resp.status == 202, await resp.text()
    # The agency gets numbers in clear, so its report names no number token: the
    # per-number cap flags that too.
    assert (await resp.json())["violations"] == ["cn.hours", "cn.attempts-per-number-daily"]
    assert (await registry.get(gw, "acme-collect")).status == "active"


async def test_protocol_flags_count_toward_automatic_suspension(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    """Each distinct impossible report is a violation of its own; the one that reaches
    the threshold (5 for the sample agency) suspends the partner."""
    secret = placed["secrets"]["acme-collect"]
    for n in range(5):
        body = dumps(event(placed["agency_ref"], "payment_reported", amount=f"{n + 1}.00"))
        resp = await post(client, "acme-collect", body, signed_headers(secret, body))
        assert resp.status == 409 and "impossible" in (await resp.json())["detail"]
    record = await registry.get(gw, "acme-collect")
    assert record.status == "suspended" and "5 violations" in record.status_reason
    assert await stored(gw, "SELECT COUNT(*) FROM audit_entries WHERE kind = 'partner_suspended'") == 1
