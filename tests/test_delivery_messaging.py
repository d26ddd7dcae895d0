"""Arbitration, SMS and email delivery against the demo partners; templates checked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.cli.placement import read_case
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.demo.partners import DemoPartners, ThrowawayCA
from gateway.errors import ProfileError
from gateway.onboarding import registry
from gateway.onboarding.jwk import generate_encryption_key
from gateway.placement import service as placement
from tests.partners import CASE, REPO, Clock, init_workspace, rows

EXAMPLES = REPO / "examples" / "partners"
PLACEMENTS = [
    ("sz-arbitration", "arbitration"), ("notify-sms", "reminder"), ("notify-mail", "reminder"),
]


@asynccontextmanager
async def demo_workspace(tmp_path: Path) -> AsyncIterator[tuple[Gateway, DemoPartners]]:
    ws = init_workspace(tmp_path / "ws")
    key = generate_encryption_key("X25519")
    (ws / "keys" / "partners" / "sz-arbitration.jwks.json").write_text(
        json.dumps({"keys": [key.as_dict(private=False)]})
    )
    partners = DemoPartners(
        tmp_path / "partners", bank_jwks=ws / "keys" / "bank" / "jwks.json",
        private_keys={"arbitration": key.as_dict(private=True)},
    )
    async with partners, await Gateway.open(load_settings(ws), clock=Clock()) as gw:
        for name in ("shenzhen-arbitration", "notify-sms", "notify-mail"):
            await registry.add(gw, partners.profile_for(EXAMPLES / f"{name}.toml", ws), actor="t")
        yield gw, partners


async def test_arbitration_sms_and_email_are_delivered(tmp_path: Path) -> None:
    async with demo_workspace(tmp_path) as (gw, partners):
        case = read_case(CASE)
        for partner, purpose in PLACEMENTS:
            await placement.place(gw, case, partner, purpose, actor="t")
        stats = await Dispatcher(gw).run_once()
        assert stats.delivered == 3
        [filing] = partners.received["arbitration"]
        assert filing["claims"]["data"]["evidence"][0]["sha256"].startswith("9f2b")
        [sms] = [m["message"] for m in partners.received["sms"]]
        assert sms["to"] == "13812341999" and sms["template_id"] == "TPL-REMIND-01"
        assert sms["params"] == {
            "loan.account_number": "************2233", "loan.outstanding": "52310.45",
            "loan.currency": "CNY",
        }
        assert "ending ************2233 has 52310.45 CNY" in sms["text"]
        [mail] = partners.received["email"]
        assert mail["to"] == ["zhang.wei@example.com"]
        assert mail["message_id"].startswith("<pkg_") and "52310.45 CNY" in mail["text"]
        refs = {r["partner_id"]: r["partner_ref"] for r in await rows(gw, "SELECT * FROM packages")}
        assert refs["sz-arbitration"] == "ARB-000001" and refs["notify-sms"] == "SMS-000001"
        assert refs["notify-mail"] == mail["message_id"]


async def test_status_feeds_are_polled(tmp_path: Path) -> None:
    async with demo_workspace(tmp_path) as (gw, _):
        record = await registry.get(gw, "sz-arbitration")
        cls = gw.adapters[record.profile.adapter]
        async with cls(record.profile, cls.check_profile(record.profile)) as adapter:
            page = await adapter.poll("42")
        assert page.events == [] and page.cursor == "42"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("{loan.currency}", "slot {debtor.name} is not a field of the policy"),
        ('[adapter_config.templates.reminder]', "recipient_field 'debtor.phones[].number' is not sent"),
    ],
)
async def test_template_slots_must_be_fields_the_policy_sends(
    tmp_path: Path, change: str, problem: str
) -> None:
    text = (EXAMPLES / "notify-sms.toml").read_text()
    if change.startswith("{"):
        text = text.replace(change, "{debtor.name}")
    else:
        text = text.replace('"debtor.phones[].number" = "keep"\n', "")
    profile = tmp_path / "sms.toml"
    profile.write_text(text)
    async with await Gateway.open(load_settings(init_workspace(tmp_path / "ws"))) as gw:
        with pytest.raises(ProfileError, match=problem.replace("[", r"\[").replace("]", r"\]")
                           .replace("{", r"\{").replace("}", r"\}")):
            await registry.add(gw, profile, actor="t")


class Refusing:
    """An SMTP relay that answers DATA with a scripted reply."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.seen = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.seen += 1
        return self.replies.pop(0) if self.replies else "250 OK"


async def smtp_server(handler: Any, ca: ThrowawayCA | None) -> asyncio.Server:
    tls = ca.server_context("relay") if ca else None
    return await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="relay.test", tls_context=tls, require_starttls=tls is not None),
        "127.0.0.1", 0,
    )


async def mail_workspace(tmp_path: Path, port: int, ca: ThrowawayCA) -> Gateway:
    ws = init_workspace(tmp_path / "ws")
    text = (EXAMPLES / "notify-mail.toml").read_text()
    text = text.replace("smtp://127.0.0.1:18025", f"smtp://127.0.0.1:{port}")
    text = text.replace('tls = "starttls"', f'tls = "starttls"\nca_file = "{ca.ca_file}"')
    text += "\n[limits]\nmax_attempts = 2\nbackoff_base = 1\nbackoff_cap = 1\n"
    profile = ws / "mail.toml"
    profile.write_text(text)
    gw = await Gateway.open(load_settings(ws), clock=Clock())
    await registry.add(gw, profile, actor="t")
    await placement.place(gw, read_case(CASE), "notify-mail", "reminder", actor="t")
    return gw


async def test_smtp_4xx_is_retried_and_5xx_is_dead(tmp_path: Path) -> None:
    ca = ThrowawayCA(tmp_path / "ca")
    handler = Refusing(["451 4.3.0 try again later", "554 5.7.1 message refused"])
    server = await smtp_server(handler, ca)
    gw = await mail_workspace(tmp_path, server.sockets[0].getsockname()[1], ca)
    try:
        await Dispatcher(gw).run_once()
        assert gw.clock is not None
        gw.clock.advance(5)  # type: ignore[attr-defined]
        await Dispatcher(gw).run_once()
        history = await rows(gw, "SELECT outcome, status, error_class FROM attempts ORDER BY number")
        assert [(h["outcome"], h["status"]) for h in history] == [("retry", "451"), ("dead", "554")]
        [pkg] = await rows(gw, "SELECT last_error FROM packages")
        assert "message refused" in pkg["last_error"]
    finally:
        await gw.close()
        server.close()


async def test_mail_is_never_sent_without_tls(tmp_path: Path) -> None:
    ca = ThrowawayCA(tmp_path / "ca")
    handler = Refusing([])
    server = await smtp_server(handler, None)  # offers no STARTTLS
    gw = await mail_workspace(tmp_path, server.sockets[0].getsockname()[1], ca)
    try:
        await Dispatcher(gw).run_once()
        [pkg] = await rows(gw, "SELECT state, last_error FROM packages")
        assert pkg["state"] == "retry_wait" and "STARTTLS" in pkg["last_error"]
        assert handler.seen == 0
    finally:
        await gw.close()
        server.close()
