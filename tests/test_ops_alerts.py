"""Alerts to a real webhook receiver (Standard Webhooks signatures checked with the
standardwebhooks package) and a real SMTP server (aiosmtpd), both on 127.0.0.1: a dead
package, an automatic suspension, an overdue attestation and a late checkpoint each
alert once; a failing sink neither blocks nor undoes the action."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook

from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.inbound import pipeline as inbound
from gateway.onboarding import registry
from gateway.ops import metrics, watch
from gateway.placement import recall
from gateway.placement import service as placement
from schemas.case import Case
from tests.callbacks import dumps, event
from tests.helpers import sample_case
from tests.test_serve import free_port

CASE = Case.model_validate_json(sample_case().read_text())


class Receiver:
    """The bank's chat tool: checks each signature, fails the first delivery."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.answers = deque([500])
        self.alerts: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.webhook.verify(body, {k.lower(): v for k, v in request.headers.items()})
        if self.answers:
            return web.Response(status=self.answers.popleft())
        self.bodies.append(body)
        self.alerts.append(json.loads(body))
        return web.Response(status=204)


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)  # the sinks send from background tasks


def configure(ws: Path, hook_port: int, smtp_port: int, dead_port: int) -> None:
    (ws / "alerts.whsec").write_text(SECRET)
    with (ws / "gateway.toml").open("a") as toml:
        toml.write(f"""
[alerts]
tries = 3
backoff = 0.05

[[alerts.webhooks]]
url = "http://127.0.0.1:{hook_port}/hook"
secret_file = "alerts.whsec"

[[alerts.webhooks]]
url = "http://127.0.0.1:{dead_port}/hook"
secret_file = "alerts.whsec"
alerts = ["partner_suspended"]

[[alerts.email]]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
sender = "gateway@bank.example"
recipients = ["collections-ops@bank.example"]
alerts = ["partner_suspended"]
""")


SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def test_alerts_reach_webhook_and_email_and_a_failing_sink_blocks_nothing(onboarded: Path) -> None:
    receiver, mailbox = Receiver(SECRET), Mailbox()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    dead_sink = f"webhook:http://127.0.0.1:{free_port()}/hook"
    configure(onboarded, runner.addresses[0][1], smtp.port, int(dead_sink.rsplit(":", 1)[1].split("/")[0]))
    failed_before = metrics.ALERTS.labels(dead_sink, "failed")._value.get()
    try:
        gw = await Gateway.open(load_settings(onboarded))
        try:
            await _actions(gw)
            kinds = ["dead", "partner_suspended", "attestation_overdue", "checkpoint_overdue"]
            await until(lambda: sorted(a["data"]["alert"] for a in receiver.alerts) == sorted(kinds))
            await until(lambda: len(mailbox.messages) == 1)
            await until(lambda: metrics.ALERTS.labels(dead_sink, "failed")._value.get() == failed_before + 1)
        finally:
            await gw.close()
    finally:
        smtp.stop()
        await runner.cleanup()
    by_kind = {a["data"]["alert"]: a for a in receiver.alerts}
    assert by_kind["dead"]["data"]["event"]["detail"]["cause"] == "expired"
    assert by_kind["partner_suspended"]["data"]["summary"].startswith(
        "partner acme-collect suspended automatically: automatic: 5 violations"
    )
    assert by_kind["attestation_overdue"]["data"]["event"]["case"].startswith("case_")
    assert by_kind["checkpoint_overdue"]["data"]["event"]["detail"]["waiting"] > 0
    assert by_kind["dead"]["type"] == "gateway.alert.dead"
    [mail] = mailbox.messages
    assert mail["Subject"].startswith("[gateway] partner acme-collect suspended automatically")
    assert mail["To"] == "collections-ops@bank.example"
    sent = b"".join(receiver.bodies) + b"".join(m.as_bytes() for m in mailbox.messages)
    for personal in (CASE.debtor.name, CASE.debtor.id_number, CASE.debtor.phones[0].number, CASE.case_id):
        assert personal.encode() not in sent


async def _actions(gw: Gateway) -> None:
    """A dead package, a manual and an automatic suspension, an overdue attestation and
    a late checkpoint; each action returns while the sinks are failing."""
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    async with gw.db.transaction() as tx:
        await tx.execute("UPDATE packages SET expires_at = '2026-01-01T00:00:00.000000Z'")
    await Dispatcher(gw).run_once()
    await registry.set_status(gw, "sz-arbitration", "suspended", reason="review", actor="test")
    night = datetime.now(UTC).replace(hour=15, minute=0) - timedelta(days=1)  # 23:00 in Shanghai
    reports = [event(placed.case_ref, "accepted", at=night - timedelta(hours=1))] + [
        event(placed.case_ref, "contact_attempt", at=night + timedelta(minutes=n),
              channel="sms", target="debtor", outcome="left_message")
        for n in range(5)
    ]  # fmt: skip
    async with asyncio.timeout(5):  # the failing sinks must not hold the report up
        for n, report in enumerate(reports):
            body = dumps(report).encode()
            await inbound.ingest(gw, "acme-collect", body, channel="callback", webhook_id=f"m{n}")
    await recall.recall(gw, CASE.case_id, "acme-collect", "debt sold", actor="test")
    async with gw.db.transaction() as tx:
        await tx.execute("UPDATE assignments SET deletion_due = '2026-01-01T00:00:00.000000Z'")
    real = gw.clock
    gw.clock = lambda: real() + timedelta(hours=1)  # no checkpoint for an hour
    first = await watch.look(gw)
    assert sorted(e.kind for e in first) == ["attestation_overdue", "checkpoint_overdue"]
    assert await watch.look(gw) == [], "each is announced once"
