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
import traceback
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


def read_feed(record: registry.PartnerRecord) -> bool:
    """Whether the partner's feed is read at all (what is taken from whose feed:
    ``pipeline.check_polled``)."""
    return record.status in inbound.FEED_READ


def pollable(gw: Gateway, record: registry.PartnerRecord) -> Adapter | None:
    """The adapter that reads the partner's status feed, or None if it has none. Raises
    ValueError if the stored profile's feed may not be read (see `check_status_feed`)."""
    cls = gw.adapters.get(record.profile.adapter)
    if cls is None or not read_feed(record):
        return None
    adapter = cls.for_profile(record.profile, gw.adapter_resources)
    return adapter if adapter.poll_interval() is not None else None


def _not_polled(partner_id: str, exc: ValueError) -> PollStats:
    log.warning("partner %s not polled: %s (fix the profile, `gateway partners add --update`)",
                partner_id, exc)
    return PollStats(partner_id, error=f"not polled: {exc}")


@dataclass
class Polled:
    """A partner the running poller polls: its adapter, made from the profile digested
    as ``digest``, and when it is due."""

    adapter: Adapter
    digest: str
    due: float = 0.0


async def refresh(gw: Gateway, polled: dict[str, Polled]) -> None:
    """Bring the running poller in line with the registry, as the dispatcher does its
    lanes: a changed profile gets a new adapter, an offboarded partner (or one that no
    longer has a feed) none."""
    records = {record.id: record for record in await registry.list_all(gw)}
    for partner_id, known in list(polled.items()):
        record = records.get(partner_id)
        if record is None or record.profile_digest != known.digest or not read_feed(record):
            del polled[partner_id]
            await known.adapter.aclose()
    for record in records.values():
        if record.id in polled:
            continue
        try:
            adapter = pollable(gw, record)
        except ValueError as exc:  # a profile stored before a rule it breaks: skipped, said
            _not_polled(record.id, exc)
            continue
        if adapter is not None:
            polled[record.id] = Polled(adapter, record.profile_digest)


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


async def poll_guarded(gw: Gateway, adapter: Adapter) -> PollStats:
    """One partner's poll, whatever happens in it: its failure is its own (logged, and
    in its stats), the other partners are polled all the same, and the next poll tries
    again from the stored cursor."""
    partner_id = adapter.profile.id
    try:
        return await poll_partner(gw, adapter)
    except GatewayError as exc:
        error = redact(str(exc))
        log.warning("poll %s failed: %s", partner_id, error)
    except Exception as exc:
        # A bug (ours or an adapter's): its frames for the developers, its message
        # without personal data (it may quote the feed).
        error = f"{type(exc).__name__}: {redact(str(exc))}"
        frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
        log.error("poll %s failed: %s\n%s", partner_id, error, frames)
    return PollStats(partner_id, error=error)


async def poll_once(gw: Gateway) -> list[PollStats]:
    out = []
    for record in await registry.list_all(gw):
        try:
            adapter = pollable(gw, record)
        except ValueError as exc:
            out.append(_not_polled(record.id, exc))
            continue
        if adapter is None:
            continue
        async with adapter:
            out.append(await poll_guarded(gw, adapter))
    return out


async def run(gw: Gateway, stop: asyncio.Event) -> None:
    """Poll each pollable partner on its own interval until ``stop`` is set, following
    profile changes and offboardings (see :func:`refresh`) between rounds. Nothing a
    partner's feed or a passing database error does ends it."""
    polled: dict[str, Polled] = {}
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            try:
                await refresh(gw, polled)
            except Exception as exc:  # the database away for a moment: poll whom we know
                log.warning("poller: could not read the partners (%s); trying again", type(exc).__name__)
            for known in list(polled.values()):
                if known.due <= loop.time():
                    await poll_guarded(gw, known.adapter)
                    known.due = loop.time() + interval(known.adapter)
            wait = min((known.due for known in polled.values()), default=loop.time() + 60.0) - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(1.0, min(wait, 60.0)))
    finally:
        for known in polled.values():
            await known.adapter.aclose()


def summary(stats: list[PollStats]) -> list[dict[str, Any]]:
    return [vars(s) for s in stats]
