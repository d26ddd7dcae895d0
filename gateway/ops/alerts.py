"""Alerts to people: built-in sinks configured in gateway.toml (``[[alerts.webhooks]]``,
``[[alerts.email]]``), fed by ``gateway_event``.

Alerted (`alert_of`, the one rule): a partner suspended automatically, a package
dead, a deletion attestation overdue, an audit checkpoint overdue, a partner's status
file refused (its signature bad or missing). An alert carries
the event's ids and tokens, never personal data.

A failing sink never blocks or undoes the action: the hook only puts the alert on the
sink's queue (bounded; when full the oldest is dropped and counted). One background
task per sink sends them in order, retrying each with exponential backoff
(``alerts.backoff`` seconds, doubling, at most 300) up to ``alerts.tries`` times, then
gives it up with an error in the log. On shutdown the queues get a few seconds to
drain. Webhooks are signed as Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<HMAC-SHA256>``) with the sink's
``whsec_`` secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import orjson

from gateway.config import AlertSettings, EmailSink, Settings, WebhookSink
from gateway.errors import ConfigError
from gateway.ops import metrics
from gateway.plugin.events import Event

log = logging.getLogger(__name__)
MAX_BACKOFF = 300.0
DRAIN_SECONDS = 5.0


@dataclass(frozen=True)
class Alert:
    kind: str
    summary: str
    event: Event

    def payload(self) -> dict[str, Any]:
        return {
            "type": f"gateway.alert.{self.kind}",
            "timestamp": self.event.at,
            "data": {"alert": self.kind, "summary": self.summary, "event": asdict(self.event)},
        }


def alert_of(event: Event) -> Alert | None:
    """The alert an event calls for, or None."""
    d, partner = event.detail, event.partner
    if event.kind == "partner_suspended" and d.get("actor") == "system":
        return Alert(event.kind, f"partner {partner} suspended automatically: {d.get('reason', '')}", event)
    if event.kind == "dead":
        why = ", ".join(str(d[k]) for k in ("cause", "error_class", "status") if d.get(k))
        return Alert(event.kind, f"package {d.get('package_id')} to {partner} is dead ({why})", event)
    if event.kind == "attestation_overdue":
        return Alert(event.kind, f"{partner} has not attested deletion of a recalled case, "
                     f"due {d.get('deletion_due')}", event)  # fmt: skip
    if event.kind == "checkpoint_overdue":
        return Alert(event.kind, f"audit checkpoint overdue: {d.get('waiting')} entries waiting "
                     f"{d.get('lag_seconds')} s", event)  # fmt: skip
    if event.kind == "status_file_refused":
        return Alert(event.kind, f"status file {d.get('file')} of {partner} refused and moved to "
                     f"{d.get('moved_to')}: {d.get('reason')}", event)  # fmt: skip
    return None


def whsec(secret: str) -> bytes:
    """The key of a Standard Webhooks secret (``whsec_`` + base64)."""
    return base64.b64decode(secret.strip().removeprefix("whsec_"))


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class Sink:
    """One destination with its queue and sending task."""

    name = "sink"

    def __init__(self, kinds: list[str], policy: AlertSettings) -> None:
        self.kinds = set(kinds)
        self.policy = policy
        self.queue: asyncio.Queue[Alert] | None = None
        self.task: asyncio.Task[None] | None = None

    def offer(self, alert: Alert) -> None:
        if alert.kind not in self.kinds:
            return
        if self.queue is None:
            self.queue = asyncio.Queue(self.policy.queue)
            self.task = asyncio.get_running_loop().create_task(self._run())
        if self.queue.full():
            self.queue.get_nowait()
            self.queue.task_done()
            metrics.ALERTS.labels(self.name, "dropped").inc()
            log.warning("alert queue of %s full: the oldest alert was dropped", self.name)
        self.queue.put_nowait(alert)

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            alert = await self.queue.get()
            try:
                await self._deliver(alert)
            finally:
                self.queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        delay = self.policy.backoff
        for attempt in range(1, self.policy.tries + 1):
            try:
                await self.send(alert)
            except Exception as exc:  # any failure of the sink: retried, then given up
                if attempt == self.policy.tries:
                    metrics.ALERTS.labels(self.name, "failed").inc()
                    log.error("alert %s to %s given up after %d tries: %s", alert.kind, self.name,
                              attempt, type(exc).__name__)  # fmt: skip
                    return
                log.warning("alert %s to %s failed (%s); retrying in %.1f s", alert.kind, self.name,
                            type(exc).__name__, delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            else:
                metrics.ALERTS.labels(self.name, "sent").inc()
                return

    async def send(self, alert: Alert) -> None:
        raise NotImplementedError

    async def close(self, drain: float) -> None:
        if self.queue is not None and self.task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), drain)
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class WebhookAlerts(Sink):
    def __init__(self, config: WebhookSink, policy: AlertSettings, base: Path) -> None:
        super().__init__(list(config.alerts), policy)
        self.config = config
        self.name = f"webhook:{config.url.split('?')[0]}"
        path = base / config.secret_file
        try:
            self.key = whsec(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"alerts.webhooks: cannot read the whsec_ secret in {path}: {exc}") from None

    async def send(self, alert: Alert) -> None:
        body = orjson.dumps(alert.payload())
        msg_id, stamp = f"msg_{uuid.uuid4().hex}", int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(self.key, msg_id, stamp, body),
        }
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(self.config.url, data=body, headers=headers, allow_redirects=False) as answer,
        ):
            if answer.status >= 300:
                raise RuntimeError(f"HTTP {answer.status}")


class EmailAlerts(Sink):
    def __init__(self, config: EmailSink, policy: AlertSettings) -> None:
        super().__init__(list(config.alerts), policy)
        self.config = config
        self.name = f"email:{config.host}"

    async def send(self, alert: Alert) -> None:
        c = self.config
        message = EmailMessage()
        message["From"], message["To"] = c.sender, ", ".join(c.recipients)
        message["Subject"] = f"[gateway] {alert.summary}"[:200]
        message.set_content(
            alert.summary + "\n\n" + orjson.dumps(alert.payload(), option=orjson.OPT_INDENT_2).decode()
        )
        await aiosmtplib.send(
            message, hostname=c.host, port=c.port, use_tls=c.tls == "implicit",
            start_tls=c.tls == "starttls", username=c.username or None,
            password=os.environ.get(c.password_env) if c.password_env else None, timeout=c.timeout,
        )  # fmt: skip


class Alerts:
    """Every sink of a workspace."""

    def __init__(self, settings: Settings) -> None:
        policy = settings.alerts
        self.sinks: list[Sink] = [WebhookAlerts(w, policy, settings.base_dir) for w in policy.webhooks]
        self.sinks += [EmailAlerts(e, policy) for e in policy.email]

    def offer(self, event: Event) -> None:
        alert = alert_of(event) if self.sinks else None
        if alert is None:
            return
        for sink in self.sinks:
            sink.offer(alert)

    async def close(self, drain: float = DRAIN_SECONDS) -> None:
        await asyncio.gather(*(sink.close(drain) for sink in self.sinks))
