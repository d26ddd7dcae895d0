"""Polling a partner's status feed over real HTTP: same pipeline, cursor kept, no double apply."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.core import Gateway
from gateway.demo.partners import ThrowawayCA
from gateway.http import create_app
from gateway.http.appkeys import WORKERS
from gateway.inbound import poller
from gateway.onboarding import registry
from gateway.placement import recall
from gateway.placement import service as placement
from schemas.case import Case
from tests.callbacks import event
from tests.helpers import copy_profile, sample_case, write_partner_keys


async def feed_from(gw: Gateway, aiohttp_server: Any, tmp_path: Path, feed: Any) -> None:
    """Serve `feed` at /status on 127.0.0.1 over TLS (a throwaway CA) and point
    acme-collect's status feed at it."""
    app = web.Application()
    app.router.add_get("/status", feed)
    ca = ThrowawayCA(tmp_path / "ca")
    server = await aiohttp_server(app, ssl=ca.server_context("feed"))
    profile = copy_profile(
        "acme-collect.toml",
        tmp_path,
        {
            'endpoint = "https://127.0.0.1:18441"': f'endpoint = "https://127.0.0.1:{server.port}"',
            'packages_path = "/packages"': (
                f'packages_path = "/packages"\nstatus_feed_path = "/status"\nca_file = "{ca.ca_file}"'
            ),
        },
    )
    await registry.add(gw, profile, actor="t", update=True)


async def test_poll_feeds_the_pipeline_and_resumes_from_cursor(
    gw: Gateway, aiohttp_server: Any, tmp_path: Path
) -> None:
    placed = await placement.place(
        gw, Case.model_validate_json(sample_case().read_text()), "acme-collect", "collection", actor="t"
    )
    ref = placed.case_ref
    pages = {
        None: {
            "events": [
                {"id": "e1", **event(ref, "accepted")},
                {"id": "e2", **event(ref, "complaint", summary="rude")},
            ],
            "cursor": "c2",
        },
        "c2": {
            "events": [
                {"id": "e2", **event(ref, "complaint", summary="rude")},
                {"id": "e3", **event(ref, "bogus")},
            ],
            "cursor": "c3",
        },
        "c3": {"events": [], "cursor": "c3"},
    }
    seen: list[str | None] = []

    async def feed(request: web.Request) -> web.Response:
        since = request.query.get("since")
        seen.append(since)
        return web.json_response(pages[since])

    await feed_from(gw, aiohttp_server, tmp_path, feed)

    first = await poller.poll_once(gw)
    second = await poller.poll_once(gw)
    third = await poller.poll_once(gw)
    acme = [s for s in first + second + third if s.partner == "acme-collect"]
    assert [(s.accepted, s.duplicates, s.refused) for s in acme] == [
        (2, 0, 0),
        (0, 1, 1),
        (0, 0, 0),
    ]
    assert seen == [None, "c2", "c3"]
    unreachable = [s for s in first if s.partner == "sz-arbitration"]
    assert unreachable[0].error and "Cannot connect" in unreachable[0].error
    async with gw.db.transaction() as tx:
        events = await tx.fetchall("SELECT type, source FROM events ORDER BY id")
        state = await tx.fetchval("SELECT state FROM assignments WHERE case_ref = ?", (ref,))
    assert events == [{"type": "accepted", "source": "poll"}, {"type": "complaint", "source": "poll"}]
    assert state == "active"


