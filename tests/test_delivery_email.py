"""Email over kept SMTP connections, against aiosmtpd with STARTTLS on 127.0.0.1: a
connection carries many messages up to the profile's limit, survives a refusal the relay
answered, is closed (the refusal kept) when the relay is slow to answer the RSET after it,
and is replaced when the relay drops it; a message whose concurrency slot lapsed before
it left is not sent; the limit is checked at onboarding."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.demo.partners import ThrowawayCA
from gateway.errors import NotSent, ProfileError
from gateway.onboarding import registry
from gateway.placement import service as placement
from gateway.plugin.adapter import slot_held
from plugins.email_smtp.connections import Connections
from schemas.case import Case
from tests.partners import CASE, REPO, Clock, init_workspace, rows

MAIL = REPO / "examples" / "partners" / "notify-mail.toml"


class Relay:
    """Counts connections opened and closed and keeps each message; ``refuse``: DATA
    replies by message number (1-based); ``refuse_rcpt``: RCPT replies by recipient;
    ``drop_at``: the MAIL command (per connection, 1-based) at which the relay hangs up
    instead of answering; ``rset_delay``: seconds it takes to answer a RSET."""

    def __init__(
        self,
        refuse: dict[int, str] | None = None,
        drop_at: int | None = None,
        refuse_rcpt: dict[str, str] | None = None,
        rset_delay: float = 0.0,
    ) -> None:
        self.refuse = refuse or {}
        self.refuse_rcpt = refuse_rcpt or {}
        self.drop_at = drop_at
        self.rset_delay = rset_delay
        self.rset_asked = asyncio.Event()
        self.connections = 0
        self.closed = 0
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

            def connection_lost(self, error: Exception | None) -> None:
                relay.closed += 1
                super().connection_lost(error)

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

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.rset_asked.set()
        await asyncio.sleep(self.rset_delay)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(bytes(envelope.original_content or b""))
        self.recipients += envelope.rcpt_tos
        return self.refuse.get(len(self.messages), "250 2.0.0 queued")


@asynccontextmanager
async def serving(tmp_path: Path, relay: Relay) -> AsyncIterator[tuple[int, ThrowawayCA]]:
    """``relay`` listening on 127.0.0.1 with STARTTLS: its port and its CA."""
    ca = ThrowawayCA(tmp_path / "ca")
    tls = ca.server_context("relay")
    server = await asyncio.get_running_loop().create_server(lambda: relay.protocol(tls), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], ca
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def relay_workspace(
    tmp_path: Path, relay: Relay, adapter_config: str = "", count: int = 5, limits: str = ""
) -> AsyncIterator[Gateway]:
    """The sample email partner (one attempt at a time) pointed at ``relay``, with
    ``count`` reminders placed, one per debtor."""
    async with serving(tmp_path, relay) as (port, ca):
        ws = init_workspace(tmp_path / "ws")
        profile = ws / "mail.toml"
        profile.write_text(
            MAIL.read_text()
            .replace("smtp://127.0.0.1:18025", f"smtp://127.0.0.1:{port}")
            .replace('tls = "starttls"', f'tls = "starttls"\nca_file = "{ca.ca_file}"\n{adapter_config}')
            .replace("[adapter_config]", f"[limits]\nconcurrency = 1\nmax_attempts = 2\n{limits}\n"
                     "[adapter_config]")
        )
        async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
            await registry.add(gw, profile, actor="test")
            base = json.loads(CASE.read_text())
            for i in range(count):
                base["case_id"], base["debtor"]["email"] = f"C-MAIL-{i}", f"debtor{i}@example.com"
                await placement.place(gw, Case.model_validate(base), "notify-mail", "reminder", actor="test")
            yield gw


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


async def test_a_refusal_stays_a_refusal_when_the_relay_is_slow_to_reset(tmp_path: Path) -> None:
    # RSET answered long after the attempt's timeout: the connection is given up, the
    # 550 still makes the message dead (not a timeout to retry), and nothing is left open.
    relay = Relay(refuse_rcpt={"debtor0@example.com": "550 5.1.1 no such mailbox"}, rset_delay=30)
    async with relay_workspace(tmp_path, relay, count=2, limits="timeout = 4") as gw:
        stats = await Dispatcher(gw).run_once()
        assert (stats.delivered, stats.dead, stats.retry_wait) == (1, 1, 0)
        [dead] = await rows(gw, "SELECT last_error FROM packages WHERE state = 'dead'")
        assert dead["last_error"].startswith("PartnerRejected")
        assert "SMTP 550 5.1.1 no such mailbox" in dead["last_error"]
        assert relay.recipients == ["debtor1@example.com"]
        assert relay.connections == 2  # the refused one was not reused
        await asyncio.sleep(0.2)  # the relay reads the last QUIT
        assert relay.closed == relay.connections


async def test_an_attempt_cancelled_while_resetting_closes_its_connection(tmp_path: Path) -> None:
    relay = Relay(refuse_rcpt={"debtor0@example.com": "550 5.1.1 no such mailbox"}, rset_delay=30)
    async with serving(tmp_path, relay) as (port, ca):
        tls = ssl.create_default_context(cafile=str(ca.ca_file))

        async def connect() -> aiosmtplib.SMTP:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=tls)
            await client.connect()
            return client

        connections = Connections(connect, per_connection=10, timeout=30)
        message = b"Subject: x\r\n\r\nx\r\n"
        sending = asyncio.ensure_future(
            connections.send("reminders@bank.example", "debtor0@example.com", message, False)
        )
        await asyncio.wait_for(relay.rset_asked.wait(), timeout=10)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        await asyncio.sleep(0.2)
        assert (relay.connections, relay.closed) == (1, 1)
        await connections.aclose()


async def test_a_message_whose_slot_lapsed_is_not_sent_and_the_connection_is_kept(tmp_path: Path) -> None:
    """The dispatcher's check just before a message leaves (its concurrency slot may have
    lapsed while the process stalled): refused, nothing reaches the relay and the
    connection goes back to the pool; the next message goes on it."""
    relay = Relay()
    async with serving(tmp_path, relay) as (port, ca):
        tls = ssl.create_default_context(cafile=str(ca.ca_file))

        async def connect() -> aiosmtplib.SMTP:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=tls)
            await client.connect()
            await client.ehlo()  # again after STARTTLS, as the adapter does
            return client

        connections = Connections(connect, per_connection=10, timeout=30)
        message = b"Subject: x\r\n\r\nx\r\n"
        try:
            with slot_held(lambda: False), pytest.raises(NotSent):
                await connections.send("reminders@bank.example", "debtor0@example.com", message, False)
            assert relay.messages == [] and relay.connections == 1
            with slot_held(lambda: True):
                await connections.send("reminders@bank.example", "debtor0@example.com", message, False)
            assert len(relay.messages) == 1
            assert (relay.connections, relay.closed, connections.opened) == (1, 0, 1)
        finally:
            await connections.aclose()


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
