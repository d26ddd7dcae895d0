"""File partners over SFTP: sealed placement batches with a signed manifest out, signed
status files in."""

from __future__ import annotations

from collections.abc import Callable

from gateway import hookimpl
from gateway.plugin.adapter import Adapter
from plugins.sftp_batch.adapter import SftpBatchAdapter


@hookimpl
def gateway_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    register(SftpBatchAdapter)
