"""Status events partners report back (callbacks or polling), first version.

A partner sends one event per callback body, quoting the ``case_ref`` it received in
the package. ``type`` selects the model.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.case import CurrencyCode

#: The years a reported date may fall in. Outside them a date is a mistake, and some
#: (year 1 at +14:00) cannot even be converted to UTC.
FIRST_YEAR, LAST_YEAR = 1970, 2100
D = TypeVar("D", date, datetime)


def _in_years(value: D) -> D:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must fall in the years {FIRST_YEAR} to {LAST_YEAR}")
    return value


#: Reported amounts, in the case's currency: finite, at most 2 decimal places, below
#: 10^12 (a string such as "1e400000" is a valid decimal, and made the scorecard's
#: recovery rate infinite).
LARGEST_AMOUNT = Decimal("999999999999.99")
Amount = Annotated[Decimal, Field(gt=0, le=LARGEST_AMOUNT, decimal_places=2)]
#: An award may grant nothing.
AwardAmount = Annotated[Decimal, Field(ge=0, le=LARGEST_AMOUNT, decimal_places=2)]

#: A moment with its UTC offset.
Moment = Annotated[AwareDatetime, AfterValidator(_in_years)]
Day = Annotated[date, AfterValidator(_in_years)]

#: A reference the partner quotes: its own file number, a filing number, a token.
Reference = Annotated[str, Field(max_length=200)]
#: Free text: a reason, a summary, a statement, a note.
Text = Annotated[str, Field(max_length=4000)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # No control characters: a NUL, which PostgreSQL refuses in text, made the look-up a 500.
    case_ref: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    occurred_at: Moment
    package_id: Reference | None = None


class Accepted(_Event):
    type: Literal["accepted"]
    partner_reference: Reference | None = None


class Rejected(_Event):
    type: Literal["rejected"]
    reason: Text


class ContactAttempt(_Event):
    type: Literal["contact_attempt"]
    channel: Literal["voice", "ai_voice", "sms", "email", "letter", "visit"]
    target: Literal["debtor", "third_party"]
    outcome: Literal["no_answer", "connected", "left_message", "wrong_party", "refused"]
    number_token: Reference | None = Field(
        default=None,
        description="token of the number or address contacted, as received: the value itself when the "
        "number arrived as a token, else the token beside it (number_token beside number)",
    )
    staff_count: int | None = Field(default=None, ge=1, description="visits only")
    text: Text | None = Field(default=None, description="template or note")


class ContactRequest(_Event):
    """What a person asked about being contacted, heard by the partner (on a call, in a
    letter, as a STOP reply): it binds every partner and the gateway's own messages."""

    type: Literal["contact_request"]
    kind: Literal["opt_out", "cease", "attorney", "workplace", "stop_third_party"] = Field(
        description="opt_out: not through this medium (or this number or address); cease: no more "
        "communication; attorney: represented by an attorney; workplace: not at work (the employer "
        "forbids it); stop_third_party: a third party asks not to be contacted again"
    )
    channel: Literal["voice", "ai_voice", "sms", "email", "letter", "visit"] | None = Field(
        default=None, description="opt_out: the medium the person closed"
    )
    number_token: Reference | None = Field(
        default=None,
        description="token of the number or address the request is about, as received, itself or "
        "beside the number (required for stop_third_party; for workplace, the work number)",
    )

    @model_validator(mode="after")
    def _complete(self) -> ContactRequest:
        if self.kind == "opt_out" and self.channel is None:
            raise ValueError("an opt_out request names the channel (medium) it closes")
        if self.kind == "stop_third_party" and self.number_token is None:
            raise ValueError("a stop_third_party request names the third party's number_token")
        return self


class PromiseToPay(_Event):
    type: Literal["promise_to_pay"]
    amount: Amount
    currency: CurrencyCode | None = None
    due: Day


class PaymentReported(_Event):
    type: Literal["payment_reported"]
    amount: Amount
    currency: CurrencyCode | None = None


class Dispute(_Event):
    type: Literal["dispute"]
    reason: Text


class Complaint(_Event):
    type: Literal["complaint"]
    summary: Text


class Hardship(_Event):
    type: Literal["hardship"]
    summary: Text


class Returned(_Event):
    type: Literal["returned"]
    reason: Text


class Closed(_Event):
    type: Literal["closed"]
    reason: Text


class ArbitrationFiled(_Event):
    type: Literal["arbitration_filed"]
    filing_number: Reference


class HearingScheduled(_Event):
    type: Literal["hearing_scheduled"]
    hearing_at: Moment


class AwardIssued(_Event):
    type: Literal["award_issued"]
    award_amount: AwardAmount | None = None
    currency: CurrencyCode | None = None
    summary: Text = ""


class MessageDelivered(_Event):
    type: Literal["message_delivered"]


class MessageFailed(_Event):
    type: Literal["message_failed"]
    reason: Text


class DeletionAttested(_Event):
    type: Literal["deletion_attested"]
    deleted_at: Annotated[datetime, AfterValidator(_in_years)]
    statement: Text = Field(min_length=1)


StatusEvent = Annotated[
    Accepted
    | Rejected
    | ContactAttempt
    | ContactRequest
    | PromiseToPay
    | PaymentReported
    | Dispute
    | Complaint
    | Hardship
    | Returned
    | Closed
    | ArbitrationFiled
    | HearingScheduled
    | AwardIssued
    | MessageDelivered
    | MessageFailed
    | DeletionAttested,
    Field(discriminator="type"),
]
