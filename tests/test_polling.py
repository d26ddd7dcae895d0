"""Polling a partner's status feed over real HTTP: same pipeline, cursor kept, no double apply."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.core import Gateway
from gateway.demo.partners import ThrowawayCA
from gateway.inbound import poller
from gateway.onboarding import registry
from gateway.placement import service as placement
from schemas.case import Case
from tests.callbacks import event
from tests.helpers import copy_profile, sample_case


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
