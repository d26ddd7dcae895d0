"""The bank's full internal case: everything the gateway *could* disclose.

Nothing here leaves as it is. A partner receives only the field paths its profile lists
for the purpose, each through its transform (see ``gateway.placement.minimize``).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
PhoneNumber = Annotated[str, Field(pattern=r"^\+?[0-9]{5,15}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known_zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        # The value is not quoted: a column mixed up upstream could put a name here.
        raise ValueError("not a known IANA time zone name, e.g. Asia/Shanghai") from None
    return value


class Phone(_Model):
    number: PhoneNumber
    label: Literal["mobile", "home", "work"] = "mobile"
    timezone: str | None = Field(
        default=None,
        description="IANA time zone where this number rings, when it differs from or is surer than the "
        "debtor's; contact hours must hold there and in the debtor's zone",
    )

    _zone = field_validator("timezone")(_known_zone)


class Address(_Model):
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")
    province: str = ""
    city: str = ""
    district: str = ""
    line: str = ""
    postcode: str = ""
    timezone: str | None = Field(default=None, description="IANA time zone of the address")

    _zone = field_validator("timezone")(_known_zone)


class Debtor(_Model):
    name: str = Field(min_length=1, max_length=200)
    id_type: Literal["resident_id", "passport", "ssn", "other"]
    id_number: str = Field(min_length=3, max_length=40)
    phones: list[Phone] = Field(default_factory=list)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    address: Address | None = None
    timezone: str = Field(description="IANA time zone of the debtor, e.g. Asia/Shanghai")
    language: str = "zh"

    _zone = field_validator("timezone")(_known_zone)


class EmergencyContact(_Model):
    name: str = Field(min_length=1, max_length=200)
    relation: str
    phone: PhoneNumber


class LimitationEvent(_Model):
    """Something that happened to the debt that a limitation period may count from."""

    kind: Literal["payment", "acknowledgement", "demand", "filing", "proceedings_ended"] = Field(
        description="payment (also partial); acknowledgement by the debtor (also a promise to pay in "
        "instalments); demand to pay made by the creditor; filing of a suit or an arbitration; "
        "proceedings_ended (judgment, award, withdrawal). Which of them restart the period is the "
        "rule pack's (limitation.resets)"
    )
    date: date


class Loan(_Model):
    product: str
    account_number: str = Field(min_length=4, max_length=40)
    currency: CurrencyCode
    principal: Money
    outstanding: Money
    interest: Money = Decimal(0)
    fees: Money = Decimal(0)
    overdue_since: date
    overdue_days: int = Field(ge=0)
    last_due_date: date
    last_payment_date: date | None = None
    last_payment_amount: Money | None = None
    last_acknowledged: date | None = Field(
        default=None,
        description="Last date the debtor acknowledged the debt. Kept for cases written before "
        "`events`; read as an acknowledgement event. A demand to pay goes in `events` as a demand",
    )
    events: list[LimitationEvent] = Field(
        default_factory=list,
        description="What happened to the debt that a limitation period may count from, typed",
    )

    def limitation_events(self) -> list[tuple[str, date]]:
        """Every dated event, the old acknowledgement field and the last payment included."""
        found = [(event.kind, event.date) for event in self.events]
        if self.last_acknowledged is not None:
            found.append(("acknowledgement", self.last_acknowledged))
        if self.last_payment_date is not None:
            found.append(("payment", self.last_payment_date))
        return sorted(set(found), key=lambda e: (e[1], e[0]))


class Evidence(_Model):
    doc_id: str
    kind: Literal["contract", "statement", "demand_letter", "call_record", "other"]
    title: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Case(_Model):
    case_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    debtor: Debtor
    emergency_contacts: list[EmergencyContact] = Field(default_factory=list)
    loan: Loan
    evidence: list[Evidence] = Field(default_factory=list)
