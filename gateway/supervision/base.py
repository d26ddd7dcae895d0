"""What every rule shares: the contact it judges, the breach it finds, the rule's own fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import InvalidInput

Channel = Literal["voice", "ai_voice", "sms", "email", "letter", "visit"]
Outcome = Literal["no_answer", "connected", "left_message", "wrong_party", "refused"]


@dataclass(frozen=True)
class Contact:
    """One contact attempt, as the supervision pipeline sees it: tokens, never raw data."""

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

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise InvalidInput(f"contact time {self.at.isoformat()} has no time zone; send an aware time")


@dataclass(frozen=True)
class Breach:
    """A rule broken. ``evidence`` holds ids, counts and times, never personal data."""

    rule: str
    source: str
    message: str
    evidence: dict[str, Any]


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """A time as the debtor's clock showed it, for messages."""
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M} ({zone.key})"


class Rule(BaseModel):
    """One table of a pack: a stable ``id``, the ``source`` it rests on, a ``note`` on numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z]+\.[a-z0-9-]+$")
    source: str = Field(min_length=1)
    note: str = ""

    def breach(self, message: str, **evidence: Any) -> Breach:
        return Breach(rule=self.id, source=self.source, message=message, evidence=evidence)

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        """The breach ``contact`` commits, given the debtor's earlier contacts.

        Rules that judge reported contacts override this; the others (retention,
        limitation, the text rules run through ``text_breaches``) have nothing to say.
        """
        return None
