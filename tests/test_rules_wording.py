"""Wording: the banned phrases each pack's sources name, on word and phrase boundaries,
innocent words left alone; the opt-out notice read for its meaning; no threat of suit on
a time-barred debt."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.supervision.rules import Contact, load_rule_pack

CN = load_rule_pack("cn")
US = load_rule_pack("us-reg-f")
NY = "America/New_York"


def banned(pack: object, text: str) -> list[str]:
    found = [b for b in pack.check_template(text, "letter") if b.rule == "text.banned-phrase"]  # type: ignore[attr-defined]
    return found[0].evidence["phrases"] if found else []


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("检察院已经介入调查", "检察院"),
        ("三天内不还，法院就来强制执行", "法院"),
        ("法院传票明天送到", "法院传票"),
        ("我们已给你发了律师函", "律师函"),
        ("再不还，公安会找你", "公安"),
        ("公 安 局 会找你", "公安"),
    ],
)
def test_cn_bans_threats_in_the_name_of_the_judiciary(text: str, phrase: str) -> None:
    assert phrase in banned(CN, text)


@pytest.mark.parametrize(
    "text",
    [
        "请按办公安排前往网点办理分期。",
        "如对账单有异议，可依法向有管辖权的法院提起诉讼。",
        "您好，您的信用卡本期账单已出，请按时还款。回T退订",
    ],
)
def test_cn_leaves_innocent_words_alone(text: str) -> None:
    assert banned(CN, text) == []


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("We will garnish your wages.", "garnish"),
        ("Wage GARNISHMENT starts Monday.", "garnish"),
        ("Your car faces seizure.", "seizure"),
        ("You could be jailed.", "jail"),
        ("Nonpayment leads to imprisonment.", "imprison"),
        ("Our attorney will call you.", "our attorney"),
        ("This letter is from our law firm.", "law firm"),
        ("We will file a lawsuit.", "lawsuit"),
        ("We will sue you.", "sue you"),
        ("ＷＥ ＷＩＬＬ ＳＵＥ ＹＯＵ", "sue you"),
    ],
)
def test_us_bans_the_threats_1006_18_names(text: str, phrase: str) -> None:
    assert phrase in banned(US, text)


def test_us_breach_names_the_sections_of_what_it_found() -> None:
    [hit] = [b for b in US.check_template("We will garnish your wages.", "letter")]
    assert hit.source.startswith("12 CFR 1006.18(b)(3)")


@pytest.mark.parametrize(
    "text",
    [
        "Sue from our branch will help you set up a plan.",
        "We can set up a payment plan that works for you.",
        "If you have an attorney, please tell us their name.",
        "Please avoid the car rest area when visiting.",
    ],
)
def test_us_leaves_ordinary_words_alone(text: str) -> None:
    assert banned(US, text) == []


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("Your payment is past due. Reply STOP to opt out.", True),
        ("Unsubscribe: https://b.example/u", True),
        ("You cannot opt out of these messages.", False),
        ("There is no way to unsubscribe.", False),
        ("You can't reply STOP to these texts.", False),
        ("Don't want these? Reply STOP to opt out.", True),
        ("账单已出，不能退订。", False),
        ("账单已出，回T退订", True),
    ],
)
def test_the_opt_out_notice_is_read_for_its_meaning(text: str, ok: bool) -> None:
    assert (US.check_template(text, "sms") == []) is ok


def test_no_threat_of_suit_on_a_time_barred_debt() -> None:
    when = datetime(2024, 3, 1, 10, tzinfo=ZoneInfo(NY))
    text = "Pay now or we will take legal action. Reply STOP to opt out."

    def letter(barred: bool) -> Contact:
        return Contact(when, "letter", "debtor", "left_message", "agency-a", "case-1", "subj-1",
                       number="a-1", text=text, time_barred=barred)  # fmt: skip

    [hit] = [b for b in US.check_contact(letter(True), [], NY) if b.rule == "us.time-barred-suit"]
    assert hit.evidence["phrases"] == ["legal action"]
    assert [b for b in US.check_contact(letter(False), [], NY) if b.rule == "us.time-barred-suit"] == []
