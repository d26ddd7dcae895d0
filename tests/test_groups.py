"""Reports that arrive together share a transaction (gateway.groups), yet each gets
its own answer, and a refused one leaves nothing behind, whatever the others do."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import placement
from gateway.audit.query import verify_database
from gateway.cli_audit import workspace_vkey
from gateway.core import Gateway
from gateway.http import create_app
from schemas.case import Case
from tests.callbacks import dumps, event, signed_headers
from tests.helpers import sample_case

CASE = Case.model_validate_json(sample_case().read_text())
URL = "/v1/partners/{}/callbacks"


@pytest.fixture
async def client(gw: Gateway, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(gw.settings, gateway=gw))


@contextmanager
def writers_held(gw: Gateway) -> Iterator[None]:
    """On SQLite, another process's writer holds the lock meanwhile, so the reports
    queue up behind the first group instead of being written one by one as they come."""
    if gw.db.dialect != "sqlite":
        yield
        return
    other = sqlite3.connect(gw.settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
    finally:
        other.close()  # its transaction, which wrote nothing, ends with it


async def taken(gw: Gateway, count: int) -> None:
    """Until ``count`` jobs are queued or being written (the loop runs meanwhile)."""
    async def wait() -> None:
        while gw.writer.queued < count:
            await asyncio.sleep(0)

    await asyncio.wait_for(wait(), timeout=10)


async def rows(gw: Gateway, table: str) -> int:
    async with gw.db.transaction() as tx:
        return int(await tx.fetchval(f"SELECT COUNT(*) FROM {table}"))


async def test_reports_arriving_together_are_answered_one_by_one_and_only_the_good_ones_stored(
    gw: Gateway, client: TestClient
) -> None:
    agency = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    other_case = CASE.model_copy(update={"case_id": "C-GROUP-2"})
    unaccepted = await placement.place(gw, other_case, "acme-collect", "collection", actor="test")
    arbitration = await placement.place(gw, CASE, "sz-arbitration", "arbitration", actor="test")
    secret = gw.keys.add_webhook_secret("acme-collect").read_text().split()[-1]
    now = datetime.now(UTC)
    noon = now.replace(hour=4, minute=0, second=0, microsecond=0)  # 12:00 in Shanghai
    if noon > now:
        noon -= timedelta(days=1)

    accepted = dumps(event(agency.case_ref, "accepted", now - timedelta(days=2)))
    first = await client.post(URL.format("acme-collect"), data=io.BytesIO(accepted.encode()),
                              headers=signed_headers(secret, accepted, msg_id="msg_first"))
    assert first.status == 202
    events_before, callbacks_before = await rows(gw, "events"), await rows(gw, "callbacks")

    good = [
        dumps(event(agency.case_ref, "contact_attempt", noon - timedelta(minutes=10 * i), channel="voice",
                    target="debtor", outcome="no_answer", number_token=f"tok_{i}"))
        for i in range(6)
    ]
    requests: list[tuple[str, str, dict[str, str], int]] = [
        ("acme-collect", body, signed_headers(secret, body), 202) for body in good
    ]
    replay = accepted
    requests.append(("acme-collect", replay, signed_headers(secret, replay, msg_id="msg_first"), 409))
    foreign = dumps(event(arbitration.case_ref, "contact_attempt", noon, channel="voice",
                          target="debtor", outcome="no_answer"))
    requests.append(("acme-collect", foreign, signed_headers(secret, foreign), 403))
    impossible = dumps(event(unaccepted.case_ref, "promise_to_pay", noon, amount="100.00",
                             due=(noon + timedelta(days=7)).date().isoformat()))
    requests.append(("acme-collect", impossible, signed_headers(secret, impossible), 409))
    forged = good[0].replace("tok_0", "tok_forged")
    requests.append(("acme-collect", forged, signed_headers("whsec_" + "A" * 32, forged), 401))
    requests.insert(3, requests.pop())  # refusals among the good ones, not all at the end

    groups_before = gw.writer.groups
    with writers_held(gw):
        answers = [
            asyncio.ensure_future(
                client.post(URL.format(partner), data=io.BytesIO(body.encode()), headers=headers)
            )
            for partner, body, headers, _ in requests
        ]
        await taken(gw, len(requests))
    statuses = [(await answer).status for answer in answers]

    assert statuses == [expected for *_, expected in requests]
    # The impossible report's flag is written on its own, after its group.
    if gw.db.group_most > 1:
        # The first report's group waited for the lock; all the others came meanwhile.
        assert gw.writer.groups - groups_before == 2 + 1
    else:
        assert gw.writer.groups - groups_before == len(requests) + 1
    # Only the six good reports were stored; the refused ones left no event and no
    # dedupe row (the forged one may be sent again, signed right).
    assert await rows(gw, "events") == events_before + len(good)
    assert await rows(gw, "callbacks") == callbacks_before + len(good)
    async with gw.db.transaction() as tx:
        rules = [r["rule"] for r in await tx.fetchall("SELECT rule FROM violations ORDER BY id")]
        kinds = Counter(r["kind"] for r in await tx.fetchall("SELECT kind FROM audit_entries"))
    assert rules == ["protocol.impossible-transition"]
    assert kinds["callback"] == 1 + len(good)
    assert kinds["violation"] == 1
    # Raises, naming the index, if the group's entries and tree disagree.
    summary = await verify_database(gw.db, workspace_vkey(gw), workers=1)
    assert summary.entries == sum(kinds.values())


async def test_a_group_that_cannot_commit_stores_nothing_of_any_of_its_reports(
    gw: Gateway, client: TestClient
) -> None:
    agency = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    secret = gw.keys.add_webhook_secret("acme-collect").read_text().split()[-1]
    accepted = dumps(event(agency.case_ref, "accepted", datetime.now(UTC) - timedelta(hours=1)))
    first = await client.post(URL.format("acme-collect"), data=io.BytesIO(accepted.encode()),
                              headers=signed_headers(secret, accepted))
    assert first.status == 202
    # The audit log was changed behind the gateway's back (an entry added): appending
    # would bury the change, so the group's audit append refuses, and with it the group.
    async with gw.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO audit_entries (idx, leaf, leaf_hash, kind, partner_id, case_token, at)"
            " SELECT idx + 1, leaf, leaf_hash, kind, partner_id, case_token, at FROM audit_entries"
            " WHERE idx = (SELECT MAX(idx) FROM audit_entries)"
        )
    bodies = [
        dumps(event(agency.case_ref, "complaint", datetime.now(UTC), summary=f"complaint {i}"))
        for i in range(3)
    ]
    bodies.insert(1, dumps(event(agency.case_ref, "complaint", datetime.now(UTC))))  # no summary
    events_before, callbacks_before = await rows(gw, "events"), await rows(gw, "callbacks")
    with writers_held(gw):
        answers = [
            asyncio.ensure_future(client.post(URL.format("acme-collect"), data=io.BytesIO(b.encode()),
                                              headers=signed_headers(secret, b)))
            for b in bodies
        ]
        await taken(gw, len(bodies))
    replies = [(r.status, (await r.json())["detail"]) for r in [await answer for answer in answers]]
    # Each good report hears why nothing was stored; the bad one keeps its own answer.
    assert [status for status, _ in replies] == [500, 422, 500, 500]
    assert all("audit log tree state" in detail for status, detail in replies if status == 500)
    assert "complaint.summary" in replies[1][1]
    assert await rows(gw, "events") == events_before
    assert await rows(gw, "callbacks") == callbacks_before
