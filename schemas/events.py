"""Status events partners report back (callbacks or polling), first version.

A partner sends one event per callback body, quoting the ``case_ref`` it received in
the package. ``type`` selects the model.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_ref: str = Field(min_length=1, max_length=100)
    occurred_at: AwareDatetime
    package_id: str | None = None


class Accepted(_Event):
    type: Literal["accepted"]
    partner_reference: str | None = None


class Rejected(_Event):
    type: Literal["rejected"]
    reason: str


class ContactAttempt(_Event):
    type: Literal["contact_attempt"]
    channel: Literal["voice", "ai_voice", "sms", "email", "letter", "visit"]
    target: Literal["debtor", "third_party"]
    outcome: Literal["no_answer", "connected", "left_message", "wrong_party", "refused"]
    number_token: str | None = Field(
        default=None, description="token of the number or address contacted, as received"
    )
    staff_count: int | None = Field(default=None, ge=1, description="visits only")
    text: str | None = Field(default=None, max_length=4000, description="template or note")


class PromiseToPay(_Event):
    type: Literal["promise_to_pay"]
    amount: Decimal = Field(gt=0)
    due: date


class PaymentReported(_Event):
    type: Literal["payment_reported"]
    amount: Decimal = Field(gt=0)


class Dispute(_Event):
    type: Literal["dispute"]
    reason: str


class Complaint(_Event):
    type: Literal["complaint"]
    summary: str


class Hardship(_Event):
    type: Literal["hardship"]
    summary: str


class Returned(_Event):
    type: Literal["returned"]
    reason: str


class Closed(_Event):
    type: Literal["closed"]
    reason: str


class ArbitrationFiled(_Event):
    type: Literal["arbitration_filed"]
    filing_number: str


class HearingScheduled(_Event):
    type: Literal["hearing_scheduled"]
    hearing_at: AwareDatetime


class AwardIssued(_Event):
    type: Literal["award_issued"]
    award_amount: Decimal | None = None
    summary: str = ""


class MessageDelivered(_Event):
    type: Literal["message_delivered"]


class MessageFailed(_Event):
    type: Literal["message_failed"]
    reason: str


class DeletionAttested(_Event):
    type: Literal["deletion_attested"]
    deleted_at: datetime
    statement: str = Field(min_length=1)


StatusEvent = Annotated[
    Accepted
    | Rejected
    | ContactAttempt
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
