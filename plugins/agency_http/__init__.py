"""Collection agencies with an HTTP API: POST the sealed package, poll a status feed."""

from __future__ import annotations

from collections.abc import Callable

from gateway import hookimpl
from gateway.plugin.adapter import Adapter
from plugins.agency_http.adapter import AgencyHttpAdapter


@hookimpl
def gateway_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    register(AgencyHttpAdapter)
