"""Email over kept SMTP connections, against aiosmtpd with STARTTLS on 127.0.0.1: a
connection carries many messages up to the profile's limit, survives a refusal the relay
answered, and is replaced when the relay drops it; the limit is checked at onboarding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.demo.partners import ThrowawayCA
from gateway.errors import ProfileError
from gateway.onboarding import registry
from gateway.placement import service as placement
from schemas.case import Case
from tests.partners import CASE, REPO, Clock, init_workspace, rows

MAIL = REPO / "examples" / "partners" / "notify-mail.toml"


class Relay:
    """Counts connections and keeps each message; ``refuse``: DATA replies by message
    number (1-based); ``drop_at``: the MAIL command (per connection, 1-based) at which
    the relay hangs up instead of answering."""

    def __init__(self, refuse: dict[int, str] | None = None, drop_at: int | None = None) -> None:
        self.refuse = refuse or {}
        self.drop_at = drop_at
        self.connections = 0
        self.messages: list[bytes] = []
        self.recipients: list[str] = []

    def protocol(self, tls: Any) -> SMTP:
        relay = self

        class Counted(SMTP):
            mails = 0

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if self._original_transport is None:  # the same connection again after STARTTLS
                    relay.connections += 1
                super().connection_made(transport)

        return Counted(self, hostname="relay.test", tls_context=tls, require_starttls=True)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        server.mails += 1  # type: ignore[attr-defined]
        if server.mails == self.drop_at:  # type: ignore[attr-defined]
            assert server.transport is not None
            server.transport.close()
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(bytes(envelope.original_content or b""))
        self.recipients += envelope.rcpt_tos
        return self.refuse.get(len(self.messages), "250 2.0.0 queued")


@asynccontextmanager
async def relay_workspace(
    tmp_path: Path, relay: Relay, adapter_config: str = "", count: int = 5
) -> AsyncIterator[Gateway]:
    """The sample email partner (one attempt at a time) pointed at ``relay``, with
    ``count`` reminders placed, one per debtor."""
    ca = ThrowawayCA(tmp_path / "ca")
    tls = ca.server_context("relay")
    server = await asyncio.get_running_loop().create_server(lambda: relay.protocol(tls), "127.0.0.1", 0)
    ws = init_workspace(tmp_path / "ws")
    profile = ws / "mail.toml"
    profile.write_text(
        MAIL.read_text()
        .replace("smtp://127.0.0.1:18025", f"smtp://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        .replace('tls = "starttls"', f'tls = "starttls"\nca_file = "{ca.ca_file}"\n{adapter_config}')
        .replace("[adapter_config]", "[limits]\nconcurrency = 1\nmax_attempts = 2\n\n[adapter_config]")
    )
    try:
        async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
            await registry.add(gw, profile, actor="test")
            base = json.loads(CASE.read_text())
            for i in range(count):
                base["case_id"], base["debtor"]["email"] = f"C-MAIL-{i}", f"debtor{i}@example.com"
                await placement.place(gw, Case.model_validate(base), "notify-mail", "reminder", actor="test")
            yield gw
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connection_carries_messages_up_to_the_profiles_limit(tmp_path: Path) -> None:
    relay = Relay()
    async with relay_workspace(tmp_path, relay, "messages_per_connection = 2") as gw:
        stats = await Dispatcher(gw).run_once()
        assert stats.delivered == 5
        assert relay.connections == 3  # 2 + 2 + 1: one STARTTLS handshake per connection
        assert sorted(relay.recipients) == [f"debtor{i}@example.com" for i in range(5)]
        ids = {r["id"] for r in await rows(gw, "SELECT id FROM packages WHERE state = 'delivered'")}
        sent = {m.split(b"Message-ID: <", 1)[1].split(b"@", 1)[0].decode() for m in relay.messages}
        assert sent == ids  # each package once, under its own Message-ID
        assert all(b"Subject: Payment reminder\r\n" in m for m in relay.messages)


async def test_a_refused_message_does_not_cost_the_connection(tmp_path: Path) -> None:
    relay = Relay(refuse={2: "550 5.1.1 mailbox unavailable"})
    async with relay_workspace(tmp_path, relay) as gw:
        stats = await Dispatcher(gw).run_once()
        assert (stats.delivered, stats.dead) == (4, 1)
        assert relay.connections == 1
        [dead] = await rows(gw, "SELECT last_error FROM packages WHERE state = 'dead'")
        assert "SMTP 550" in dead["last_error"]


async def test_a_connection_the_relay_drops_is_replaced_and_the_message_retried(tmp_path: Path) -> None:
    relay = Relay(drop_at=2)  # every connection is dropped at its second message
    async with relay_workspace(tmp_path, relay, count=3) as gw:
        first = await Dispatcher(gw).run_once()
        assert (first.delivered, first.retry_wait) == (2, 1)
        assert relay.connections == 2
        [waiting] = await rows(gw, "SELECT last_error FROM packages WHERE state = 'retry_wait'")
        assert waiting["last_error"].startswith("PartnerUnavailable")
        assert gw.clock is not None
        gw.clock.advance(60)  # type: ignore[attr-defined]
        second = await Dispatcher(gw).run_once()
        assert second.delivered == 1
        assert len(relay.messages) == 3 and len(set(relay.recipients)) == 3


@pytest.mark.parametrize("value", ["0", "-1", '"many"'])
async def test_the_per_connection_limit_is_checked_at_onboarding(tmp_path: Path, value: str) -> None:
    ws = init_workspace(tmp_path / "ws")
    profile = ws / "mail.toml"
    setting = f'tls = "starttls"\nmessages_per_connection = {value}'
    profile.write_text(MAIL.read_text().replace('tls = "starttls"', setting))
    async with await Gateway.open(load_settings(ws)) as gw:
        with pytest.raises(ProfileError, match="messages_per_connection"):
            await registry.add(gw, profile, actor="test")
        assert await rows(gw, "SELECT id FROM partners") == []
