"""Polling partners that cannot push: the same status events, fetched on a schedule.

A feed page is ``{"events": [...], "cursor": "..."}``; each event is a status event as
a callback body would carry it, plus an ``id`` that plays the part of ``webhook-id``
(an event seen twice is applied once). The cursor is stored after each page, so a
restarted poller resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import Conflict, GatewayError
from gateway.inbound import pipeline as inbound
from gateway.onboarding import registry
from gateway.plugin.adapter import Adapter
from gateway.supervision.redact import redact

log = logging.getLogger(__name__)

#: Seconds between polls of an adapter that stops naming an interval while polled.
DEFAULT_INTERVAL = 300.0


@dataclass
class PollStats:
    partner: str
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    error: str | None = None


def pollable(gw: Gateway, record: registry.PartnerRecord) -> Adapter | None:
    cls = gw.adapters.get(record.profile.adapter)
    if cls is None or record.status == "offboarded":
        return None
    adapter = cls.for_profile(record.profile, gw.adapter_resources)
    return adapter if adapter.poll_interval() is not None else None


def interval(adapter: Adapter) -> float:
    return adapter.poll_interval() or DEFAULT_INTERVAL


async def poll_partner(gw: Gateway, adapter: Adapter) -> PollStats:
    partner_id = adapter.profile.id
    stats = PollStats(partner_id)
    async with gw.db.transaction() as tx:
        cursor = await tx.fetchval("SELECT cursor FROM poll_cursors WHERE partner_id = ?", (partner_id,))
    page = await adapter.poll(cursor)
    for item in page.events:
        event = {k: v for k, v in item.items() if k != "id"}
        body = json.dumps(event, ensure_ascii=False, sort_keys=True).encode()
        event_id = str(item.get("id") or hashlib.sha256(body).hexdigest())
        try:
            await inbound.ingest(gw, partner_id, body, channel="poll", webhook_id=f"poll:{event_id}")
            stats.accepted += 1
        except Conflict as exc:
            if "already received" in str(exc):
                stats.duplicates += 1
            else:
                stats.refused += 1
        except GatewayError as exc:
            stats.refused += 1
            log.warning("poll %s: event %s refused: %s", partner_id, event_id, type(exc).__name__)
    async with gw.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO poll_cursors (partner_id, cursor, polled_at) VALUES (?, ?, ?)"
            " ON CONFLICT (partner_id) DO UPDATE SET cursor = excluded.cursor,"
            " polled_at = excluded.polled_at",
            (partner_id, page.cursor if page.cursor is not None else cursor, isotime(gw.now())),
        )
    return stats


async def poll_once(gw: Gateway) -> list[PollStats]:
    out = []
    for record in await registry.list_all(gw):
        adapter = pollable(gw, record)
        if adapter is None:
            continue
        async with adapter:
            try:
                out.append(await poll_partner(gw, adapter))
            except GatewayError as exc:
                error = redact(str(exc))
                log.warning("poll %s failed: %s", record.id, error)
                out.append(PollStats(record.id, error=error))
    return out


async def run(gw: Gateway, stop: asyncio.Event) -> None:
    """Poll each pollable partner on its own interval until ``stop`` is set."""
    adapters: dict[str, Adapter] = {}
    due: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            for record in await registry.list_all(gw):
                if record.id not in adapters and (adapter := pollable(gw, record)) is not None:
                    adapters[record.id] = adapter
            now = loop.time()
            for partner_id, adapter in adapters.items():
                if due.get(partner_id, 0.0) <= now:
                    try:
                        await poll_partner(gw, adapter)
                    except GatewayError as exc:
                        log.warning("poll %s failed: %s", partner_id, redact(str(exc)))
                    due[partner_id] = loop.time() + interval(adapter)
            wait = min(due.values(), default=now + 60.0) - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(1.0, min(wait, 60.0)))
    finally:
        for adapter in adapters.values():
            await adapter.aclose()


def summary(stats: list[PollStats]) -> list[dict[str, Any]]:
    return [vars(s) for s in stats]
