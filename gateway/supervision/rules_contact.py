"""The contact rules of a rule pack (`gateway.supervision.rules`): hours on the person's
clock, daily caps on conversations and on attempts per number, calls in a run of days,
the pause after a conversation, staff on a visit, and the retention period.

Caps count contacts in the order they happened, not the order they were reported (see
`gateway.supervision.base.ranked`); all "days" are the debtor's local calendar days.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from gateway.supervision.base import (
    CONVERSATION,
    Breach,
    Channel,
    Contact,
    ContactRule,
    Rule,
    Situation,
    local_time,
    ranked,
    zone_named,
)
from gateway.supervision.retention import PersonalRetention


def _call_to_debtor(contact: Contact, channels: frozenset[Channel]) -> bool:
    return contact.channel in channels and contact.target == "debtor"


class Hours(ContactRule):
    """Contact hours on the person's clock; with more than one zone on file (a number's
    own zone, or a number the gateway cannot place), the hours of every one of them."""

    start: time
    end: time
    channels: frozenset[Channel]

    @model_validator(mode="after")
    def _ordered(self) -> Hours:
        if not self.start < self.end:
            raise ValueError("start must be earlier than end (windows across midnight are not supported)")
        return self

    def contains(self, moment: time) -> bool:
        return self.start <= moment < self.end

    def outside(self, moment: datetime, zones: Iterable[ZoneInfo]) -> list[ZoneInfo]:
        return [zone for zone in zones if not self.contains(moment.astimezone(zone).time())]

    def judge(self, contact: Contact, zone: ZoneInfo) -> Breach | None:
        if contact.channel not in self.channels:
            return None
        zones = [zone, *(zone_named(z) for z in contact.zones if z != zone.key)]
        outside = self.outside(contact.at, zones)
        if not outside:
            return None
        window = f"{self.start:%H:%M}-{self.end:%H:%M}"
        where = "the debtor's time zone" if outside == [zone] else "every time zone the person may be in"
        return self.breach(
            contact,
            f"{contact.channel} contact at {', '.join(local_time(contact.at, z) for z in outside)} is "
            f"outside the allowed hours {window} in {where}",
            at_local=contact.at.astimezone(zone).isoformat(),
            window=window,
            zones=[z.key for z in outside],
            partner=contact.partner,
        )


class ConnectedDaily(Rule):
    """Conversations with the debtor per local day, all partners together. A call is a
    conversation when someone answered, whoever hung up or refused (``CONVERSATION``)."""

    max: int = Field(ge=1)
    channels: frozenset[Channel]

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        def counts(contact: Contact) -> bool:
            return _call_to_debtor(contact, self.channels) and contact.outcome in CONVERSATION

        same_day: dict[date, list[Contact]] = {}
        for contact, rank, day in ranked(situation.contacts, counts, lambda c: situation.day(c.at)):
            same_day.setdefault(day, []).append(contact)
            if rank > self.max:
                yield contact, (rank, day, sorted({c.partner for c in same_day[day]}))

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        rank, day, partners = detail
        return self.breach(
            contact,
            f"conversation number {rank} with the debtor on {day} (debtor's local day), at "
            f"{local_time(contact.at, situation.zone)}; at most {self.max} a day across all partners",
            count=rank,
            limit=self.max,
            local_date=day.isoformat(),
            partners=partners,
        )


class AttemptsPerNumberDaily(Rule):
    """Call attempts, whatever their outcome, to one number per local day, all partners
    together. A call reported without a number the gateway knows is flagged: the cap
    cannot be checked for it."""

    max: int = Field(ge=1)
    channels: frozenset[Channel]

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        def counts(contact: Contact) -> bool:
            return contact.channel in self.channels and contact.number is not None

        for contact in situation.contacts:
            if contact.channel in self.channels and contact.number is None:
                yield contact, None
        for contact, rank, (_, day) in ranked(
            situation.contacts, counts, lambda c: (c.number, situation.day(c.at))
        ):
            if rank > self.max:
                yield contact, (rank, day)

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        when = local_time(contact.at, situation.zone)
        if detail is None:
            return self.breach(
                contact,
                f"{contact.channel} call at {when} was reported without a number the gateway knows; "
                "the per-number cap cannot be checked",
                number=None,
                partner=contact.partner,
            )
        rank, day = detail
        return self.breach(
            contact,
            f"call attempt number {rank} to the same number on {day} (debtor's local day), at {when}; "
            f"at most {self.max} a day across all partners",
            count=rank,
            limit=self.max,
            local_date=day.isoformat(),
            number=contact.number,
        )


class CallsInDays(Rule):
    """Calls about one debt in ``days`` consecutive local days, the call's own day included."""

    max: int = Field(ge=1)
    days: int = Field(ge=1)
    channels: frozenset[Channel]

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        window: dict[str, deque[date]] = {}  # per debt, the days of the calls in the window
        for contact in situation.contacts:
            if not _call_to_debtor(contact, self.channels):
                continue
            day = situation.day(contact.at)
            first = day - timedelta(days=self.days - 1)
            days = window.setdefault(contact.debt, deque())
            days.append(day)
            while days[0] < first:  # time order: the oldest leave first
                days.popleft()
            if len(days) > self.max:
                yield contact, (len(days), first)

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        count, first = detail
        return self.breach(
            contact,
            f"call number {count} about this debt from {first} to {local_time(contact.at, situation.zone)}; "
            f"at most {self.max} calls in {self.days} consecutive days",
            count=count,
            limit=self.max,
            first_local_date=first.isoformat(),
            debt=contact.debt,
        )


class AfterConversation(Rule):
    """No call for ``days`` local days after a conversation, the conversation's day being day one."""

    days: int = Field(ge=1)
    channels: frozenset[Channel]

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        talks: dict[str, list[datetime]] = {}  # per debt, conversation times in time order
        for contact in situation.contacts:
            if not _call_to_debtor(contact, self.channels):
                continue
            first = situation.day(contact.at) - timedelta(days=self.days - 1)
            earlier = (t for t in reversed(talks.get(contact.debt, ())) if t < contact.at)
            last = next(earlier, None)
            if contact.outcome in CONVERSATION:
                talks.setdefault(contact.debt, []).append(contact.at)
            if last is not None and situation.day(last) >= first:
                yield contact, last

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        zone = situation.zone
        return self.breach(
            contact,
            f"call at {local_time(contact.at, zone)} within {self.days} days of a conversation about "
            f"this debt at {local_time(detail, zone)}",
            conversation_at_local=detail.astimezone(zone).isoformat(),
            at_local=contact.at.astimezone(zone).isoformat(),
            debt=contact.debt,
        )


class VisitStaff(ContactRule):
    min_staff: int = Field(ge=1)

    def judge(self, contact: Contact, zone: ZoneInfo) -> Breach | None:
        staff = contact.staff_count
        if contact.channel != "visit" or (staff is not None and staff >= self.min_staff):
            return None
        return self.breach(
            contact,
            f"visit at {local_time(contact.at, zone)} by "
            f"{'an unreported number of' if staff is None else staff} staff; "
            f"at least {self.min_staff} must go",
            staff_count=staff,
            required=self.min_staff,
        )


class Retention(Rule):
    years: int = Field(ge=1)
    personal: PersonalRetention = Field(
        default_factory=PersonalRetention,
        description="personal data, per kind (gateway/supervision/retention.py)",
    )
