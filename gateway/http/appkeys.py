"""Typed application keys shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.config import Settings
from gateway.core import Gateway
from gateway.http.workers import Workers


@dataclass(frozen=True)
class Timeouts:
    """How long a client may take to send a request (slow clients hold a connection)."""

    header: float = 10.0
    """Seconds from a connection's start, or the previous answer on it, to a complete
    request head; an idle keep-alive connection is closed after as long."""
    body: float = 30.0
    """Seconds to receive a request body (at most 1 MiB)."""


SETTINGS = web.AppKey("settings", Settings)
GATEWAY = web.AppKey("gateway", Gateway)
TIMEOUTS = web.AppKey("timeouts", Timeouts)
WORKERS = web.AppKey("workers", Workers)
"""The background tasks of ``gateway serve``; ``WORKERS.dead()`` names any that died."""
