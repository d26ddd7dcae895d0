"""Email providers over SMTP, TLS required."""

from __future__ import annotations

from collections.abc import Callable

from gateway import hookimpl
from gateway.plugin.adapter import Adapter
from plugins.email_smtp.adapter import EmailSmtpAdapter


@hookimpl
def gateway_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    register(EmailSmtpAdapter)
