"""Rule packs: each rule found when broken and quiet on its compliant neighbour."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ConfigError, InvalidInput
from gateway.supervision.rules import Breach, Contact, RulePack, load_rule_pack, read_rule_pack
from tests.rule_contacts import contact

SH = "Asia/Shanghai"
NY = "America/New_York"
CN = load_rule_pack("cn")
US = load_rule_pack("us-reg-f")
PACK_FILES = resources.files("gateway.supervision") / "rulepacks"


def at(zone: str, y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(zone))




def ids(breaches: list[Breach]) -> set[str]:
    return {b.rule for b in breaches}


def found(pack: RulePack, rule: str, new: Contact, history: list[Contact], tz: str) -> list[Breach]:
    return [b for b in pack.check_contact(new, history, tz) if b.rule == rule]


# --- the pack files -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["cn", "us-reg-f"])
def test_every_rule_in_the_pack_file_cites_a_source(name: str) -> None:
    raw = tomllib.loads((PACK_FILES / f"{name}.toml").read_text(encoding="utf-8"))
    tables = {key: value for key, value in raw.items() if isinstance(value, dict)}
    assert tables
    for key, table in tables.items():
        assert table.get("source", "").strip(), f"{name}.toml [{key}] has no source"
        assert table.get("id"), f"{name}.toml [{key}] has no id"
    assert len(load_rule_pack(name).rules()) == len(tables)


def test_rule_ids_are_the_documented_ones() -> None:
    assert {r.id for r in CN.rules()} == {
        "cn.hours",
        "cn.voice-connected-daily",
        "cn.attempts-per-number-daily",
        "cn.third-party-before-unreachable",
        "cn.third-party-stop",
        "cn.third-party-caps",
        "cn.third-party-disclosure",
        "cn.visit-staff",
        "text.banned-phrase",
        "cn.record-retention",
        "cn.limitation",
    }
    assert {r.id for r in US.rules()} == {
        "us.hours",
        "us.7-in-7",
        "us.after-conversation",
        "us.opt-out",
        "us.medium-opt-out",
        "us.cease-communication",
        "us.attorney",
        "us.workplace",
        "us.time-barred-suit",
        "us.third-party-locate-once",
        "us.third-party-disclosure",
        "text.banned-phrase",
        "us.record-retention",
        "us.limitation",
    }


def test_retention_years() -> None:
    assert CN.retention_years == 5
    assert US.retention_years == 3


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("end = 22:00:00", 'end = "late evening"', "hours.end"),
        ("max = 3\n", "max = 0\n", "connected_daily.max"),
        ("years = 5\n", "years = 5\nmonths = 2\n", "retention.months"),
        ("start = 08:00:00", "start = 23:00:00", "hours"),
    ],
)
def test_a_broken_pack_names_the_file_and_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    text = (PACK_FILES / "cn.toml").read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "cn.toml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_rule_pack(broken)
    assert str(broken) in str(info.value)
    assert f": {field}" in str(info.value)


def test_a_pack_without_a_source_is_refused(tmp_path: Path) -> None:
    text = (PACK_FILES / "us-reg-f.toml").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith('source = "12 CFR 1006.100')]
    broken = tmp_path / "us-reg-f.toml"
    broken.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"retention\.source: Field required"):
        read_rule_pack(broken)


def test_invalid_toml_and_unknown_names_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "cn.toml"
    bad.write_text("name = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_rule_pack(bad)
    with pytest.raises(ConfigError, match="one of: cn, us-reg-f"):
        load_rule_pack("../cn")
    renamed = tmp_path / "other.toml"
    renamed.write_text((PACK_FILES / "cn.toml").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError, match="name: 'cn' must match the file name 'other'"):
        read_rule_pack(renamed)


def test_times_without_zone_and_unknown_zones_are_refused() -> None:
    with pytest.raises(InvalidInput, match="no time zone"):
        contact(datetime(2024, 3, 1, 10))
    with pytest.raises(InvalidInput, match="Mars/Olympus"):
        CN.check_contact(contact(at(SH, 2024, 3, 1, 10)), [], "Mars/Olympus")
    with pytest.raises(InvalidInput):
        CN.next_allowed(datetime(2024, 3, 1, 10), SH)


# --- hours ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "breach"), [(7, 59, True), (8, 0, False), (21, 59, False), (22, 0, True)]
)
def test_cn_hours_edges(hour: int, minute: int, breach: bool) -> None:
    hits = found(CN, "cn.hours", contact(at(SH, 2024, 3, 1, hour, minute)), [], SH)
    assert bool(hits) is breach
    if breach:
        assert f"{hour:02d}:{minute:02d} (Asia/Shanghai)" in hits[0].message
        assert hits[0].evidence["window"] == "08:00-22:00"


@pytest.mark.parametrize(("hour", "minute", "breach"), [(20, 59, False), (21, 0, True)])
def test_us_hours_edges(hour: int, minute: int, breach: bool) -> None:
    assert bool(found(US, "us.hours", contact(at(NY, 2024, 3, 1, hour, minute)), [], NY)) is breach


def test_hours_are_judged_in_the_debtors_zone() -> None:
    moment = datetime(2024, 3, 1, 23, 30, tzinfo=UTC)  # 07:30 in Shanghai, 18:30 in New York
    assert ids(CN.check_contact(contact(moment), [], SH)) == {"cn.hours"}
    assert CN.check_contact(contact(moment), [], NY) == []


def test_letters_are_not_held_to_contact_hours() -> None:
    assert CN.check_contact(contact(at(SH, 2024, 3, 1, 23), channel="letter"), [], SH) == []


# --- daily caps (cn) ------------------------------------------------------------------


def test_cn_three_connected_calls_a_day_across_partners_then_a_breach() -> None:
    calls = [
        contact(at(SH, 2024, 3, 1, 9 + i), outcome="connected", partner=f"agency-{i}", number=f"n{i}")
        for i in range(4)
    ]
    assert found(CN, "cn.voice-connected-daily", calls[2], calls[:2], SH) == []
    [hit] = found(CN, "cn.voice-connected-daily", calls[3], calls[:3], SH)
    assert hit.evidence == {
        "count": 4,
        "limit": 3,
        "local_date": "2024-03-01",
        "partners": ["agency-0", "agency-1", "agency-2", "agency-3"],
    }


def test_cn_unanswered_calls_do_not_count_as_connected() -> None:
    history = [contact(at(SH, 2024, 3, 1, 9, i), number=f"n{i}") for i in range(5)]
    new = contact(at(SH, 2024, 3, 1, 12), outcome="connected")
    assert found(CN, "cn.voice-connected-daily", new, history, SH) == []


def test_cn_day_is_the_debtors_local_day() -> None:
    # 20:00-21:00 on 1 March and 08:30 on 2 March in New York all fall on 2 March in UTC.
    history = [contact(at(NY, 2024, 3, 1, 20, m), outcome="connected", number=f"n{m}") for m in (0, 30, 59)]
    next_morning = contact(at(NY, 2024, 3, 2, 8, 30), outcome="connected")
    assert {c.at.astimezone(UTC).date() for c in [*history, next_morning]} == {date(2024, 3, 2)}
    assert found(CN, "cn.voice-connected-daily", next_morning, history, NY) == []
    # The same instants for a debtor in Shanghai: all on 2 March there, so the fourth breaches.
    assert found(CN, "cn.voice-connected-daily", next_morning, history, SH)


def test_cn_six_attempts_per_number_then_a_breach() -> None:
    attempts = [contact(at(SH, 2024, 3, 1, 9, 8 * i), partner=f"p{i % 2}") for i in range(7)]
    assert found(CN, "cn.attempts-per-number-daily", attempts[5], attempts[:5], SH) == []
    [hit] = found(CN, "cn.attempts-per-number-daily", attempts[6], attempts[:6], SH)
    assert hit.evidence["count"] == 7
    other_number = contact(at(SH, 2024, 3, 1, 11), number="num-2")
    assert found(CN, "cn.attempts-per-number-daily", other_number, attempts[:6], SH) == []


def test_history_later_than_the_contact_counts_and_the_crossing_call_is_named() -> None:
    later = [contact(at(SH, 2024, 3, 1, 20, i), number="num-1") for i in range(6)]
    [hit] = found(CN, "cn.attempts-per-number-daily", contact(at(SH, 2024, 3, 1, 9)), later, SH)
    assert hit.contact is later[-1]


# --- third parties --------------------------------------------------------------------


def _failures(n: int) -> list[Contact]:
    return [contact(at(SH, 2024, 3, 1, 9 + i)) for i in range(n)]


def test_cn_third_party_only_after_three_failed_attempts() -> None:
    third = contact(at(SH, 2024, 3, 1, 15), target="third_party", number="ec-1", text="请他回电，谢谢")
    [hit] = found(CN, "cn.third-party-before-unreachable", third, _failures(2), SH)
    assert hit.evidence["failed_attempts"] == 2
    assert found(CN, "cn.third-party-before-unreachable", third, _failures(3), SH) == []


def test_cn_reaching_the_debtor_resets_the_failed_attempts() -> None:
    reached = contact(at(SH, 2024, 3, 1, 13), outcome="connected")
    third = contact(at(SH, 2024, 3, 1, 15), target="third_party", number="ec-1")
    assert found(CN, "cn.third-party-before-unreachable", third, [*_failures(3), reached], SH)


def test_cn_third_party_must_not_hear_of_the_debt() -> None:
    history = _failures(3)
    ok = contact(at(SH, 2024, 3, 1, 15), target="third_party", number="ec-1", text="请转告他尽快回电，谢谢")
    assert CN.check_contact(ok, history, SH) == []
    told = contact(at(SH, 2024, 3, 1, 15), target="third_party", number="ec-1", text="他的信用卡欠 款已逾期")
    [hit] = found(CN, "cn.third-party-disclosure", told, history, SH)
    assert hit.evidence["phrases"] == ["欠款", "逾期", "信用卡"]


def test_us_third_party_only_once_each() -> None:
    first = contact(at(NY, 2024, 3, 1, 10), target="third_party", number="tp-1")
    again = contact(at(NY, 2024, 3, 3, 10), target="third_party", number="tp-1")
    someone_else = contact(at(NY, 2024, 3, 3, 10), target="third_party", number="tp-2")
    assert US.check_contact(first, [], NY) == []
    assert US.check_contact(someone_else, [first], NY) == []
    [hit] = found(US, "us.third-party-locate-once", again, [first], NY)
    assert hit.evidence == {"number": "tp-1", "first_contact_at": first.at.isoformat()}


def test_us_third_party_asked_only_for_location() -> None:
    ask = contact(at(NY, 2024, 3, 1, 10), target="third_party", text="Could you confirm a good phone number?")
    tell = contact(at(NY, 2024, 3, 1, 10), target="third_party", text="He owes us; the DEBT is past due.")
    assert US.check_contact(ask, [], NY) == []
    assert found(US, "us.third-party-disclosure", tell, [], NY)[0].evidence["phrases"] == [
        "debt",
        "owes",
        "past due",
    ]


# --- visits -----------------------------------------------------------------------------


@pytest.mark.parametrize(("staff", "breach"), [(2, False), (3, False), (1, True), (None, True)])
def test_cn_visits_need_two_staff(staff: int | None, breach: bool) -> None:
    visit = contact(at(SH, 2024, 3, 1, 10), channel="visit", outcome="connected", staff_count=staff)
    assert bool(found(CN, "cn.visit-staff", visit, [], SH)) is breach


# --- call frequency (us) ------------------------------------------------------------------


def test_us_seven_calls_in_seven_days_then_a_breach() -> None:
    week = [contact(at(NY, 2024, 3, 1 + i, 10)) for i in range(7)]
    assert found(US, "us.7-in-7", week[6], week[:6], NY) == []
    [hit] = found(US, "us.7-in-7", contact(at(NY, 2024, 3, 7, 15)), week, NY)
    assert hit.evidence == {"count": 8, "limit": 7, "first_local_date": "2024-03-01", "debt": "case-1"}
    assert found(US, "us.7-in-7", contact(at(NY, 2024, 3, 8, 9)), week, NY) == []
    assert found(US, "us.7-in-7", contact(at(NY, 2024, 3, 7, 15), debt="case-2"), week, NY) == []


def test_us_no_call_within_seven_days_after_a_conversation() -> None:
    talk = contact(at(NY, 2024, 3, 1, 10), outcome="connected")
    [hit] = found(US, "us.after-conversation", contact(at(NY, 2024, 3, 7, 20)), [talk], NY)
    assert "2024-03-01 10:00 (America/New_York)" in hit.message
    assert found(US, "us.after-conversation", contact(at(NY, 2024, 3, 8, 8)), [talk], NY) == []
    other_debt = contact(at(NY, 2024, 3, 2, 10), debt="case-2")
    assert found(US, "us.after-conversation", other_debt, [talk], NY) == []
    text = contact(at(NY, 2024, 3, 1, 12), channel="sms", text="Reply STOP to opt out")
    assert found(US, "us.after-conversation", text, [talk], NY) == []


# --- text ----------------------------------------------------------------------------------

ORDINARY = [
    "您好，您尾号1234的信用卡本期账单已逾期3天，请尽快还款。如有困难，可致电客服协商分期。回T退订",
    "尊敬的客户，您的贷款今日到期，请确保账户余额充足。祝您生活愉快！拒收请回复R，回T退订",
    "Hello, this is a reminder that your payment of $120 was due on May 3. Reply STOP to opt out.",
    "We can set up a payment plan that works for you; call us at your convenience. Unsubscribe here.",
    "Please avoid the car rest area when visiting our branch. Reply STOP to opt out.",
]


@pytest.mark.parametrize("pack", [CN, US], ids=["cn", "us-reg-f"])
@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_reminders_pass(pack: RulePack, text: str) -> None:
    assert pack.check_template(text, "sms") == []


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("再不还就让你坐牢", "坐牢"),
        ("再不还就让你坐　牢", "坐牢"),  # ideographic space
        ("再不还就让你坐，牢", "坐牢"),
        ("再不还就让你坐\u200b牢", "坐牢"),  # zero-width space
        ("我们会爆你通-讯-录", "通讯录"),
        ("ＡＲＲＥＳＴ warrant issued", "arrest"),
        ("You will go to JAIL", "jail"),
        ("the police   will visit", "police will"),
        ("We will tell your employer.", "we will tell your employer"),
    ],
)
def test_banned_phrases_survive_trivial_evasion(text: str, phrase: str) -> None:
    for pack in (CN, US):
        [hit] = [b for b in pack.check_template(text, "letter") if b.rule == "text.banned-phrase"]
        assert phrase in hit.evidence["phrases"]
        assert set(hit.evidence) == {"phrases"}


def test_banned_phrase_in_a_reported_note() -> None:
    note = contact(at(SH, 2024, 3, 1, 10), outcome="connected", text="告诉他不还就是老赖，曝光他")
    [hit] = CN.check_contact(note, [], SH)
    assert (hit.rule, hit.evidence) == ("text.banned-phrase", {"phrases": ["曝光", "老赖"]})


def test_us_electronic_messages_carry_an_opt_out() -> None:
    assert US.check_template("Your payment is past due. Reply STOP to opt out.", "sms") == []
    assert US.check_template("Your statement is ready. Unsubscribe: https://b.example/u", "email") == []
    assert ids(US.check_template("Your payment is past due.", "sms")) == {"us.opt-out"}
    assert US.check_template("Your payment is past due.", "letter") == []
    unseen = contact(at(NY, 2024, 3, 1, 10), channel="email", outcome="left_message")
    [hit] = US.check_contact(unseen, [], NY)
    assert hit.rule == "us.opt-out" and "without its text" in hit.message
    assert CN.check_template("您的账单已出，请按时还款。", "sms") == []


# --- next_allowed -----------------------------------------------------------------------------


def test_next_allowed_waits_for_the_morning() -> None:
    assert CN.next_allowed(at(SH, 2024, 3, 1, 23), SH) == at(SH, 2024, 3, 2, 8)
    assert CN.next_allowed(at(SH, 2024, 3, 1, 6), SH) == at(SH, 2024, 3, 1, 8)
    inside = at(SH, 2024, 3, 1, 12, 34)
    assert CN.next_allowed(inside, SH) is inside


def test_next_allowed_across_dst_in_new_york() -> None:
    # Spring forward (10 March 2024, 02:00 -> 03:00): the night is an hour shorter.
    before = datetime(2024, 3, 9, 22, tzinfo=ZoneInfo(NY))
    spring = US.next_allowed(before, NY)
    assert spring.astimezone(ZoneInfo(NY)).time() == time(8)
    assert spring.astimezone(UTC) == datetime(2024, 3, 10, 12, tzinfo=UTC)
    assert spring.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=9)
    # Fall back (3 November 2024, 02:00 -> 01:00): an hour longer.
    before = datetime(2024, 11, 2, 22, tzinfo=ZoneInfo(NY))
    fall = US.next_allowed(before, NY)
    assert fall.astimezone(UTC) == datetime(2024, 11, 3, 13, tzinfo=UTC)
    assert fall.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=11)
    # Inside the repeated hour it is still night.
    repeated = datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ZoneInfo(NY))
    assert US.next_allowed(repeated, NY).astimezone(UTC) == datetime(2024, 11, 3, 13, tzinfo=UTC)


ZONES = [SH, NY, "Europe/London", "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham", "UTC"]


@given(
    moment=st.datetimes(datetime(1990, 1, 1), datetime(2060, 1, 1), timezones=st.just(UTC)),
    zone=st.sampled_from(ZONES),
    pack=st.sampled_from([CN, US]),
)
def test_next_allowed_is_the_earliest_moment_inside_the_window(
    moment: datetime, zone: str, pack: RulePack
) -> None:
    result = pack.next_allowed(moment, zone)
    local = result.astimezone(ZoneInfo(zone)).time()
    assert result >= moment
    assert pack.hours.start <= local < pack.hours.end
    if pack.hours.start <= moment.astimezone(ZoneInfo(zone)).time() < pack.hours.end:
        assert result == moment
    else:
        assert local == pack.hours.start


# --- limitation -------------------------------------------------------------------------------


def test_limitation_three_years_from_the_last_due_date() -> None:
    assert CN.limitation_expires(date(2021, 3, 10), []) == date(2024, 3, 10)
    assert US.limitation_expires(date(2021, 3, 10), []) == date(2024, 3, 10)


def test_limitation_restarts_from_the_latest_reset() -> None:
    resets = [
        ("acknowledgement", date(2022, 6, 1)),
        ("demand", date(2023, 1, 15)),
        ("payment", date(2020, 1, 1)),
    ]
    assert CN.limitation_expires(date(2021, 3, 10), resets) == date(2026, 1, 15)


def test_limitation_from_29_february_ends_on_28_february() -> None:
    assert CN.limitation_expires(date(2024, 2, 29), []) == date(2027, 2, 28)
