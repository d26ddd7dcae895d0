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




#: Every rule, judged on any arrival order: only cn.third-party-before-unreachable is left
#: out, as it judges the calls on record when the third-party call was reported (a call
#: reported later does not count), which a shuffle without arrival times cannot say;
#: `test_reports_arriving_after_random_delays_give_the_same_breaches` covers it.
ORDER_FREE = {rule.id for pack in (CN, US) for rule in pack.rules()} - {"cn.third-party-before-unreachable"}

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


def reported(
    pack: RulePack, items: list[Contact | Request], tz: str, rules: set[str] = ORDER_FREE
) -> set[tuple[str, object]]:
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
        raised |= {key(b) for b in found if b.rule in rules}
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


ALL = ORDER_FREE | {"cn.third-party-before-unreachable"}
#: Contacts closer together and more often unanswered, so that runs of failed calls and
#: third parties called during them, reported late, are common.
dense = st.builds(
    call,
    st.integers(0, 36 * 60 - 1).map(lambda m: START + timedelta(minutes=m)),
    outcome=st.sampled_from(["no_answer", "no_answer", "no_answer", "connected", "refused", "left_message"]),
    number=st.sampled_from(["n1", "n2", "tp1", None]),
    target=st.sampled_from(["debtor", "debtor", "third_party"]),
    debt=st.sampled_from(["case-1", "case-2"]),
    channel=st.sampled_from(["voice", "voice", "ai_voice", "sms"]),
)


@settings(max_examples=150, deadline=None)
@given(
    found=st.lists(st.one_of(contacts, dense), min_size=1, max_size=25),
    asked=st.lists(requests, max_size=3),
    delays=st.lists(st.integers(0, 24 * 60), min_size=25, max_size=25),
)
def test_reports_arriving_after_random_delays_give_the_same_breaches(
    found: list[Contact], asked: list[Request], delays: list[int]
) -> None:
    """As the pipeline sees them: each contact reported up to a day after it was made
    (``known_at``), the reports arriving in that order. (Who reported a contact matters
    here only through that time: a refusal or a request binds the partner that heard it
    at once, the others from when the gateway learnt of it.)"""
    late = [  # each report at a time of its own (the microseconds): the order they arrive in
        replace(c, known_at=c.at + timedelta(minutes=d, microseconds=n))
        for n, (c, d) in enumerate(zip(found, delays, strict=False))
    ]
    asked = [replace(r, known_at=r.at) for r in asked]

    def arrival(item: Contact | Request) -> datetime:
        assert item.known_at is not None
        return item.known_at

    for pack, tz in ((CN, SH), (US, NY)):
        expected = {key(b) for b in pack.breaches(late, tz, asked) if b.rule in ALL}
        assert reported(pack, sorted([*late, *asked], key=arrival), tz, ALL) == expected


def _raised(breaches: list[Breach]) -> list[tuple[str, int, str]]:
    """Each breach by rule, contact and wording, in a stable order, repeats kept."""
    return sorted((b.rule, id(b.contact), b.message) for b in breaches)


def _added(pack: RulePack, history: list[Contact], new: Contact, tz: str, asked: list[Request]) -> list:
    """What judging every contact again adds: the breaches with ``new`` whose contact did
    not break the same rule without it, worded as with it."""
    before = {(b.rule, id(b.contact)) for b in pack.breaches(history, tz, asked)}
    after = pack.breaches([*history, new], tz, asked)
    return _raised([b for b in after if (b.rule, id(b.contact)) not in before])


#: Arrival times close together, so that reports learnt of at the same moment (a
#: frozen clock, one group of reports) and a new report learnt of before stored ones
#: (instances whose clocks differ) are common.
_LEARNT = START + timedelta(days=6)
arrivals = st.integers(-1, 2).map(lambda m: _LEARNT + timedelta(minutes=m))
people = st.sampled_from(["agency-a", "agency-b", "gateway"])
anywhere = st.builds(
    call,
    st.integers(0, 36 * 60 - 1).map(lambda m: START + timedelta(minutes=m)),
    outcome=st.sampled_from(
        ["no_answer", "no_answer", "wrong_party", "connected", "refused", "left_message"]
    ),
    number=st.sampled_from(["n1", "n2", "tp1", "tp2", None]),
    target=st.sampled_from(["debtor", "debtor", "third_party"]),
    channel=st.sampled_from(["voice", "voice", "ai_voice", "sms", "email"]),
    place=st.sampled_from([None, "work"]),
    partner=people,
    known_at=arrivals,
)
asked_late = st.builds(
    Request,
    st.integers(0, 36 * 60 - 1).map(lambda m: START + timedelta(minutes=m)),
    kind=st.sampled_from(["opt_out", "cease", "attorney", "workplace", "stop_third_party"]),
    partner=people,
    debt=st.just("case-1"),
    channel=st.sampled_from(["voice", "sms", "email", None]),
    number=st.sampled_from(["n1", "tp1", None]),
    known_at=st.one_of(st.none(), arrivals),
)


@settings(max_examples=300, deadline=None)
@given(history=st.lists(anywhere, max_size=20), new=anywhere, asked=st.lists(asked_late, max_size=3))
def test_a_report_adds_exactly_what_judging_everything_again_adds(
    history: list[Contact], new: Contact, asked: list[Request]
) -> None:
    """`check_contact` judges some rules by the new contact alone, and skips those it
    cannot change (a third-party rule, a contact with the debtor): what it finds is
    still exactly what judging every contact again adds, wording and repeats included,
    whoever reported what and whenever the gateway learnt of it."""
    for pack, tz in ((CN, SH), (US, NY)):
        assert _raised(pack.check_contact(new, history, tz, asked)) == _added(pack, history, new, tz, asked)


def test_a_call_reported_with_a_third_party_contact_can_make_it_a_breach() -> None:
    # Three unanswered calls, then a third party: the debtor was unreachable. A report
    # of a conversation before the third-party call, learnt of at the same moment as
    # it (one group of reports), shows the debtor was reachable after all.
    rule = "cn.third-party-before-unreachable"
    morning, same = START + timedelta(hours=10), START + timedelta(hours=12)
    history = [call(morning + timedelta(minutes=m), known_at=same) for m in (0, 10, 20)]
    third = call(morning + timedelta(minutes=40), target="third_party", number="tp1", known_at=same)
    spoke = call(morning + timedelta(minutes=30), outcome="connected", known_at=same)
    assert [b for b in CN.check_contact(third, history, SH) if b.rule == rule] == []
    found = [b.contact for b in CN.check_contact(spoke, [*history, third], SH) if b.rule == rule]
    assert found == [third]
    # Learnt of after the third-party call was reported, it does not count for it.
    later = replace(spoke, known_at=same + timedelta(seconds=1))
    assert [b for b in CN.check_contact(later, [*history, third], SH) if b.rule == rule] == []
