"""Who may be contacted: third parties (China, United States) and the requests people
make (United States), each across partners."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.supervision.rules import Breach, Contact, Request, load_rule_pack
from tests.rule_contacts import contact

SH = "Asia/Shanghai"
NY = "America/New_York"
CN = load_rule_pack("cn")
US = load_rule_pack("us-reg-f")


def at(zone: str, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(2024, 3, d, h, mi, tzinfo=ZoneInfo(zone))




def third(when: datetime, **fields: object) -> Contact:
    return contact(when, target="third_party", number=fields.pop("number", "tp-1"), text="请他回电", **fields)


def rule(found: list[Breach], name: str) -> list[Breach]:
    return [b for b in found if b.rule == name]


UNREACHABLE = [contact(at(SH, 1, 9 + i)) for i in range(3)]


# --- China: third parties ------------------------------------------------------------------


def test_cn_a_third_party_who_refused_is_not_called_again_by_anyone() -> None:
    refused = third(at(SH, 1, 15), outcome="refused")
    again = third(at(SH, 2, 15), partner="agency-b")
    [hit] = rule(CN.check_contact(again, [*UNREACHABLE, refused], SH), "cn.third-party-stop")
    assert hit.contact is again and hit.evidence["number"] == "tp-1"
    other = third(at(SH, 2, 15), partner="agency-b", number="tp-2")
    assert rule(CN.check_contact(other, [*UNREACHABLE, refused], SH), "cn.third-party-stop") == []


def test_cn_a_third_partys_request_reported_late_flags_the_calls_after_it() -> None:
    calls = [third(at(SH, 1, 16)), third(at(SH, 2, 10))]
    asked = Request(at(SH, 1, 15, 30), "stop_third_party", "agency-a", "case-1", number="tp-1")
    hits = rule(CN.check_request(asked, [*UNREACHABLE, *calls], SH), "cn.third-party-stop")
    assert [h.contact for h in hits] == calls


def test_cn_third_party_calls_are_capped_per_day_and_in_all() -> None:
    caps = CN.third_party_caps
    assert caps is not None
    day_one = [third(at(SH, 1, 15 + i), number=f"tp-{i}") for i in range(caps.daily + 1)]
    [hit] = rule(CN.breaches([*UNREACHABLE, *day_one], SH), "cn.third-party-caps")
    assert hit.contact is day_one[-1] and hit.evidence["day_count"] == caps.daily + 1
    spread = [third(at(SH, 1, 15) + timedelta(days=i), number=f"tp-{i}") for i in range(caps.total + 1)]
    [hit] = rule(CN.breaches([*UNREACHABLE, *spread], SH), "cn.third-party-caps")
    assert hit.contact is spread[-1] and hit.evidence["total_count"] == caps.total + 1


def test_cn_third_party_only_once_the_debtor_is_unreachable() -> None:
    early = third(at(SH, 1, 15))
    [hit] = rule(CN.check_contact(early, UNREACHABLE[:2], SH), "cn.third-party-before-unreachable")
    assert hit.evidence["failed_attempts"] == 2
    assert rule(CN.check_contact(early, UNREACHABLE, SH), "cn.third-party-before-unreachable") == []
    # A text message is not an attempt to reach the debtor by phone, nor does it reach them.
    sms = contact(at(SH, 1, 14), channel="sms", outcome="left_message")
    assert rule(CN.check_contact(early, [*UNREACHABLE, sms], SH), "cn.third-party-before-unreachable") == []
    answered = contact(at(SH, 1, 14), outcome="refused")
    assert rule(CN.check_contact(early, [*UNREACHABLE, answered], SH), "cn.third-party-before-unreachable")


def test_cn_unreachable_counts_the_calls_on_record_when_the_third_party_call_was_reported() -> None:
    """A failed call reported after the third-party call does not make the debtor
    unreachable for it: the pipeline and the whole record agree, and nothing is withdrawn."""
    name = "cn.third-party-before-unreachable"
    reported_at_once = [replace(c, known_at=c.at) for c in UNREACHABLE]
    reported_late = replace(reported_at_once[2], known_at=at(SH, 1, 18))
    early = replace(third(at(SH, 1, 15)), known_at=at(SH, 1, 15))
    assert rule(CN.check_contact(early, reported_at_once, SH), name) == []
    history = [*reported_at_once[:2], reported_late]
    [hit] = rule(CN.breaches([*history, early], SH), name)
    assert hit.contact is early and hit.evidence["failed_attempts"] == 2
    [first] = rule(CN.check_contact(early, history[:2], SH), name)  # the third party's report first
    assert rule(CN.check_contact(reported_late, [*history[:2], early], SH), name) == []  # not withdrawn
    assert [first.contact] == [h.contact for h in rule(CN.check_contact(early, history, SH), name)]


def test_cn_a_third_party_call_reported_without_its_text_is_flagged() -> None:
    silent = contact(at(SH, 1, 15), target="third_party", number="tp-1")
    [hit] = rule(CN.check_contact(silent, UNREACHABLE, SH), "cn.third-party-disclosure")
    assert "without its text" in hit.message


def test_cn_a_third_party_without_a_known_number_is_flagged() -> None:
    unknown = third(at(SH, 1, 15), number=None)
    [hit] = rule(CN.check_contact(unknown, UNREACHABLE, SH), "cn.third-party-stop")
    assert hit.evidence["number"] is None


# --- United States: requests --------------------------------------------------------------


def test_us_an_opt_out_of_texts_stops_texts_by_every_partner_not_calls() -> None:
    stop = Request(at(NY, 1, 10), "opt_out", "notify-sms", "case-1", channel="sms", known_at=at(NY, 1, 10, 5))
    text = contact(at(NY, 2, 10), channel="sms", outcome="left_message", partner="agency-b",
                   text="Reply STOP to opt out")  # fmt: skip
    [hit] = rule(US.check_contact(text, [], NY, [stop]), "us.medium-opt-out")
    assert hit.evidence["request"] == "opt_out"
    assert rule(US.check_contact(contact(at(NY, 2, 10)), [], NY, [stop]), "us.medium-opt-out") == []


def test_us_a_request_binds_other_partners_once_the_gateway_knows_it() -> None:
    stop = Request(at(NY, 1, 10), "cease", "agency-a", "case-1", known_at=at(NY, 1, 15))
    own = contact(at(NY, 1, 12))
    other_before = contact(at(NY, 1, 12), partner="agency-b")
    other_after = contact(at(NY, 1, 16), partner="agency-b")
    found = US.breaches([own, other_before, other_after], NY, [stop])
    assert [b.contact for b in rule(found, "us.cease-communication")] == [own, other_after]


def test_us_attorney_representation_stops_contact_with_debtor_and_third_parties() -> None:
    lawyer = Request(at(NY, 1, 10), "attorney", "agency-a", "case-1")
    calls = [contact(at(NY, 2, 10)), contact(at(NY, 2, 11), target="third_party", number="tp-1")]
    assert len(rule(US.breaches(calls, NY, [lawyer]), "us.attorney")) == 2


def test_us_no_calls_to_work_after_a_workplace_request() -> None:
    named = Request(at(NY, 1, 10), "workplace", "agency-a", "case-1", number="work-1")
    to_work = contact(at(NY, 2, 10), number="work-1")
    to_mobile = contact(at(NY, 2, 10), number="mobile-1")
    found = rule(US.breaches([to_work, to_mobile], NY, [named]), "us.workplace")
    assert [b.contact for b in found] == [to_work]
    any_work = Request(at(NY, 1, 10), "workplace", "agency-a", "case-1")
    labelled = contact(at(NY, 2, 10), number="work-2", place="work")
    assert rule(US.breaches([labelled, to_mobile], NY, [any_work]), "us.workplace")[0].contact is labelled


def test_us_third_party_once_across_partners_and_without_a_number() -> None:
    first = contact(at(NY, 1, 10), target="third_party", number="tp-1", partner="agency-a")
    again = contact(at(NY, 20, 10), target="third_party", number="tp-1", partner="agency-b")
    [hit] = rule(US.check_contact(again, [first], NY), "us.third-party-locate-once")
    assert hit.contact is again
    unknown = contact(at(NY, 2, 10), target="third_party", number=None)
    [hit] = rule(US.check_contact(unknown, [first], NY), "us.third-party-locate-once")
    assert "without a number" in hit.message
