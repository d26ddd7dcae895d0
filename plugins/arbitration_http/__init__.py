"""Online arbitration bodies: file a case with its evidence, poll hearing and award status."""

from __future__ import annotations

from collections.abc import Callable

from gateway import hookimpl
from gateway.plugin.adapter import Adapter
from plugins.arbitration_http.adapter import ArbitrationHttpAdapter


@hookimpl
def gateway_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    register(ArbitrationHttpAdapter)
