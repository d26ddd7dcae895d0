"""How long the gateway keeps each kind of personal data it stores: the one place
where a retention period is decided.

The rule pack's ``[retention.personal]`` table gives each kind a period after a moment
(``after``, fixed per kind and written out so the pack reads on its own); a partner's
profile may set its own number of days per kind (``[retention]``). What a case still
needs is never due: a package waiting to be sent, a case under a legal hold. A case the
partner never attested deleting is kept, at most, the pack's record-retention ``years``
after its placement once the partner returned or closed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Kind = Literal["package_sealed", "package_plaintext", "event_original", "event_text", "case_reference"]
#: In the order a run purges them: a package's sealed form never outlives its plaintext.
KINDS: tuple[Kind, ...] = (
    "package_sealed", "package_plaintext", "event_original", "event_text", "case_reference"
)

#: The moment each kind's period runs from.
ANCHORS: dict[str, str] = {
    "package_sealed": "expiry",
    "package_plaintext": "deletion_attested",
    "event_original": "received",
    "event_text": "received",
    "case_reference": "deletion_attested",
}

#: What each kind is, for people (`gateway retention show`, docs/data-protection.md).
WHAT: dict[str, str] = {
    "package_sealed": "packages' sealed bytes (the JWE sent, or the JWS for tls-only partners)",
    "package_plaintext": "packages' signed plaintext (the minimized case)",
    "event_original": "reports as partners sent them (free text unscreened)",
    "event_text": "reports' screened free text",
    "case_reference": "the bank's case id beside a case's records",
}

MOMENTS: dict[str, str] = {
    "expiry": "the package's expiry (exp), once it is delivered, dead or recalled",
    "deletion_attested": "the partner's deletion attestation",
    "received": "the report's arrival",
}


class Period(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after: str
    days: int = Field(ge=0, le=36600)


class PersonalRetention(BaseModel):
    """The rule pack's ``[retention.personal]``: a `Period` per kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    package_sealed: Period = Period(after="expiry", days=0)
    package_plaintext: Period = Period(after="deletion_attested", days=30)
    event_original: Period = Period(after="received", days=90)
    event_text: Period = Period(after="received", days=1825)
    case_reference: Period = Period(after="deletion_attested", days=1825)

    @model_validator(mode="after")
    def _anchors(self) -> PersonalRetention:
        for kind in KINDS:
            after = getattr(self, kind).after
            if after != ANCHORS[kind]:
                moment = ANCHORS[kind]
                raise ValueError(f"{kind}.after: must be {moment!r} ({MOMENTS[moment]}), not {after!r}")
        return self


class Schedule:
    """The periods in force: the pack's, with a partner's own days where it sets them."""

    def __init__(self, personal: PersonalRetention, years: int) -> None:
        self.personal = personal
        self.years = years

    def days(self, kind: Kind, profile: Mapping[str, int | None] | None = None) -> int:
        own = (profile or {}).get(kind)
        return own if own is not None else getattr(self.personal, kind).days

    def cutoff(self, kind: Kind, now: datetime, profile: Mapping[str, int | None] | None = None) -> datetime:
        """What ran from a moment at or before this is due now."""
        return now - timedelta(days=self.days(kind, profile))

    def backstop(self, now: datetime) -> datetime:
        """Placed at or before this, a case the partner ended without attesting is due."""
        try:
            return now.replace(year=now.year - self.years)
        except ValueError:  # 29 February
            return now.replace(year=now.year - self.years, day=28)

    def rule(self, kind: Kind, profile: Mapping[str, int | None] | None = None) -> str:
        """The rule in words."""
        return f"{self.days(kind, profile)} days after {MOMENTS[ANCHORS[kind]]}"
