"""The rule pack before the gateway's own SMS and email: held outside the debtor's hours
(retries and late backlogs too), held while a cap across partners is full, refused when
the wording breaks a rule; delivered messages count in the debtor's contact history."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.cli.placement import read_case
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.demo.partners import DemoPartners
from gateway.inbound import pipeline as inbound
from gateway.onboarding import registry
from gateway.onboarding.jwk import generate_encryption_key
from gateway.placement import service as placement
from gateway.supervision.rules import RulePack, load_rule_pack
from gateway.supervision.rules_contact import CallsInDays
from tests.callbacks import dumps, event
from tests.partners import CASE, REPO, Clock, init_workspace, rows

EXAMPLES = REPO / "examples" / "partners"
SHANGHAI = ZoneInfo("Asia/Shanghai")  # the sample debtor's time zone
FAST_RETRIES = "[limits]\nbackoff_base = 1\nbackoff_cap = 1\n"


class Partners(DemoPartners):
    """The demo stand-ins, with an SMS API that first answers what ``sms_script`` says."""

    sms_script: list[web.Response]

    async def _sms(self, request: web.Request) -> web.Response:
        if self.sms_script:
            self.http["sms"].requests += 1
            return self.sms_script.pop(0)
        return await super()._sms(request)


@asynccontextmanager
async def messaging(
    tmp_path: Path, clock: Clock, sms_template: str | None = None
) -> AsyncIterator[tuple[Gateway, Partners]]:
    """A workspace with notify-sms, notify-mail and acme-collect, all served."""
    ws = init_workspace(tmp_path / "ws")
    key = generate_encryption_key("P-256")
    (ws / "keys" / "partners" / "acme-collect.jwks.json").write_text(
        json.dumps({"keys": [key.as_dict(private=False)]})
    )
    partners = Partners(
        tmp_path / "partners",
        bank_jwks=ws / "keys" / "bank" / "jwks.json",
        private_keys={"agency": key.as_dict(private=True)},
    )
    partners.sms_script = []
    async with partners, await Gateway.open(load_settings(ws), clock=clock) as gw:
        for name in ("notify-sms", "notify-mail", "acme-collect"):
            profile = partners.profile_for(EXAMPLES / f"{name}.toml", ws / "profiles")
            text = profile.read_text()
            if name == "notify-sms":
                text = text.replace("[limits]\n", FAST_RETRIES)
                if sms_template is not None:
                    text = text.replace(" Reply TD to opt out.", sms_template)
            profile.write_text(text)
            await registry.add(gw, profile, actor="t")
        yield gw, partners


def local(moment: str | datetime) -> datetime:
    at = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return at.astimezone(SHANGHAI)


def tomorrow_0800(clock: Clock) -> datetime:
    return datetime.combine(local(clock.now).date() + timedelta(days=1), time(8), SHANGHAI)


def sms_contact(case_ref: str, at: datetime) -> dict[str, Any]:
    """A partner's report that it texted the debtor."""
    return event(case_ref, "contact_attempt", at=at, channel="sms", target="debtor", outcome="left_message")


def one_message_a_day(pack: RulePack) -> RulePack:
    """The pack with a cap on the gateway's channels: one SMS or email a local day."""
    cap = CallsInDays(
        id="test.messages-daily", source="test", max=1, days=1, channels=frozenset({"sms", "email"})
    )
    return pack.model_copy(update={"calls_in_days": cap})


async def package(gw: Gateway, package_id: str) -> dict[str, Any]:
    [row] = await rows(
        gw, "SELECT state, attempts, next_attempt_at, last_error FROM packages WHERE id = ?", (package_id,)
    )
    return row


async def report(gw: Gateway, partner: str, body: dict[str, Any], webhook_id: str) -> inbound.Ingested:
    return await inbound.ingest(gw, partner, dumps(body).encode(), channel="poll", webhook_id=webhook_id)


