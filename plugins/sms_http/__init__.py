"""SMS providers with a JSON API: approved templates rendered from minimized fields,
and the delivery receipts of the Vonage Messages API as a callback format."""

from __future__ import annotations

from collections.abc import Callable

from gateway import hookimpl
from gateway.inbound.formats import CallbackFormat
from gateway.plugin.adapter import Adapter
from plugins.sms_http.adapter import SmsHttpAdapter
from plugins.sms_http.receipts import VonageReceipts


@hookimpl
def gateway_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    register(SmsHttpAdapter)


@hookimpl
def gateway_register_callback_formats(register: Callable[[CallbackFormat], None]) -> None:
    register(VonageReceipts())
