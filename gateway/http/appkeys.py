"""Typed application keys shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from gateway.config import Settings
from gateway.core import Gateway

SETTINGS = web.AppKey("settings", Settings)
GATEWAY = web.AppKey("gateway", Gateway)
