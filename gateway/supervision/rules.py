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

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from gateway.config import parse_toml
from gateway.errors import ConfigError, InvalidInput
from gateway.supervision.base import (
    Breach,
    Contact,
    ContactRule,
    Request,
    Rule,
    Situation,
    zone_named,
)
from gateway.supervision.limitation import Limitation
from gateway.supervision.rules_contact import (
    AfterConversation,
    AttemptsPerNumberDaily,
    CallsInDays,
    ConnectedDaily,
    Hours,
    Retention,
    VisitStaff,
)
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
            if new is not None:
                # A new contact: the rules that can say what it adds more cheaply than by
                # comparing all their hits before and after (a long case has many).
                if rule.unchanged_by(new, before):
                    continue
                if rule.alone:
                    own = Situation((new,), after.requests, after.zone, after._days)
                    found += [rule.describe(c, detail, after) for c, detail in rule.hits(own)]
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
