"""Counting the way the sources count: contacts in the order they happened, whatever the
order of their reports; answered calls are conversations whoever hung up; every zone the
person may be in."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.supervision.rules import Breach, load_rule_pack
from tests.rule_contacts import contact as call

SH = "Asia/Shanghai"
NY = "America/New_York"
LA = "America/Los_Angeles"
CN = load_rule_pack("cn")
US = load_rule_pack("us-reg-f")


def at(zone: str, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(2024, 3, d, h, mi, tzinfo=ZoneInfo(zone))




def of_rule(breaches: list[Breach], rule: str) -> list[Breach]:
    return [b for b in breaches if b.rule == rule]


# --- item 2: a late report is judged against the whole window ------------------------------


def test_a_late_report_completes_the_cap_and_names_the_call_that_crossed_it() -> None:
    stored = [call(at(SH, 1, h), outcome="connected", number=f"n{h}") for h in (10, 11, 12)]
    late = call(at(SH, 1, 9), outcome="connected", partner="agency-b", number="n9")
    [hit] = of_rule(CN.check_contact(late, stored, SH), "cn.voice-connected-daily")
    assert hit.contact is stored[2]  # the 12:00 call is the fourth of the day
    assert hit.evidence["count"] == 4 and "at 2024-03-01 12:00" in hit.message
    assert hit.evidence["partners"] == ["agency-a", "agency-b"]


def test_a_report_before_the_others_in_time_pushes_a_later_attempt_over_the_per_number_cap() -> None:
    later = [call(at(SH, 1, 20, i)) for i in range(6)]
    [hit] = of_rule(CN.check_contact(call(at(SH, 1, 9)), later, SH), "cn.attempts-per-number-daily")
    assert hit.contact is later[5] and hit.evidence["count"] == 7


def test_a_late_conversation_makes_the_calls_after_it_breaches() -> None:
    calls = [call(at(NY, 3, 10)), call(at(NY, 5, 10))]
    talk = call(at(NY, 2, 10), outcome="connected")
    hits = of_rule(US.check_contact(talk, calls, NY), "us.after-conversation")
    assert [h.contact for h in hits] == calls


def test_a_breach_already_found_is_not_raised_again() -> None:
    calls = [call(at(SH, 1, 9, i)) for i in range(7)]  # the seventh already breaches
    again = call(at(SH, 1, 9, 30))
    hits = of_rule(CN.check_contact(again, calls, SH), "cn.attempts-per-number-daily")
    assert [h.contact for h in hits] == [again]


# --- item 4: an answered call is a conversation, whoever refused -----------------------------


def test_four_refused_calls_a_day_break_the_three_conversation_cap() -> None:
    calls = [call(at(SH, 1, 9 + i), outcome="refused", number=f"n{i}") for i in range(4)]
    [hit] = of_rule(CN.check_contact(calls[3], calls[:3], SH), "cn.voice-connected-daily")
    assert hit.contact is calls[3]


def test_a_refused_call_opens_the_seven_day_pause() -> None:
    refused = call(at(NY, 1, 10), outcome="refused")
    assert of_rule(US.check_contact(call(at(NY, 4, 10)), [refused], NY), "us.after-conversation")


def test_unanswered_calls_and_messages_are_not_conversations() -> None:
    history = [call(at(SH, 1, 9, i), outcome=o, number=f"n{i}")
               for i, o in enumerate(["no_answer", "left_message", "wrong_party"])]  # fmt: skip
    history.append(call(at(SH, 1, 10), channel="sms", outcome="left_message"))
    new = call(at(SH, 1, 12), outcome="connected", number="n9")
    assert of_rule(CN.check_contact(new, history, SH), "cn.voice-connected-daily") == []


# --- item 5: every zone the person may be in ---------------------------------------------------


def test_a_number_in_another_zone_must_be_inside_the_hours_there_too() -> None:
    # 08:30 in New York is 05:30 in Los Angeles.
    early = call(at(NY, 1, 8, 30), zones=(LA,))
    [hit] = of_rule(US.check_contact(early, [], NY), "us.hours")
    assert hit.evidence["zones"] == [LA] and "every time zone" in hit.message
    assert of_rule(US.check_contact(call(at(NY, 1, 11, 30), zones=(LA,)), [], NY), "us.hours") == []


def test_next_allowed_waits_for_a_moment_convenient_in_every_zone() -> None:
    # 20:30 in New York: the window there closes at 21:00, but it is 17:30 in Los Angeles.
    assert US.next_allowed(at(NY, 1, 20, 30), NY, [LA]) == at(NY, 1, 20, 30)
    # 07:00 New York: New York opens at 08:00, Los Angeles at 11:00 New York time.
    assert US.next_allowed(at(NY, 1, 7), NY, [LA]) == at(LA, 1, 8)
    # Shanghai and New York share no hour of the US window on some days: None or a common one.
    common = US.next_allowed(at(NY, 1, 7), NY, [SH])
    assert common is None or not US.hours.outside(common, [ZoneInfo(NY), ZoneInfo(SH)])