async def test_sms_retry_falling_at_2230_waits_until_0800(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(11 * 3600 + 59 * 60)  # 21:59 in Shanghai, inside the contact hours
    async with messaging(tmp_path, clock) as (gw, partners):
        # The provider asks to come back in 31 minutes: the retry falls at 22:30.
        partners.sms_script = [web.Response(status=429, headers={"Retry-After": "1860"})]
        sms = await placement.place(gw, read_case(CASE), "notify-sms", "reminder", actor="t")
        await Dispatcher(gw).run_once()
        first = await package(gw, sms.package_id)
        assert first["state"] == "retry_wait"
        assert local(first["next_attempt_at"]).strftime("%H:%M") == "22:30"

        clock.to(first["next_attempt_at"])
        stats = await Dispatcher(gw).run_once()
        assert stats.delivered == 0 and stats.dead == 0
        assert partners.http["sms"].requests == 1 and partners.received["sms"] == []
        held = await package(gw, sms.package_id)
        assert held["state"] == "retry_wait" and held["attempts"] == 1  # not counted as a try
        assert local(held["next_attempt_at"]) == tomorrow_0800(clock)
        assert held["last_error"].startswith("held by the rule pack until")
        assert "cn.hours" in held["last_error"]

        clock.advance(3 * 3600)  # a backlog drained at 01:30 still waits
        assert (await Dispatcher(gw).run_once()).delivered == 0
        assert partners.http["sms"].requests == 1

        clock.to(held["next_attempt_at"])
        assert (await Dispatcher(gw).run_once()).delivered == 1
        [message] = partners.received["sms"]
        assert message["idempotency_key"] == sms.package_id
        history = await rows(gw, "SELECT number, outcome FROM attempts ORDER BY number")
        assert [(h["number"], h["outcome"]) for h in history] == [(1, "retry"), (2, "delivered")]


async def test_delivered_sms_is_a_contact_and_an_email_over_the_cap_waits(tmp_path: Path) -> None:
    clock = Clock()
    async with messaging(tmp_path, clock) as (gw, partners):
        gw.rules = one_message_a_day(gw.rules)
        case = read_case(CASE)
        sms = await placement.place(gw, case, "notify-sms", "reminder", actor="t")
        assert (await Dispatcher(gw).run_once()).delivered == 1
        [contact] = await rows(gw, "SELECT partner_id, occurred_at, source, webhook_id, body FROM events")
        assert (contact["partner_id"], contact["source"], contact["webhook_id"]) == (
            "notify-sms",
            "gateway",
            sms.package_id,
        )
        body = json.loads(contact["body"])
        assert (body["type"], body["channel"], body["target"]) == ("contact_attempt", "sms", "debtor")
        assert "opt out" in body["text"] and "{loan.outstanding}" in body["text"]  # the template, no data

        mail = await placement.place(gw, case, "notify-mail", "reminder", actor="t")
        stats = await Dispatcher(gw).run_once()
        assert stats.delivered == 0 and partners.received["email"] == []
        held = await package(gw, mail.package_id)
        assert (held["state"], held["attempts"]) == ("queued", 0)
        assert "test.messages-daily" in held["last_error"]
        assert local(held["next_attempt_at"]) == tomorrow_0800(clock)

        clock.to(held["next_attempt_at"])
        assert (await Dispatcher(gw).run_once()).delivered == 1
        assert len(partners.received["email"]) == 1


async def test_two_reminders_claimed_together_only_one_goes(tmp_path: Path) -> None:
    async with messaging(tmp_path, Clock()) as (gw, partners):
        gw.rules = one_message_a_day(gw.rules)
        case = read_case(CASE)
        for _ in range(2):
            await placement.place(gw, case, "notify-sms", "reminder", actor="t")
        assert (await Dispatcher(gw).run_once()).delivered == 1
        assert len(partners.received["sms"]) == 1
        states = await rows(gw, "SELECT state, last_error FROM packages ORDER BY state")
        assert [s["state"] for s in states] == ["delivered", "queued"]
        assert "test.messages-daily" in states[1]["last_error"]


async def test_contacts_are_counted_both_ways_between_partners_and_the_gateway(tmp_path: Path) -> None:
    clock = Clock()
    async with messaging(tmp_path, clock) as (gw, partners):
        gw.rules = one_message_a_day(gw.rules)
        case = read_case(CASE)
        agency = await placement.place(gw, case, "acme-collect", "collection", actor="t")
        await report(gw, "acme-collect", event(agency.case_ref, "accepted", at=clock.now), "w1")
        texted = sms_contact(agency.case_ref, clock.now - timedelta(minutes=30))
        assert (await report(gw, "acme-collect", texted, "w2")).violations == []

        # The agency texted the debtor this morning: the gateway's reminder waits a day.
        sms = await placement.place(gw, case, "notify-sms", "reminder", actor="t")
        assert (await Dispatcher(gw).run_once()).delivered == 1  # the agency's package only
        held = await package(gw, sms.package_id)
        assert held["state"] == "queued" and "test.messages-daily" in held["last_error"]

        # Next morning the reminder goes first; the agency's text an hour later breaches.
        clock.to(held["next_attempt_at"])
        assert (await Dispatcher(gw).run_once()).delivered == 1
        later = sms_contact(agency.case_ref, clock.now + timedelta(hours=1))
        clock.advance(3600)
        found = await report(gw, "acme-collect", later, "w3")
        assert [b.rule for b in found.violations] == ["test.messages-daily"]


async def test_wording_time_cannot_cure_is_refused_and_never_sent(tmp_path: Path) -> None:
    # Onboarded under cn, which asks for no opt-out notice; the bank then moves to us-reg-f.
    async with messaging(tmp_path, Clock(), sms_template="") as (gw, partners):
        gw.rules = load_rule_pack("us-reg-f")
        sms = await placement.place(gw, read_case(CASE), "notify-sms", "reminder", actor="t")
        stats = await Dispatcher(gw).run_once()
        assert (stats.delivered, stats.dead) == (0, 1)
        assert partners.http["sms"].requests == 0
        dead = await package(gw, sms.package_id)
        assert (dead["state"], dead["attempts"]) == ("dead", 0)
        assert dead["last_error"].startswith("refused by the rule pack: us.opt-out")
        assert await rows(gw, "SELECT * FROM events") == []


async def test_a_medium_the_debtor_closed_with_an_agency_is_closed_to_the_gateway(tmp_path: Path) -> None:
    clock = Clock()
    async with messaging(tmp_path, clock) as (gw, partners):
        gw.rules = load_rule_pack("us-reg-f")
        case = read_case(CASE)
        agency = await placement.place(gw, case, "acme-collect", "collection", actor="t")
        await report(gw, "acme-collect", event(agency.case_ref, "accepted", at=clock.now), "w1")
        no_texts = event(agency.case_ref, "contact_request", at=clock.now, kind="opt_out", channel="sms")
        await report(gw, "acme-collect", no_texts, "w2")
        clock.advance(60)

        sms = await placement.place(gw, case, "notify-sms", "reminder", actor="t")
        mail = await placement.place(gw, case, "notify-mail", "reminder", actor="t")
        stats = await Dispatcher(gw).run_once()
        assert partners.received["sms"] == [] and len(partners.received["email"]) == 1
        dead = await package(gw, sms.package_id)
        assert dead["state"] == "dead"
        assert dead["last_error"].startswith("refused by the rule pack: us.medium-opt-out")
        assert (await package(gw, mail.package_id))["state"] == "delivered"
        assert stats.dead == 1


async def test_a_stop_the_sms_provider_reports_for_one_number_closes_it_to_the_agency_too(
    tmp_path: Path,
) -> None:
    """Both partners receive the numbers in clear, each with its own token beside them:
    the provider's STOP names the number by its token, the agency's texts by theirs."""
    clock = Clock()
    async with messaging(tmp_path, clock) as (gw, _):
        gw.rules = load_rule_pack("us-reg-f")
        case = read_case(CASE)
        sms = await placement.place(gw, case, "notify-sms", "reminder", actor="t")
        mobile = sms.claims["data"]["debtor"]["phones"][0]
        stop = event(sms.case_ref, "contact_request", at=clock.now, kind="opt_out", channel="sms",
                     number_token=mobile["number_token"])  # fmt: skip
        assert (await report(gw, "notify-sms", stop, "w1")).violations == []
        clock.advance(60)

        agency = await placement.place(gw, case, "acme-collect", "collection", actor="t")
        await report(gw, "acme-collect", event(agency.case_ref, "accepted", at=clock.now), "w2")
        phones = agency.claims["data"]["debtor"]["phones"]
        assert phones[0]["number"] == mobile["number"] and phones[0]["number_token"] != mobile["number_token"]

        def text(phone: dict[str, str]) -> dict[str, Any]:
            return {**sms_contact(agency.case_ref, clock.now), "number_token": phone["number_token"],
                    "text": "Your payment is due. Reply STOP to opt out."}  # fmt: skip

        assert (await report(gw, "acme-collect", text(phones[1]), "w3")).violations == []
        stopped = await report(gw, "acme-collect", text(phones[0]), "w4")
        assert [b.rule for b in stopped.violations] == ["us.medium-opt-out"]
