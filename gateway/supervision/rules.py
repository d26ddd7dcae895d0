"""Rule packs: the collection rules of one jurisdiction, as data, and the checks they drive.

A pack (``gateway/supervision/rulepacks/<name>.toml``, chosen by ``rule_pack`` in gateway.toml) is one
table per rule, each with a stable ``id`` that violations carry and the ``source`` it rests
on, so an auditor can trace every finding to a text. A rule a jurisdiction does not have
is simply absent from its pack. The checks are pure: the supervision pipeline hands in a
reported contact and the debtor's recent history, and gets back what it breached.

All "days" are the debtor's local calendar days: caps protect the person's evening and
week, wherever the partner's servers happen to run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config import parse_toml
from gateway.errors import ConfigError, InvalidInput
from gateway.supervision.base import Breach, Channel, Contact, Outcome, Rule, local_time
from gateway.supervision.retention import PersonalRetention
from gateway.supervision.rules_text import BannedPhrases, Disclosure, OptOut, text_breaches

__all__ = ["Breach", "Contact", "RulePack", "load_rule_pack", "read_rule_pack"]

def _day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def _call_to_debtor(contact: Contact, channels: frozenset[Channel]) -> bool:
    return contact.channel in channels and contact.target == "debtor"


class Hours(Rule):
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

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        local = contact.at.astimezone(zone)
        if contact.channel not in self.channels or self.contains(local.time()):
            return None
        window = f"{self.start:%H:%M}-{self.end:%H:%M}"
        return self.breach(
            f"{contact.channel} contact at {local_time(local, zone)} is outside the allowed hours "
            f"{window} in the debtor's time zone",
            at_local=local.isoformat(),
            window=window,
            partner=contact.partner,
        )


class ConnectedDaily(Rule):
    """Connected calls with the debtor per local day, all partners together."""

    max: int = Field(ge=1)
    channels: frozenset[Channel]

    def _counts(self, contact: Contact) -> bool:
        return _call_to_debtor(contact, self.channels) and contact.outcome == "connected"

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        if not self._counts(contact):
            return None
        day = _day(contact.at, zone)
        same_day = [c for c in earlier if self._counts(c) and _day(c.at, zone) == day]
        count = len(same_day) + 1
        if count <= self.max:
            return None
        return self.breach(
            f"connected call number {count} with the debtor on {day} (debtor's local day), at "
            f"{local_time(contact.at, zone)}; at most {self.max} a day across all partners",
            count=count,
            limit=self.max,
            local_date=day.isoformat(),
            partners=sorted({c.partner for c in same_day} | {contact.partner}),
        )


class AttemptsPerNumberDaily(Rule):
    """Call attempts, whatever their outcome, to one number per local day."""

    max: int = Field(ge=1)
    channels: frozenset[Channel]

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        if contact.channel not in self.channels or contact.number is None:
            return None
        day = _day(contact.at, zone)
        count = 1 + sum(
            1
            for c in earlier
            if c.channel in self.channels and c.number == contact.number and _day(c.at, zone) == day
        )
        if count <= self.max:
            return None
        return self.breach(
            f"call attempt number {count} to the same number on {day} (debtor's local day), at "
            f"{local_time(contact.at, zone)}; at most {self.max} a day across all partners",
            count=count,
            limit=self.max,
            local_date=day.isoformat(),
            number=contact.number,
        )


class CallsInDays(Rule):
    """Calls about one debt in ``days`` consecutive local days, today included."""

    max: int = Field(ge=1)
    days: int = Field(ge=1)
    channels: frozenset[Channel]

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        if not _call_to_debtor(contact, self.channels):
            return None
        first = _day(contact.at, zone) - timedelta(days=self.days - 1)
        count = 1 + sum(
            1
            for c in earlier
            if _call_to_debtor(c, self.channels) and c.debt == contact.debt and _day(c.at, zone) >= first
        )
        if count <= self.max:
            return None
        return self.breach(
            f"call number {count} about this debt from {first} to {local_time(contact.at, zone)}; "
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

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        if not _call_to_debtor(contact, self.channels):
            return None
        first = _day(contact.at, zone) - timedelta(days=self.days - 1)
        talks = [
            c.at
            for c in earlier
            if _call_to_debtor(c, self.channels)
            and c.outcome == "connected"
            and c.debt == contact.debt
            and c.at < contact.at
            and _day(c.at, zone) >= first
        ]
        if not talks:
            return None
        return self.breach(
            f"call at {local_time(contact.at, zone)} within {self.days} days of a conversation about "
            f"this debt at {local_time(max(talks), zone)}",
            conversation_at_local=max(talks).astimezone(zone).isoformat(),
            at_local=contact.at.astimezone(zone).isoformat(),
            debt=contact.debt,
        )


class ThirdPartyAfterUnreachable(Rule):
    """Third parties only once the debtor has failed to answer ``failed_attempts`` times in a row."""

    failed_attempts: int = Field(ge=1)
    failed_outcomes: frozenset[Outcome]

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        if contact.target != "third_party":
            return None
        failures = 0  # failed attempts since the debtor was last reached
        for c in sorted((c for c in earlier if c.target == "debtor"), key=lambda c: c.at):
            failures = failures + 1 if c.outcome in self.failed_outcomes else 0
        if failures >= self.failed_attempts:
            return None
        return self.breach(
            f"third party contacted at {local_time(contact.at, zone)} after {failures} failed attempts "
            f"to reach the debtor since the debtor was last reached; {self.failed_attempts} are required",
            failed_attempts=failures,
            required=self.failed_attempts,
            partner=contact.partner,
        )


class ThirdPartyOnce(Rule):
    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        # Without a number token two third-party reports cannot be told to be the same person.
        if contact.target != "third_party" or contact.number is None:
            return None
        before = [c.at for c in earlier if c.target == "third_party" and c.number == contact.number]
        if not before:
            return None
        return self.breach(
            f"the same third party was contacted again at {local_time(contact.at, zone)}, after "
            f"{local_time(min(before), zone)}; a third party may be asked once, only to locate the debtor",
            number=contact.number,
            previous_contacts=len(before),
        )


class VisitStaff(Rule):
    min_staff: int = Field(ge=1)

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        staff = contact.staff_count
        if contact.channel != "visit" or (staff is not None and staff >= self.min_staff):
            return None
        return self.breach(
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


class Limitation(Rule):
    years: int = Field(ge=1)
    resets: list[Literal["demand", "acknowledgement", "filing"]] = Field(
        description="the events that restart the period; callers pass only these dates"
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
    third_party_after_unreachable: ThirdPartyAfterUnreachable | None = None
    third_party_once: ThirdPartyOnce | None = None
    third_party_disclosure: Disclosure | None = None
    visit_staff: VisitStaff | None = None
    opt_out: OptOut | None = None
    banned_phrases: BannedPhrases
    retention: Retention
    limitation: Limitation

    @property
    def retention_years(self) -> int:
        return self.retention.years

    def rules(self) -> list[Rule]:
        """Every rule of the pack, in file order."""
        return [value for value in dict(self).values() if isinstance(value, Rule)]

    def check_contact(self, contact: Contact, history: Sequence[Contact], debtor_tz: str) -> list[Breach]:
        """Every rule ``contact`` breaks, given the debtor's ``history``.

        ``history`` is the debtor's earlier contacts by all partners (the pipeline passes the
        last 7-8 days). Entries later than ``contact`` are ignored, so reports arriving out
        of order judge each contact by what came before it.
        """
        zone = _zone(debtor_tz)
        earlier = [c for c in history if c.at <= contact.at and c is not contact]
        found = [breach for rule in self.rules() if (breach := rule.check(contact, earlier, zone))]
        return found + text_breaches(self.banned_phrases, self.opt_out, contact.text, contact.channel)

    def check_template(self, text: str, channel: str) -> list[Breach]:
        """What a message template breaks, at onboarding and again before each send."""
        return text_breaches(self.banned_phrases, self.opt_out, text, channel)

    def next_allowed(self, when: datetime, debtor_tz: str) -> datetime:
        """The earliest moment at or after ``when`` inside the contact window.

        Works on the debtor's wall clock through zoneinfo, so across a DST change 08:00
        stays 08:00 local whatever the UTC offset. Returns ``when`` itself when it is inside.
        """
        if when.utcoffset() is None:
            raise InvalidInput(f"{when.isoformat()} has no time zone; pass an aware time")
        zone = _zone(debtor_tz)
        local = when.astimezone(zone)
        if self.hours.contains(local.time()):
            return when
        day = local.date() if local.time() < self.hours.start else local.date() + timedelta(days=1)
        return datetime.combine(day, self.hours.start, tzinfo=zone)

    def limitation_expires(self, last_due_date: date, resets: Sequence[date]) -> date:
        """The last day of the limitation period; from the next day the debt is time-barred.

        The period runs from the latest of the last due date and any reset (demand,
        acknowledgement, filing: Civil Code art. 195) and ends on the same date ``years``
        later, or on 28 February when it started on 29 February (art. 202: with no
        matching day, the month's last day).
        """
        start = max([last_due_date, *resets])
        years = self.limitation.years
        try:
            return start.replace(year=start.year + years)
        except ValueError:
            return start.replace(year=start.year + years, day=28)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown IANA time zone {name!r} for the debtor") from None


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
