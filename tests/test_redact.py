"""What the gateway keeps of a partner's words loses what is recognisably about a person."""

from __future__ import annotations

import json

import pytest

from gateway.errors import InvalidInput
from gateway.supervision.redact import check_reason, redact, values_of


def test_known_values_emails_and_long_numbers_are_replaced() -> None:
    said = (
        "cannot reach 张伟先生 (ID 11010119900307123X, phone +86 138 1234 1999, "
        "maria.lopez@example.org) about 52310.45 owed since 1990"
    )
    assert redact(said, ["张伟", "52310.45", "1990"]) == (
        "cannot reach <redacted>先生 (ID <number>, phone <number>, <email>) "
        "about <redacted> owed since <redacted>"
    )


def test_what_operators_need_is_left() -> None:
    said = "package pkg_ab1990cd1234567ef: HTTP 412: template TPL-REMIND-01 unknown, retry in 30 s"
    assert redact(said, ["1990", "1234567", "CNY", "12"]) == said


def test_values_of_a_package_are_every_scalar() -> None:
    data = {"debtor": {"name": "张伟", "phones": [{"number": "13812341999"}]}, "loan": {"n": 45, "x": True}}
    assert sorted(values_of(data)) == ["13812341999", "45", "张伟"]


def test_echoes_in_other_forms_are_caught_and_timestamps_kept() -> None:
    said = f"{json.dumps({'name': '张伟'})} ZHANG WEI phone_13812345678 at 2025-01-31 10:00:00"
    kept = '{"name": "<redacted>"} <redacted> phone_<number> at 2025-01-31 10:00:00'
    assert redact(said, ["张伟", "Zhang Wei"]) == kept


def test_an_operators_reason_may_hold_dates_and_references_but_no_numbers_of_people() -> None:
    for reason in (
        "complaint received 2026-03-15",
        "debtor called at 2026-03-15 14:30:00",
        "hardship since 20260315",
        "duplicate of C-2026-1001",
        "award ARB-2026-003, see INC-1234567",
        "paid 12,000 yuan",
    ):
        check_reason(reason)
    for reason in (
        "ID 110101199003071234 disputes",
        "ID110101199003071234",
        "phone13812341999",
        "138.1234.1999",
        "+86 138 1234 1999",
        "TEL-13812341999",
        "landline 010-12345678",
        "card 6222020200112233445",
        "\uff11\uff13\uff18\uff11\uff12\uff13\uff14\uff11\uff19\uff19\uff19",  # full-width digits
    ):
        with pytest.raises(InvalidInput, match="7 or more digits") as refused:
            check_reason(reason)
        assert reason not in str(refused.value)
    with pytest.raises(InvalidInput, match="an e-mail address"):
        check_reason("wrote to li.wei@example.com")
    with pytest.raises(InvalidInput, match="at most 500"):
        check_reason("x" * 501)
