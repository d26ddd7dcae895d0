"""Rule packs: the collection rules of one jurisdiction, as data, and the checks they drive.

A pack (``gateway/supervision/rulepacks/<name>.toml``, chosen by ``rule_pack`` in gateway.toml) is one
table per rule, each with a stable ``id`` that violations carry and the ``source`` it rests
on, so an auditor can trace every finding to a text. A rule a jurisdiction does not have
is simply absent from its pack. The checks are pure: the supervision pipeline hands in a
reported contact (or request) and the debtor's contacts and requests around it, and gets
back what the report adds to the breaches (`RulePack.check_contact`).

Caps count contacts in the order they happened, not the order they were reported: the
contact that crosses a cap is the one past the limit in time, and a late report that
completes a breach raises it, naming that contact. All "days" are the debtor's local
calendar days: caps protect the person's evening and week, wherever the partner's
servers happen to run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config import parse_toml
from gateway.errors import ConfigError, InvalidInput
from gateway.supervision.base import (
    CONVERSATION,
    Breach,
    Channel,
    Contact,
    ContactRule,
    Request,
    Rule,
    Situation,
    local_time,
    ranked,
    zone_named,
)
from gateway.supervision.limitation import Limitation
from gateway.supervision.retention import PersonalRetention
from gateway.supervision.rules_people import (
    MediumOptOut,
    StopAll,
    ThirdPartyAfterUnreachable,
    ThirdPartyCaps,
    ThirdPartyOnce,
    ThirdPartyStop,
    Workplace,
)
from gateway.supervision.rules_text import BannedPhrases, Disclosure, OptOut, TimeBarredSuit, text_breaches

__all__ = ["Breach", "Contact", "Request", "RulePack", "load_rule_pack", "read_rule_pack"]


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


class RulePack(BaseModel):
    """One jurisdiction's rules. Optional tables are rules only some jurisdictions have."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    hours: Hours
    connected_daily: ConnectedDaily | None = None
    attempts_per_number_daily: AttemptsPerNumberDaily | None = None
    calls_in_days: CallsInDays | None = None
    after_conversation: AfterConversation | None = None
    medium_opt_out: MediumOptOut | None = None
    cease_communication: StopAll | None = None
    attorney: StopAll | None = None
    workplace: Workplace | None = None
    third_party_after_unreachable: ThirdPartyAfterUnreachable | None = None
    third_party_stop: ThirdPartyStop | None = None
    third_party_caps: ThirdPartyCaps | None = None
    third_party_once: ThirdPartyOnce | None = None
    third_party_disclosure: Disclosure | None = None
    visit_staff: VisitStaff | None = None
    opt_out: OptOut | None = None
    time_barred_suit: TimeBarredSuit | None = None
    banned_phrases: BannedPhrases
    retention: Retention
    limitation: Limitation

    @property
    def retention_years(self) -> int:
        return self.retention.years

    @cached_property
    def every_rule(self) -> tuple[Rule, ...]:
        return tuple(value for value in dict(self).values() if isinstance(value, Rule))

    def rules(self) -> list[Rule]:
        """Every rule of the pack, in field order."""
        return list(self.every_rule)

    def breaches(
        self, contacts: Iterable[Contact], debtor_tz: str, requests: Iterable[Request] = ()
    ) -> list[Breach]:
        """Every breach among ``contacts``, whatever order they were reported in."""
        situation = Situation.of(contacts, requests, zone_named(debtor_tz))
        return [breach for rule in self.rules() for breach in rule.findings(situation)]

    def check_contact(
        self,
        contact: Contact,
        history: Sequence[Contact],
        debtor_tz: str,
        requests: Sequence[Request] = (),
    ) -> list[Breach]:
        """What reporting ``contact`` adds to the breaches of the debtor's ``history`` (the
        contacts around it, before and after, by every partner and the gateway) under
        ``requests``: its own, and those of contacts it pushes over a cap. Each breach
        names its contact (`Breach.contact`).
        """
        zone = zone_named(debtor_tz)
        after = Situation.of([*history, contact], requests, zone)
        # The same contacts less the new one, in the same order (no second sort), and
        # the same memo of local days.
        others = tuple(c for c in after.contacts if c is not contact)
        before = Situation(others, after.requests, zone, after._days)
        return self._added(before, after, contact)

    def check_request(
        self,
        request: Request,
        history: Sequence[Contact],
        debtor_tz: str,
        requests: Sequence[Request] = (),
    ) -> list[Breach]:
        """What a request reported late adds: contacts made after it that it forbade."""
        zone = zone_named(debtor_tz)
        before = Situation.of(history, requests, zone)
        after = Situation(before.contacts, (*before.requests, request), zone, before._days)
        return self._added(before, after, None)

    def _added(self, before: Situation, after: Situation, new: Contact | None) -> list[Breach]:
        found: list[Breach] = []
        for rule in self.every_rule:
            if isinstance(rule, ContactRule):
                if new is not None and (breach := rule.judge(new, after.zone)) is not None:
                    found.append(breach)
                continue
            hits = list(rule.hits(after))
            if not hits:
                continue  # nothing broken now, so nothing added (most rules, most reports)
            # Only the new ones are worded: a situation may hold many known breaches.
            known = {id(contact) for contact, _ in rule.hits(before)}
            found += [rule.describe(c, detail, after) for c, detail in hits if id(c) not in known]
        return found

    def check_template(self, text: str, channel: str) -> list[Breach]:
        """What a message template breaks, at onboarding and again before each send."""
        return text_breaches(self.banned_phrases, self.opt_out, text, channel)

    def next_allowed(self, when: datetime, debtor_tz: str, zones: Iterable[str] = ()) -> datetime | None:
        """The earliest moment at or after ``when`` inside the contact window in the
        debtor's zone and every one of ``zones``; None when those windows never meet.

        Works on the wall clocks through zoneinfo, so across a DST change 08:00 stays
        08:00 local whatever the UTC offset. Returns ``when`` itself when it is inside.
        """
        if when.utcoffset() is None:
            raise InvalidInput(f"{when.isoformat()} has no time zone; pass an aware time")
        all_zones = [zone_named(debtor_tz), *(zone_named(z) for z in zones)]
        if not self.hours.outside(when, all_zones):
            return when
        openings = sorted(
            opening
            for zone in all_zones
            for n in range(3)
            if (opening := self._opening(when, zone, n)) > when
        )
        return next((at for at in openings if not self.hours.outside(at, all_zones)), None)

    def _opening(self, when: datetime, zone: ZoneInfo, days_ahead: int) -> datetime:
        day = when.astimezone(zone).date() + timedelta(days=days_ahead)
        return datetime.combine(day, self.hours.start, tzinfo=zone)

    def limitation_expires(self, last_due_date: date, events: Sequence[tuple[str, date]]) -> date | None:
        """The last day of the limitation period (see `Limitation.expires`)."""
        return self.limitation.expires(last_due_date, events)

    @cached_property
    def expiries(self) -> dict[tuple[str | None, ...], date | None]:
        """`limitation_expires` remembered by the stored columns it was read from (dates
        and event kinds, no personal data), for `gateway.supervision.history.time_barred`."""
        return {}


