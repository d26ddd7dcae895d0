"""SMS providers with a JSON API: approved templates rendered from minimized fields."""

from __future__ import annotations

from collections.abc import Callable

from gateway import hookimpl
from gateway.plugin.adapter import Adapter
from plugins.sms_http.adapter import SmsHttpAdapter


@hookimpl
def gateway_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    register(SmsHttpAdapter)
