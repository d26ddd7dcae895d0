"""The limitation period: when a claim becomes time-barred, counted the way each
jurisdiction counts it.

A case carries what happened to the debt as typed events (``schemas.case.LimitationEvent``):
a payment, an acknowledgement, a demand to pay, a filing (suit or arbitration), the end
of proceedings. Each pack says which of them restart the period (``resets``):

- China, Civil Code art. 195: a demand, the debtor agreeing to perform (an acknowledgement;
  a partial payment or a promise to pay in instalments counts as one, SPC limitation
  provisions art. 14) and a filing interrupt it; after a filing the period restarts when
  the proceedings end, and does not run while they are pending;
- United States: state law decides; what every state agrees on is that a demand by the
  collector does not restart it, so the pack lists only what it should count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Literal

from pydantic import Field

from gateway.supervision.base import Rule

EventKind = Literal["payment", "acknowledgement", "demand", "filing", "proceedings_ended"]
#: Events of one day: a filing comes before the end of the proceedings it opened.
_SAME_DAY_ORDER = {"payment": 0, "acknowledgement": 0, "demand": 0, "filing": 1, "proceedings_ended": 2}


class Limitation(Rule):
    years: int = Field(ge=1)
    resets: list[Literal["payment", "acknowledgement", "demand", "filing"]] = Field(
        description="the events that restart the period; after a filing it restarts when the proceedings end"
    )

    def start(self, last_due_date: date, events: Sequence[tuple[str, date]]) -> date | None:
        """The day the current period started, or None while proceedings are pending."""
        start, pending = last_due_date, False
        for kind, day in sorted(events, key=lambda e: (e[1], _SAME_DAY_ORDER.get(e[0], 0))):
            if kind == "proceedings_ended" and "filing" in self.resets:
                start, pending = max(start, day), False
            elif kind == "filing" and kind in self.resets:
                start, pending = max(start, day), True
            elif kind in self.resets:
                start = max(start, day)
        return None if pending else start

    def expires(self, last_due_date: date, events: Sequence[tuple[str, date]]) -> date | None:
        """The last day of the period (from the next day the debt is time-barred), or None
        while a filing's proceedings are pending.

        It ends on the same date ``years`` after its start, or on 28 February when it
        started on 29 February (Civil Code art. 202: with no matching day, the month's
        last day).
        """
        start = self.start(last_due_date, events)
        if start is None:
            return None
        try:
            return start.replace(year=start.year + self.years)
        except ValueError:
            return start.replace(year=start.year + self.years, day=28)
