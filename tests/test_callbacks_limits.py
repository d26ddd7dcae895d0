"""Callbacks at the edges, over real HTTP: bodies that arrive in pieces or exceed the
limit, text that is too long, timestamps and dates out of range, unbounded amounts,
repeated or piled-up signature headers, unknown partners, replays of refused reports.
Each is taken in or refused with a 4xx problem, never a 5xx, and what a refusal stores
is stated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from gateway.core import Gateway
from gateway.http import create_app
from tests.callbacks import (
    URL,
    counts,
    dumps,
    event,
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