def load_rule_pack(name: str, plugin_packs: Mapping[str, Path] | None = None) -> RulePack:
    """The rule pack ``name`` (the ``rule_pack`` setting of gateway.toml): a packaged one,
    or one a plugin registered (``plugin_packs``: name -> TOML file)."""
    folder = resources.files("gateway.supervision") / "rulepacks"
    packaged = {p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")}
    plugin_packs = plugin_packs or {}
    if name in packaged and name in plugin_packs:
        raise ConfigError(f"rule_pack = {name!r}: a plugin registers a pack under a built-in pack's name")
    if name in plugin_packs:
        try:
            text = plugin_packs[name].read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"rule pack {name!r}: cannot read {plugin_packs[name]}: {exc}") from None
        return _parse(text, str(plugin_packs[name]), name)
    if name not in packaged:
        raise ConfigError(
            f"rule_pack = {name!r}: no such rule pack; set rule_pack in gateway.toml to one of: "
            + ", ".join(sorted(packaged | set(plugin_packs)))
        )
    text = (folder / f"{name}.toml").read_text(encoding="utf-8")
    return _parse(text, f"gateway/supervision/rulepacks/{name}.toml", name)


def read_rule_pack(path: Path) -> RulePack:
    """A rule pack from any file, e.g. a draft under review; its name must match the file's."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rule pack: {exc.strerror}") from None
    return _parse(text, str(path), path.stem)


def _parse(text: str, origin: str, expected_name: str) -> RulePack:
    pack = parse_toml(text, origin, RulePack)
    if pack.name != expected_name:
        raise ConfigError(f"{origin}: name: {pack.name!r} must match the file name {expected_name!r}")
    return pack
