"""What every rule shares: the contacts and requests it judges, the breach it finds, the
rule's own fields.

A rule judges a *situation*: every contact with one debtor in a window, by every partner
and the gateway's own sends, in the order they happened, with the requests the debtor or
a third party made (opt-outs, cease, attorney, workplace, "do not call me"). It names
each contact that breaks it. The pipeline raises what a new report adds to what the
situation broke before: the report's own breaches, and those of contacts a late report
pushes over a cap. So the same contacts give the same breaches whatever order their
reports arrive in (see `RulePack.check_contact`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import InvalidInput

Channel = Literal["voice", "ai_voice", "sms", "email", "letter", "visit"]
Outcome = Literal["no_answer", "connected", "left_message", "wrong_party", "refused"]
Target = Literal["debtor", "third_party"]
#: What a person asked: stop a medium, cease all contact, talk to my attorney, not at my
#: workplace, or (a third party) do not contact me again.
RequestKind = Literal["opt_out", "cease", "attorney", "workplace", "stop_third_party"]

#: Outcomes in which someone spoke with the caller: a conversation, whoever hung up.
CONVERSATION: frozenset[str] = frozenset({"connected", "refused"})


@dataclass(slots=True)
class Contact:
    """One contact attempt, as the supervision pipeline sees it: tokens, never raw data.

    ``number`` is the bank-side identity of the number or address contacted (a pseudonym
    shared by every partner), None when the report named none the gateway knows.
    ``zones`` are time zones besides the debtor's where the person may be (the number's
    own zone, or every zone on file when the number is unknown): the contact must be
    convenient in each. ``known_at`` is when the gateway learnt of the contact.

    A value: rules read it, and a changed copy is made with `dataclasses.replace`. Not
    frozen: a report's check builds one per earlier contact in its window, and a frozen
    dataclass sets each of its 15 fields through ``object.__setattr__`` (1.6 µs a
    contact against 0.2).
    """

    at: datetime
    channel: str
    target: str
    outcome: str
    partner: str
    debt: str
    debtor: str
    number: str | None = None
    staff_count: int | None = None
    text: str | None = None
    event: int | None = None
    known_at: datetime | None = None
    zones: tuple[str, ...] = ()
    place: str | None = None
    time_barred: bool = False

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise InvalidInput(f"contact time {self.at.isoformat()} has no time zone; send an aware time")

    @property
    def learnt(self) -> datetime:
        return self.known_at or self.at

    def order(self) -> tuple[Any, ...]:
        """Sort key: time first; the rest only breaks ties, by content, never by arrival
        (the partner late, so that who reported a contact does not decide the order)."""
        return (
            self.at,
            self.debt,
            self.channel,
            self.target,
            self.outcome,
            self.number or "",
            self.text or "",
            self.partner,
            self.event or 0,
        )


@dataclass(frozen=True)
class Request:
    """A person's request about how they may be contacted, as reported or recorded.

    It binds the partner that received it from ``at``, and everyone else (other partners,
    the gateway's own sends) from ``known_at``, when the gateway learnt of it.
    """

    at: datetime
    kind: str
    partner: str
    debt: str
    channel: str | None = None
    number: str | None = None
    known_at: datetime | None = None
    event: int | None = None

    def binds(self, contact: Contact) -> bool:
        """Whether the request was in force for ``contact``."""
        if contact.at < self.at:
            return False
        return contact.partner == self.partner or contact.at >= (self.known_at or self.at)


@dataclass(frozen=True)
class Breach:
    """A rule broken by ``contact``. ``evidence`` holds ids, counts and times, never personal data."""

    rule: str
    source: str
    message: str
    evidence: dict[str, Any]
    contact: Contact | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Situation:
    """What the rules judge: one debtor's contacts (time order) and requests."""

    contacts: tuple[Contact, ...]
    requests: tuple[Request, ...]
    zone: ZoneInfo
    _days: dict[datetime, date] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, contacts: Iterable[Contact], requests: Iterable[Request], zone: ZoneInfo) -> Situation:
        return cls(tuple(sorted(contacts, key=Contact.order)), tuple(requests), zone)

    @cached_property
    def third_parties(self) -> tuple[Contact, ...]:
        """The contacts with third parties, in time order (most situations have none)."""
        return tuple(c for c in self.contacts if c.target == "third_party")

    def day(self, moment: datetime) -> date:
        """The debtor's local calendar day of ``moment`` (remembered: rules ask often)."""
        found = self._days.get(moment)
        if found is None:
            found = self._days[moment] = moment.astimezone(self.zone).date()
        return found


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """A time as the debtor's clock showed it, for messages."""
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M} ({zone.key})"


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown IANA time zone {name!r} for the debtor") from None


class Rule(BaseModel):
    """One table of a pack: a stable ``id``, the ``source`` it rests on, a ``note`` on numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z]+\.[a-z0-9-]+$")
    source: str = Field(min_length=1)
    note: str = ""
    title: str = ""
    """A short name for people (dashboards); the id when empty."""
    title_zh: str = ""
    """The same name in Chinese, where the pack gives one."""

    def breach(self, contact: Contact | None, message: str, **evidence: Any) -> Breach:
        return Breach(rule=self.id, source=self.source, message=message, evidence=evidence, contact=contact)

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        """Each contact that breaks this rule in ``situation``, with what `describe`
        needs to word it. Rules that do not judge contacts (retention, limitation) find
        nothing."""
        return iter(())

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        raise NotImplementedError

    #: Whether the rule judges each contact apart from the other contacts (given the
    #: requests): then reporting a contact can add a breach of its own only, and
    #: `RulePack.check_contact` judges that one contact instead of every contact twice.
    alone: ClassVar[bool] = False

    def unchanged_by(self, contact: Contact, before: Situation) -> bool:
        """Whether adding ``contact`` to ``before`` certainly leaves the rule's findings
        as they were (a rule about third parties, a contact with the debtor): then
        `RulePack.check_contact` skips the rule. False when it cannot tell."""
        return False

    def findings(self, situation: Situation) -> Iterator[Breach]:
        """Every breach of this rule in ``situation``, each naming its contact."""
        for contact, detail in self.hits(situation):
            yield self.describe(contact, detail, situation)


class ContactRule(Rule):
    """A rule that judges each contact on its own (hours, wording, staff): a new report
    can only break it itself, so only the new contact is judged."""

    def judge(self, contact: Contact, zone: ZoneInfo) -> Breach | None:
        raise NotImplementedError

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        for contact in situation.contacts:
            if (found := self.judge(contact, situation.zone)) is not None:
                yield contact, found

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        return detail  # type: ignore[no-any-return]  # the breach judge found


def ranked(contacts: Sequence[Contact], counts: Any, group: Any) -> Iterator[tuple[Contact, int, Any]]:
    """Each counted contact with its rank (1 = first) within its group, in time order."""
    seen: dict[Any, int] = {}
    for contact in contacts:
        if counts(contact):
            key = group(contact)
            seen[key] = seen.get(key, 0) + 1
            yield contact, seen[key], key
