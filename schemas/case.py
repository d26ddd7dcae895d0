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


class Phone(_Model):
    number: PhoneNumber
    label: Literal["mobile", "home", "work"] = "mobile"


class Address(_Model):
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")
    province: str = ""
    city: str = ""
    district: str = ""
    line: str = ""
    postcode: str = ""


class Debtor(_Model):
    name: str = Field(min_length=1, max_length=200)
    id_type: Literal["resident_id", "passport", "ssn", "other"]
    id_number: str = Field(min_length=3, max_length=40)
    phones: list[Phone] = Field(default_factory=list)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    address: Address | None = None
    timezone: str = Field(description="IANA time zone of the debtor, e.g. Asia/Shanghai")
    language: str = "zh"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            # The value is not quoted: a column mixed up upstream could put a name here.
            raise ValueError("not a known IANA time zone name, e.g. Asia/Shanghai") from None
        return value


class EmergencyContact(_Model):
    name: str = Field(min_length=1, max_length=200)
    relation: str
    phone: PhoneNumber


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
        description="Last date the debtor acknowledged the debt or was demanded to pay "
        "(resets the limitation period, Civil Code art. 195)",
    )


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
