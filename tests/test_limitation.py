"""The limitation period from the case's typed events, as each pack counts them: a demand
restarts it in China (Civil Code art. 195) and never in the United States; a filing stops
it until the proceedings end; "today" is the debtor's date."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from gateway.core import Gateway
from gateway.errors import PolicyViolation
from gateway.placement import service as placement
from gateway.supervision import scorecards
from gateway.supervision.rules import load_rule_pack
from schemas.case import Case
from tests.helpers import sample_case

CN = load_rule_pack("cn")
US = load_rule_pack("us-reg-f")
DUE = date(2020, 1, 10)


def test_a_demand_does_not_restart_the_us_period() -> None:
    assert US.limitation_expires(DUE, [("demand", date(2022, 6, 1))]) == date(2023, 1, 10)


def test_a_demand_restarts_the_cn_period() -> None:
    assert CN.limitation_expires(DUE, [("demand", date(2022, 6, 1))]) == date(2025, 6, 1)


def test_a_partial_payment_restarts_the_cn_period_but_not_the_us_default() -> None:
    assert CN.limitation_expires(DUE, [("payment", date(2021, 2, 1))]) == date(2024, 2, 1)
    assert US.limitation_expires(DUE, [("payment", date(2021, 2, 1))]) == date(2023, 1, 10)
    assert US.limitation_expires(DUE, [("acknowledgement", date(2021, 2, 1))]) == date(2024, 2, 1)


@pytest.mark.parametrize("pack", [CN, US], ids=["cn", "us-reg-f"])
def test_a_filing_stops_the_period_until_the_proceedings_end(pack: Any) -> None:
    filed = [("filing", date(2022, 12, 1))]
    assert pack.limitation_expires(DUE, filed) is None
    ended = [*filed, ("proceedings_ended", date(2024, 3, 5))]
    assert pack.limitation_expires(DUE, ended) == date(2027, 3, 5)


CASE = json.loads(sample_case().read_text())


def case_with(**loan: Any) -> Case:
    """The sample case, last due on 10 January 2023 (the sample contracts run from 2026)."""
    data = json.loads(json.dumps(CASE))
    data["loan"].update({"last_due_date": "2023-01-10", "last_acknowledged": None, "last_payment_date": None})
    data["loan"].update(loan)
    return Case.model_validate(data)


def test_the_case_carries_typed_events_and_the_old_field_as_an_acknowledgement() -> None:
    case = case_with(events=[{"kind": "demand", "date": "2022-06-01"}], last_acknowledged="2021-05-05")
    expected = [("acknowledgement", date(2021, 5, 5)), ("demand", date(2022, 6, 1))]
    assert case.loan.limitation_events() == expected


async def test_a_us_debt_demanded_but_not_acknowledged_is_refused_for_litigation(gw: Gateway) -> None:
    gw.rules = US  # type: ignore[misc]
    gw.clock = lambda: datetime(2026, 6, 1, 12, tzinfo=UTC)
    demanded = case_with(events=[{"kind": "demand", "date": "2025-06-01"}])
    with pytest.raises(PolicyViolation, match="ended on 2026-01-10"):
        await placement.place(gw, demanded, "sz-arbitration", "arbitration", actor="test")


async def test_today_is_the_debtors_date_not_utcs(gw: Gateway) -> None:
    # The period ends on 2026-03-10. At 17:00 UTC on that day it is already 11 March in
    # Shanghai, where the debtor lives: the claim is time-barred there.
    gw.clock = lambda: datetime(2026, 3, 10, 17, tzinfo=UTC)
    late = case_with(last_due_date="2023-03-10")
    with pytest.raises(PolicyViolation, match="ended on 2026-03-10"):
        await placement.place(gw, late, "sz-arbitration", "arbitration", actor="test")
    gw.clock = lambda: datetime(2026, 3, 10, 15, tzinfo=UTC)  # 23:00 on the 10th in Shanghai
    await placement.place(gw, late, "sz-arbitration", "arbitration", actor="test")


async def test_expiring_counts_the_recorded_events(gw: Gateway) -> None:
    gw.clock = lambda: datetime(2026, 2, 1, 2, tzinfo=UTC)
    demanded = case_with(events=[{"kind": "demand", "date": "2025-06-01"}])
    await placement.place(gw, demanded, "acme-collect", "collection", actor="test")
    [row] = await scorecards.expiring(gw, timedelta(days=3650))
    assert row["expires"] == "2028-06-01"