async def test_a_failing_feed_is_reported_and_logged_without_personal_data(
    gw: Gateway, aiohttp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def feed(request: web.Request) -> web.Response:
        text = "feed unavailable; last filing: respondent ID 110101199003071234, phone 13812341999"
        return web.Response(status=503, text=text + ", contact ops@partner.example")

    await feed_from(gw, aiohttp_server, tmp_path, feed)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        [acme] = [s for s in await poller.poll_once(gw) if s.partner == "acme-collect"]
    said = "HTTP 503: feed unavailable; last filing: respondent ID <number>, phone <number>, contact <email>"
    assert acme.error and said in acme.error
    logged = [r.getMessage() for r in caplog.records if "poll acme-collect failed" in r.getMessage()]
    assert logged and all(said in line for line in logged)
    for secret in ("110101199003071234", "13812341999", "ops@partner"):
        assert secret not in acme.error and secret not in caplog.text


async def test_a_feed_over_plain_http_stored_before_the_rule_is_not_polled(
    gw: Gateway, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Its events are unsigned: over http:// anyone on the path could write them. A
    profile onboarded before https was required for feeds is reported, not polled."""
    asked: list[str] = []

    async def feed(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"events": [], "cursor": None})

    app = web.Application()
    app.router.add_get("/status", feed)
    server = await aiohttp_server(app)
    record = await registry.get(gw, "acme-collect")
    stored = record.profile.model_copy(
        update={
            "endpoint": f"http://127.0.0.1:{server.port}",
            "adapter_config": {"status_feed_path": "/status", "allow_insecure_http": True},
        }
    )
    async with gw.db.transaction() as tx:
        await tx.execute(
            "UPDATE partners SET profile = ? WHERE id = ?", (stored.model_dump_json(), "acme-collect")
        )
    with caplog.at_level(logging.WARNING, logger="gateway"):
        [acme] = [s for s in await poller.poll_once(gw) if s.partner == "acme-collect"]
    assert asked == []
    assert acme.error and "status feed /status must be read over https://" in acme.error
    assert "acme-collect" in caplog.text and "not polled" in caplog.text


async def second_agency(gw: Gateway, aiohttp_server: Any, tmp_path: Path, feed: Any) -> str:
    """A second agency, "acme-two", whose feed is `feed`, with the sample case placed
    with it; return the case_ref it knows the case by."""
    app = web.Application()
    app.router.add_get("/status", feed)
    ca = ThrowawayCA(tmp_path / "ca-two")
    server = await aiohttp_server(app, ssl=ca.server_context("feed"))
    write_partner_keys(Path(gw.settings.keys_dir), "acme-two", "P-256")
    profile = copy_profile(
        "acme-collect.toml",
        tmp_path / "two",
        {
            'id = "acme-collect"': 'id = "acme-two"',
            "partners/acme-collect.jwks.json": "partners/acme-two.jwks.json",
            'endpoint = "https://127.0.0.1:18441"': f'endpoint = "https://127.0.0.1:{server.port}"',
            'packages_path = "/packages"': (
                f'packages_path = "/packages"\nstatus_feed_path = "/status"\nca_file = "{ca.ca_file}"'
            ),
        },
    )
    await registry.add(gw, profile, actor="t")
    case = Case.model_validate_json(sample_case().read_text())
    return (await placement.place(gw, case, "acme-two", "collection", actor="t")).case_ref


async def nested_too_deep(request: web.Request) -> web.Response:
    return web.Response(text='{"events": ' + "[" * 200_000, content_type="application/json")


async def test_a_feed_nested_too_deep_is_a_malformed_feed_and_the_others_are_polled(
    gw: Gateway, aiohttp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await feed_from(gw, aiohttp_server, tmp_path, nested_too_deep)
    (tmp_path / "two").mkdir()

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({"events": [{"id": "t1", **event(ref, "accepted")}], "cursor": "t1"})

    ref = await second_agency(gw, aiohttp_server, tmp_path, fine)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        stats = {s.partner: s for s in await poller.poll_once(gw)}
    assert stats["acme-collect"].error and "status feed is not" in stats["acme-collect"].error
    assert stats["acme-two"].accepted == 1
    [logged] = [r for r in caplog.records if "poll acme-collect failed" in r.getMessage()]
    assert logged.levelno == logging.WARNING and logged.exc_info is None
    async with gw.db.transaction() as tx:
        assert await tx.fetchval("SELECT cursor FROM poll_cursors WHERE partner_id = 'acme-collect'") is None


async def test_gateway_poll_reports_the_malformed_feed_and_polls_the_others(
    gw: Gateway, aiohttp_server: Any, tmp_path: Path
) -> None:
    await feed_from(gw, aiohttp_server, tmp_path, nested_too_deep)
    (tmp_path / "two").mkdir()

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({"events": [{"id": "t1", **event(ref, "accepted")}], "cursor": "t1"})

    ref = await second_agency(gw, aiohttp_server, tmp_path, fine)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(gw.settings.base_dir), "poll", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    rows = {r["partner"]: r for r in json.loads(out)}
    assert "status feed is not" in rows["acme-collect"]["error"] and rows["acme-two"]["accepted"] == 1
    assert "Traceback" not in err.decode()


async def test_the_served_poller_outlives_a_malicious_feed_and_a_dead_task_is_reported(
    gw: Gateway, aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await feed_from(gw, aiohttp_server, tmp_path, nested_too_deep)
    (tmp_path / "two").mkdir()
    polled = asyncio.Event()

    async def fine(request: web.Request) -> web.Response:
        polled.set()
        return web.json_response({"events": [], "cursor": None})

    await second_agency(gw, aiohttp_server, tmp_path, fine)
    app = create_app(gw.settings, gateway=gw, workers=True)
    client = await aiohttp_client(app)
    await asyncio.wait_for(polled.wait(), 30)
    await asyncio.sleep(0.1)  # the poll of acme-two stores its cursor
    assert app[WORKERS].dead() == []
    assert (await client.get("/healthz")).status == 200

    async def doomed() -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.CRITICAL, logger="gateway"):
        await asyncio.gather(app[WORKERS].start("doomed", doomed()), return_exceptions=True)
    assert app[WORKERS].dead() == ["doomed"]
    assert any("background task doomed died: RuntimeError: a bug" in r.getMessage() for r in caplog.records)
    answer = await client.get("/healthz")
    assert answer.status == 503 and "doomed" in (await answer.json())["detail"]


async def test_a_running_poller_follows_profile_changes_and_offboarding(
    gw: Gateway, aiohttp_server: Any, tmp_path: Path
) -> None:
    """The feed moves to another path (a profile update), then the partner is
    offboarded: the running poller reads the new path, then nothing."""
    hits: list[str] = []

    async def feed(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"events": [], "cursor": None})

    app = web.Application()
    app.router.add_get("/status", feed)
    app.router.add_get("/status-v2", feed)
    ca = ThrowawayCA(tmp_path / "ca")
    server = await aiohttp_server(app, ssl=ca.server_context("feed"))
    replace = {
        'endpoint = "https://127.0.0.1:18441"': f'endpoint = "https://127.0.0.1:{server.port}"',
        'packages_path = "/packages"': (
            'packages_path = "/packages"\nstatus_feed_path = "/status"\npoll_interval = 0.1\n'
            f'ca_file = "{ca.ca_file}"'
        ),
    }
    profile = copy_profile("acme-collect.toml", tmp_path, replace)
    await registry.add(gw, profile, actor="t", update=True)
    stop = asyncio.Event()
    running = asyncio.create_task(poller.run(gw, stop))
    try:
        await until(lambda: "/status" in hits)
        profile.write_text(profile.read_text().replace('"/status"', '"/status-v2"'))
        await registry.add(gw, profile, actor="t", update=True)
        await until(lambda: "/status-v2" in hits)
        await recall.offboard(gw, "acme-collect", "contract ended", actor="t")
        await asyncio.sleep(1.5)  # a round of the poller, which reads the registry
        seen = len(hits)
        await asyncio.sleep(2.5)  # a partner still polled would be polled twice more
        assert len(hits) == seen, "an offboarded partner's feed is still read"
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)


async def until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


ERASED = {"deleted_at": "2026-01-01T00:00:00+00:00", "statement": "erased"}


async def test_a_suspended_partners_feed_is_heard_on_recalled_cases_only_an_offboarded_ones_not_at_all(
    gw: Gateway, aiohttp_server: Any, tmp_path: Path
) -> None:
    case = Case.model_validate_json(sample_case().read_text())
    active = await placement.place(gw, case, "acme-collect", "collection", actor="t")
    other = case.model_copy(update={"case_id": "C-2026-2002"})
    recalled = await placement.place(gw, other, "acme-collect", "collection", actor="t")
    page: dict[str, Any] = {"events": [], "cursor": None}

    async def feed(request: web.Request) -> web.Response:
        return web.json_response(page)

    await feed_from(gw, aiohttp_server, tmp_path, feed)
    record = await registry.get(gw, "acme-collect")
    adapter = poller.pollable(gw, record)  # as a running poller holds it
    assert adapter is not None
    async with adapter:
        page["events"] = [{"id": "a1", **event(active.case_ref, "accepted")}]
        assert (await poller.poll_partner(gw, adapter)).accepted == 1
        await recall.recall(gw, other.case_id, "acme-collect", "complaint review", actor="t")
        await registry.set_status(gw, "acme-collect", "suspended", reason="review", actor="t")
        page["events"] = [
            {"id": "s1", **event(active.case_ref, "complaint", summary="rude")},
            {"id": "s2", **event(recalled.case_ref, "deletion_attested", **ERASED)},
        ]
        stats = await poller.poll_partner(gw, adapter)
        assert (stats.accepted, stats.refused) == (1, 1)
        await registry.set_status(gw, "acme-collect", "active", reason="review done", actor="t")
        await recall.offboard(gw, "acme-collect", "contract ended", actor="t")
        page["events"] = [{"id": "o1", **event(active.case_ref, "deletion_attested", **ERASED)}]
        stats = await poller.poll_partner(gw, adapter)
        assert (stats.accepted, stats.refused) == (0, 1)
    assert poller.pollable(gw, await registry.get(gw, "acme-collect")) is None
    async with gw.db.transaction() as tx:
        taken = await tx.fetchall("SELECT webhook_id, type FROM events ORDER BY id")
    assert taken == [
        {"webhook_id": "poll:a1", "type": "accepted"},
        {"webhook_id": "poll:s2", "type": "deletion_attested"},
    ]
