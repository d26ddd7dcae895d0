"""Reports that arrive together share a transaction (gateway.storage.groups), yet each gets
its own answer, and a refused one leaves nothing behind, whatever the others do."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.audit.verifydb import verify_database
from gateway.cli.audit import workspace_vkey
from gateway.core import Gateway
from gateway.errors import Conflict, PolicyViolation, StorageError
from gateway.http import create_app
from gateway.placement import service as placement
from schemas.audit import TokenCreated
from schemas.case import Case
from tests.callbacks import dumps, event, signed_headers
from tests.helpers import dial_by_token, sample_case

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


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds (ten seconds at most)."""

    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(wait(), timeout=10)


async def taken(gw: Gateway, count: int) -> None:
    """Until ``count`` jobs are queued or being written (where jobs run alone, in their
    callers' tasks, there is no queue to wait for)."""
    if gw.db.group_most > 1:
        await until(lambda: gw.writer.queued >= count)


async def answered(answers: list[Any]) -> list[Any]:
    """The answers, in order; a test fails rather than hangs if one never comes."""
    return await asyncio.wait_for(asyncio.gather(*answers), timeout=30)


async def rows(gw: Gateway, table: str) -> int:
    async with gw.db.transaction() as tx:
        return int(await tx.fetchval(f"SELECT COUNT(*) FROM {table}"))


async def test_reports_arriving_together_are_answered_one_by_one_and_only_the_good_ones_stored(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    await dial_by_token(gw, tmp_path, "acme-collect.toml", "collection")
    agency = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    mobile = agency.claims["data"]["debtor"]["phones"][0]["number"]
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
                    target="debtor", outcome="no_answer", number_token=mobile))
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
    forged = good[0].replace("no_answer", "connected")
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
        # All but the forged one, which is refused before it joins the writers: it is
        # answered while they wait.
        await taken(gw, len(requests) - 1)
        assert (await asyncio.wait_for(asyncio.shield(answers[3]), timeout=10)).status == 401
    statuses = [answer.status for answer in await answered(answers)]

    assert statuses == [expected for *_, expected in requests]
    if gw.db.group_most > 1:
        # The first report's group waited for the lock; all the others came meanwhile.
        assert gw.writer.groups - groups_before == 2
    else:
        # A transaction each, committed for the good reports and the impossible one.
        assert gw.writer.groups - groups_before == len(good) + 1
    # Only the six good reports were stored; the refused ones left no event and no
    # dedupe row (the forged one may be sent again, signed right), but for the
    # impossible one's, kept with its flag.
    assert await rows(gw, "events") == events_before + len(good)
    assert await rows(gw, "callbacks") == callbacks_before + len(good) + 1
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
    gw: Gateway, client: TestClient, caplog: pytest.LogCaptureFixture
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
        await taken(gw, len(bodies) - 1)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        problems = [(r.status, await r.json()) for r in await answered(answers)]
    replies = [(status, problem["detail"]) for status, problem in problems]
    # The invalid body is refused before it joins the writers; every report of the
    # group hears that nothing was stored.
    assert [status for status, _ in replies] == [500, 422, 500, 500]
    assert "complaint.summary" in replies[1][1]
    # A server error says only its request id; the log says why, under that id.
    logged = [r.getMessage() for r in caplog.records]
    for status, problem in problems:
        if status == 500:
            assert problem["detail"].startswith("internal error") and "audit" not in problem["detail"]
            assert any(problem["request_id"] in line and "audit log tree state" in line for line in logged)
    assert await rows(gw, "events") == events_before
    assert await rows(gw, "callbacks") == callbacks_before


# -- the group writer itself, with jobs of the tests' own, on SQLite (where it groups) --

TOKEN = (
    "INSERT INTO api_tokens (id, role, secret_hash, label, created_at) VALUES (?, 'auditor', 'x', ?, 'now')"
)


@pytest.fixture
async def sqlite_gw(onboarded: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The workspace's own SQLite database, whatever backend the suite runs against."""
    from gateway.config import DATABASE_ENV_VAR, load_settings

    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    async with await Gateway.open(load_settings(onboarded)) as gateway:
        yield gateway


def token_job(name: str, *, fail: bool = False, gate: asyncio.Event | None = None) -> Any:
    """A job that stores an api token and its audit entry, then fails if asked."""

    async def job(tx: Any, entries: list[Any]) -> str:
        if gate is not None:
            await gate.wait()
        await tx.execute(TOKEN, (name, name))
        entries.append(TokenCreated(at="2026-12-01T00:00:00.000000Z", actor="test", role="auditor",
                                    token_id=name))
        if fail:
            raise Conflict(f"{name} refused after writing")
        return name

    return job


async def tokens(gw: Gateway) -> tuple[list[str], list[str]]:
    async with gw.db.transaction() as tx:
        stored = [r["id"] for r in await tx.fetchall("SELECT id FROM api_tokens ORDER BY id")]
        leaves = [r["leaf"] for r in await tx.fetchall(
            "SELECT leaf FROM audit_entries WHERE kind = 'token_created' ORDER BY idx")]
    return stored, [json.loads(leaf)["token_id"] for leaf in leaves]


async def grouped(gw: Gateway, jobs: list[Any]) -> list[Any]:
    """Run ``jobs`` as one group (they queue while another writer holds the lock)."""
    with writers_held(gw):
        answers = [asyncio.ensure_future(gw.writer.run(job)) for job in jobs]
        await taken(gw, len(jobs))
    return await asyncio.gather(*answers, return_exceptions=True)


async def test_a_job_that_fails_after_writing_leaves_nothing_and_its_siblings_stand(
    sqlite_gw: Gateway,
) -> None:
    results = await grouped(sqlite_gw, [token_job("a"), token_job("b", fail=True), token_job("c")])
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], Conflict)
    assert await tokens(sqlite_gw) == (["a", "c"], ["a", "c"])  # neither b's row nor its entry
    assert sqlite_gw.writer.groups == 1


