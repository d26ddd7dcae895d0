"""Audit log entries: what happened, to whom, why; never raw personal data.

Subjects and cases appear only as audit-scope pseudonyms (keyed HMAC tokens), fields
only as paths and transforms, payloads only as SHA-256 digests. Each entry is one leaf
of the Merkle log, hashed as its canonical JSON (RFC 8785).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
Token = Annotated[str, Field(pattern=r"^[a-z]+_[0-9a-f]{32}$")]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    at: str = Field(description="UTC time, RFC 3339")
    actor: str = Field(description="who caused it: an operator, a token id, 'system'")


class DisclosedField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    transform: str


class Disclosure(_Entry):
    kind: Literal["disclosure"] = "disclosure"
    package_id: str
    partner: str
    purpose: str
    legal_basis: str
    subject: Token
    case: Token
    fields: list[DisclosedField]
    payload_digest: Digest
    sealing: str


ChangeKind = Literal["partner_onboarded", "partner_updated", "partner_suspended", "partner_reinstated"]


class PartnerChange(_Entry):
    kind: ChangeKind
    partner: str
    profile_digest: Digest
    reason: str = ""


class KeyRotated(_Entry):
    kind: Literal["key_rotated"] = "key_rotated"
    key: Literal["bank-signing"]
    old_kid: str
    new_kid: str


class CallbackReceived(_Entry):
    """A status event taken in from a partner (callback or poll)."""

    kind: Literal["callback"] = "callback"
    partner: str
    case: Token
    event_type: str
    channel: Literal["callback", "poll"]
    body_digest: Digest


class ViolationFound(_Entry):
    kind: Literal["violation"] = "violation"
    partner: str
    case: Token
    rule: str
    violation_id: int


class Recall(_Entry):
    kind: Literal["recall"] = "recall"
    partner: str
    case: Token
    reason: str
    deletion_due: str


class DeletionAttested(_Entry):
    kind: Literal["deletion_attested"] = "deletion_attested"
    partner: str
    case: Token
    body_digest: Digest


class TokenCreated(_Entry):
    kind: Literal["token_created"] = "token_created"
    token_id: str
    role: str


Entry = (
    Disclosure
    | PartnerChange
    | KeyRotated
    | CallbackReceived
    | ViolationFound
    | Recall
    | DeletionAttested
    | TokenCreated
)
AuditEntry = Annotated[Entry, Field(discriminator="kind")]
