"""Prometheus metrics and readiness over real HTTP: behind a token on the API port, on
a port of their own for `gateway dispatch`, gauges read from the database; /readyz
names what fails."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit import log as audit_log
from gateway.clock import isotime
from gateway.core import Gateway
from gateway.delivery import breaker
from gateway.delivery.dispatch import Dispatcher
from gateway.http import create_app
from gateway.http.appkeys import WORKERS
from gateway.onboarding import tokens
from gateway.placement import recall
from gateway.placement import service as placement
from gateway.storage.migrations import MIGRATIONS
from schemas.case import Case
from tests.callbacks import dumps, event, signed_headers
from tests.helpers import reap, sample_case
from tests.partners import PARTNER, Clock, agency_workspace, place_many
from tests.test_serve import free_port

CASE = Case.model_validate_json(sample_case().read_text())
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: TestClient, token: str) -> Samples:
    answer = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200, await answer.text()
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await answer.text())


async def test_delivery_metrics_and_outbox_gauges(tmp_path: Path, aiohttp_client: Any) -> None:
    clock = Clock()
    clock.now = datetime.now(UTC)
    async with agency_workspace(tmp_path, limits="rate_per_second = 1000", clock=clock) as (gw, agency, _):
        client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
        assert (await client.get("/metrics")).status == 401
        token = await tokens.create(gw, "auditor", "prometheus", actor="test")
        before = await scrape(client, token)
        await place_many(gw, 3)
        clock.advance(30)
        queued = await scrape(client, token)
        assert value(queued, "gateway_outbox_packages", partner=PARTNER, state="queued") == 3
        age = value(queued, "gateway_outbox_oldest_due_age_seconds", partner=PARTNER, state="queued")
        assert 30 <= age < 31

        agency.script.extend(["500"])
        await Dispatcher(gw).run_once()
        after = await scrape(client, token)
        delta = {
            outcome: value(after, "gateway_deliveries_total", partner=PARTNER, outcome=outcome)
            - value(before, "gateway_deliveries_total", partner=PARTNER, outcome=outcome)
            for outcome in ("delivered", "retry")
        }
        assert delta == {"delivered": 2, "retry": 1}
        count = value(after, "gateway_delivery_attempt_seconds_count", partner=PARTNER) - value(
            before, "gateway_delivery_attempt_seconds_count", partner=PARTNER
        )
        assert count == 3
        assert value(after, "gateway_outbox_packages", partner=PARTNER, state="retry_wait") == 1
        assert value(after, "gateway_breaker_state", partner=PARTNER, state="closed") == 1

        async with gw.db.transaction() as tx:
            policy = breaker.BreakerPolicy(min_attempts=1, failure_rate=0.5, cooldown_seconds=600)
            earlier = isotime(clock.now - timedelta(seconds=1))
            await breaker.record(tx, PARTNER, [breaker.Result("failure", None, earlier)], clock.now, policy)
        opened = await scrape(client, token)
        assert value(opened, "gateway_breaker_state", partner=PARTNER, state="open") == 1
        assert value(opened, "gateway_breaker_state", partner=PARTNER, state="closed") == 0
        assert value(opened, "gateway_partner_status", partner=PARTNER, status="active") == 1
        assert value(opened, "gateway_audit_log_entries") >= 4


async def test_callback_violation_suspension_attestation_and_audit_metrics(
    gw: Gateway, aiohttp_client: Any
) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    token = await tokens.create(gw, "operator", "prometheus", actor="test")
    before = await scrape(client, token)
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    secret = gw.keys.add_webhook_secret("acme-collect").read_text().split()[-1]
    night = datetime.now(UTC).replace(hour=15, minute=0) - timedelta(days=1)  # 23:00 in Shanghai
    reports = [event(placed.case_ref, "accepted", at=night - timedelta(hours=1))] + [
        event(placed.case_ref, "contact_attempt", at=night + timedelta(minutes=n),
              channel="sms", target="debtor", outcome="left_message")
        for n in range(5)
    ]  # fmt: skip
    url = "/v1/partners/{}/callbacks"
    for report in reports:
        body = dumps(report)
        data = io.BytesIO(body.encode())
        headers = signed_headers(secret, body)
        answer = await client.post(url.format("acme-collect"), data=data, headers=headers)
        assert answer.status == 202
    body = dumps(reports[0])
    bad = {**signed_headers(secret, body), "webhook-signature": "v1,AAAA"}
    assert (await client.post(url.format("acme-collect"), data=body.encode(), headers=bad)).status == 401
    headers = signed_headers(secret, body)
    nobody = await client.post(url.format("no-such"), data=body.encode(), headers=headers)
    assert nobody.status == 401  # as a bad signature is: which ids exist is nobody's to learn

    after = await scrape(client, token)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("gateway_callbacks_total", partner="acme-collect", status="202") == 6
    # Refused before the signature proved who sent them: counted under no partner's name.
    assert grew("gateway_callbacks_total", partner="unknown", status="401") == 2
    assert grew("gateway_violations_total", partner="acme-collect", rule="cn.hours") == 5
    assert grew("gateway_partner_suspensions_total", partner="acme-collect", by="automatic") == 1
    assert value(after, "gateway_partner_status", partner="acme-collect", status="suspended") == 1
    route = "/v1/partners/{partner_id}/callbacks"
    assert grew("gateway_http_request_seconds_count", route=route, method="POST") == 8

    await recall.recall(gw, CASE.case_id, "acme-collect", "debt sold", actor="test")
    async with gw.db.transaction() as tx:
        await tx.execute("UPDATE assignments SET deletion_due = '2026-01-01T00:00:00.000000Z'")
    overdue = await scrape(client, token)
    assert value(overdue, "gateway_attestations_overdue", partner="acme-collect") == 1
    size = value(overdue, "gateway_audit_log_entries")
    assert size > 10 and value(overdue, "gateway_audit_checkpoint_size") == 0
    assert value(overdue, "gateway_audit_checkpoint_lag_seconds") > 0
    await audit_log.checkpoint_now(gw.db, gw.audit_signer)
    signed = await scrape(client, token)
    assert value(signed, "gateway_audit_checkpoint_size") == size
    assert value(signed, "gateway_audit_checkpoint_lag_seconds") == 0
    assert 0 <= value(signed, "gateway_audit_checkpoint_age_seconds") < 60


async def test_dispatch_serves_metrics_on_its_own_port(onboarded: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(onboarded), "dispatch", "--quiet",
        "--metrics-port", str(port), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )  # fmt: skip
    try:
        text = ""
        async with aiohttp.ClientSession() as session, asyncio.timeout(60):
            while not text:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                        assert answer.status == 200
                        text = await answer.text()
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)  # the process is still starting
        samples = parse(text)
        assert value(samples, "gateway_partner_status", partner="acme-collect", status="active") == 1
        assert ("process_cpu_seconds_total", ()) in samples
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await reap(proc)


async def ready(client: TestClient) -> tuple[int, dict[str, Any]]:
    answer = await client.get("/readyz")
    return answer.status, await answer.json(content_type=None)


async def test_readyz_names_what_fails(gw: Gateway, aiohttp_client: Any, onboarded: Path) -> None:
    app = create_app(gw.settings, gateway=gw, workers=True)
    client: TestClient = await aiohttp_client(app)
    status, body = await ready(client)
    assert status == 200 and body["status"] == "ready"
    assert body["checks"] == dict.fromkeys(("database", "schema", "checkpoint", "keys", "workers"), "ok")
    assert (await client.get("/healthz")).status == 200

    real = gw.clock
    gw.clock = lambda: real() + timedelta(hours=1)  # the onboarding entries wait an hour
    status, body = await ready(client)
    assert status == 503 and body["type"] == "/problems/not-ready"
    assert body["detail"].startswith("not ready: checkpoint: ") and "waited 36" in body["detail"]
    await audit_log.checkpoint_now(gw.db, gw.audit_signer)
    assert (await ready(client))[0] == 200

    signing = onboarded / "keys" / "bank" / "signing.jwk"
    signing.rename(signing.with_suffix(".away"))
    status, body = await ready(client)
    assert status == 503 and body["detail"].startswith("not ready: keys: ")
    signing.with_suffix(".away").rename(signing)

    poller = app[WORKERS].task("poller")
    poller.cancel()
    await asyncio.wait([poller], timeout=30)
    status, body = await ready(client)
    assert status == 503
    assert body["detail"] == "not ready: workers: background tasks stopped: poller (see the log)"

    async with gw.db.transaction() as tx:
        await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS) + 1,))
    status, body = await ready(client)
    assert status == 503
    newer, known = len(MIGRATIONS) + 1, len(MIGRATIONS)
    assert body["checks"]["schema"] == f"the database is at version {newer}, this release needs {known}"
    async with gw.db.transaction() as tx:
        await tx.execute("DELETE FROM schema_version WHERE version = ?", (len(MIGRATIONS) + 1,))
