"""A property: the same contacts and requests, reported in any order and by any partners,
give the same breaches; each names the contact that broke the rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from random import Random
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.supervision.rules import Breach, Contact, Request, RulePack, load_rule_pack
from tests.rule_contacts import contact as call

SH = "Asia/Shanghai"
NY = "America/New_York"
CN = load_rule_pack("cn")
US = load_rule_pack("us-reg-f")
START = datetime(2024, 3, 1, tzinfo=ZoneInfo(SH))




#: Rules whose breaches a later report can only add to. cn.third-party-before-unreachable
#: is judged on the calls on record (a failed call reported after the third-party call does
#: not withdraw a breach), so its result depends on the order by design.
ORDER_FREE = {
    "cn.voice-connected-daily",
    "cn.attempts-per-number-daily",
    "cn.third-party-stop",
    "cn.third-party-caps",
    "us.7-in-7",
    "us.after-conversation",
    "us.third-party-locate-once",
    "us.medium-opt-out",
    "us.cease-communication",
    "us.attorney",
    "us.workplace",
}

moments = st.integers(0, 5 * 24 * 60 - 1).map(lambda m: START + timedelta(minutes=m))
contacts = st.builds(
    call,
    moments,
    outcome=st.sampled_from(["no_answer", "connected", "refused", "left_message"]),
    number=st.sampled_from(["n1", "n2", "tp1", None]),
    target=st.sampled_from(["debtor", "debtor", "third_party"]),
    debt=st.sampled_from(["case-1", "case-2"]),
    channel=st.sampled_from(["voice", "voice", "ai_voice", "sms"]),
)
requests = st.builds(
    Request,
    moments,
    kind=st.sampled_from(["opt_out", "cease", "attorney", "workplace", "stop_third_party"]),
    partner=st.just("agency-a"),
    debt=st.just("case-1"),
    channel=st.sampled_from(["voice", "sms", None]),
    number=st.sampled_from(["n1", "tp1", None]),
)


def key(breach: Breach) -> tuple[str, object]:
    c = breach.contact
    assert c is not None
    return breach.rule, (c.at, c.debt, c.channel, c.target, c.outcome, c.number)  # whoever reported it


def reported(pack: RulePack, items: list[Contact | Request], tz: str) -> set[tuple[str, object]]:
    """Play the pipeline: each report judged against those stored before it."""
    stored: list[Contact] = []
    asked: list[Request] = []
    raised: set[tuple[str, object]] = set()
    for item in items:
        if isinstance(item, Contact):
            found = pack.check_contact(item, stored, tz, asked)
            stored.append(item)
        else:
            found = pack.check_request(item, stored, tz, asked)
            asked.append(item)
        raised |= {key(b) for b in found if b.rule in ORDER_FREE}
    return raised


@settings(max_examples=150, deadline=None)
@given(
    found=st.lists(contacts, min_size=1, max_size=25),
    asked=st.lists(requests, max_size=3),
    order=st.randoms(use_true_random=False),
    partners=st.lists(st.sampled_from(["agency-a", "agency-b", "agency-c"]), min_size=25, max_size=25),
)
def test_any_arrival_order_and_any_partners_give_the_same_breaches(
    found: list[Contact], asked: list[Request], order: Random, partners: list[str]
) -> None:
    # Requests bind everyone from when they were made (reported at once): then who
    # reported a contact does not matter, and neither does the order of the reports.
    asked = [replace(r, known_at=r.at) for r in asked]
    for pack, tz in ((CN, SH), (US, NY)):
        expected = {key(b) for b in pack.breaches(found, tz, asked) if b.rule in ORDER_FREE}
        shuffled: list[Contact | Request] = [*found, *asked]
        order.shuffle(shuffled)
        assert reported(pack, shuffled, tz) == expected
        moved = [replace(c, partner=p) for c, p in zip(found, partners, strict=False)]
        assert {key(b) for b in pack.breaches(moved, tz, asked) if b.rule in ORDER_FREE} == expected