async def test_a_transaction_lost_under_a_job_fails_the_whole_group(sqlite_gw: Gateway) -> None:
    async def rolls_back(tx: Any, entries: list[Any]) -> None:
        # As SQLite does by itself on some I/O and memory errors: the transaction is gone.
        await tx.execute("ROLLBACK")
        raise StorageError("database error: disk I/O error")

    results = await grouped(sqlite_gw, [token_job("a"), rolls_back, token_job("c")])
    assert all(isinstance(r, StorageError) for r in results), results
    # Nothing written after the loss either (c would have gone in without a transaction).
    assert await tokens(sqlite_gw) == ([], [])


async def test_a_caller_cancelled_once_its_job_began_is_told_its_outcome(sqlite_gw: Gateway) -> None:
    writer = sqlite_gw.writer
    with writers_held(sqlite_gw):
        first = asyncio.ensure_future(writer.run(token_job("a")))
        second = asyncio.ensure_future(writer.run(token_job("b")))
        await until(lambda: writer.writing == 2)  # begun: a group, waiting for the lock
        first.cancel()  # Ctrl-C, say
    assert await asyncio.wait_for(first, timeout=10) == "a"  # what was written is known
    assert await asyncio.wait_for(second, timeout=10) == "b"
    assert await tokens(sqlite_gw) == (["a", "b"], ["a", "b"])


async def test_a_caller_cancelled_while_its_job_waits_takes_it_back(sqlite_gw: Gateway) -> None:
    writer = sqlite_gw.writer
    with writers_held(sqlite_gw):
        begun = asyncio.ensure_future(writer.run(token_job("a")))
        await until(lambda: writer.writing == 1)
        waiting = asyncio.ensure_future(writer.run(token_job("b")))
        await until(lambda: writer.queued == 2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert writer.queued == 1
    assert await asyncio.wait_for(begun, timeout=10) == "a"
    assert await tokens(sqlite_gw) == (["a"], ["a"])


async def test_close_writes_what_is_queued_then_takes_no_more(sqlite_gw: Gateway) -> None:
    with writers_held(sqlite_gw):
        answers = [asyncio.ensure_future(sqlite_gw.writer.run(token_job(n))) for n in "abc"]
        await taken(sqlite_gw, 3)
    await sqlite_gw.writer.close()
    assert [a.result() for a in answers] == ["a", "b", "c"]
    with pytest.raises(StorageError, match="shutting down"):
        await sqlite_gw.writer.run(token_job("d"))
    assert await tokens(sqlite_gw) == (["a", "b", "c"], ["a", "b", "c"])


async def test_a_cancelled_writer_fails_what_it_held_and_the_next_job_gets_a_new_one(
    sqlite_gw: Gateway,
) -> None:
    writer = sqlite_gw.writer
    with writers_held(sqlite_gw):
        held = [asyncio.ensure_future(writer.run(token_job(n))) for n in "ab"]
        await until(lambda: writer.writing == 2)  # a group, waiting for the lock
        later = asyncio.ensure_future(writer.run(token_job("c")))
        await until(lambda: writer.queued == 3)  # queued behind it
        for task in asyncio.all_tasks():
            if task.get_coro().__qualname__ == "GroupWriter._write_all":  # type: ignore[union-attr]
                task.cancel()  # as at shutdown
    for answer in [*held, later]:
        with pytest.raises(StorageError, match="writer stopped"):
            await asyncio.wait_for(answer, timeout=10)
    assert await asyncio.wait_for(writer.run(token_job("d")), timeout=10) == "d"
    assert await tokens(sqlite_gw) == (["d"], ["d"])


async def test_placements_arriving_together_share_a_transaction_and_a_refusal_stays_alone(
    gw: Gateway,
) -> None:
    cases = [CASE.model_copy(update={"case_id": f"C-GROUP-{i}"}) for i in range(4)]
    calls = [placement.place(gw, case, "acme-collect", "collection", actor="test") for case in cases]
    # Not in acme-collect's contract: refused, with nothing of it written.
    calls.insert(2, placement.place(gw, cases[0], "acme-collect", "arbitration", actor="test"))
    groups_before = gw.writer.groups
    with writers_held(gw):
        answers = [asyncio.ensure_future(call) for call in calls]
        await taken(gw, len(calls))
    results = await asyncio.wait_for(asyncio.gather(*answers, return_exceptions=True), timeout=30)

    refused = results.pop(2)
    assert isinstance(refused, PolicyViolation), refused
    assert all(isinstance(r, placement.Placement) for r in results), results
    assert len({r.package_id for r in results}) == len(cases)
    if gw.db.group_most > 1:
        # All in one transaction, or two if the first began before the others came.
        assert gw.writer.groups - groups_before in (1, 2)
    else:
        assert gw.writer.groups - groups_before == len(cases)
    async with gw.db.transaction() as tx:
        packages = await tx.fetchval("SELECT COUNT(*) FROM packages")
        disclosures = await tx.fetchval("SELECT COUNT(*) FROM audit_entries WHERE kind = 'disclosure'")
    assert packages == disclosures == len(cases)
    summary = await verify_database(gw.db, workspace_vkey(gw), workers=1)
    assert summary.entries > len(cases)
