"""Status events partners report back (callbacks or polling), first version.

A partner sends one event per callback body, quoting the ``case_ref`` it received in
the package. ``type`` selects the model.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


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
    number_token: str | None = Field(
        default=None,
        description="token of the number or address the request is about, as received "
        "(required for stop_third_party; for workplace, the work number)",
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
