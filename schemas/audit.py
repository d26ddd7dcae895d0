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
    """Fields common to every entry. Every entry class declares its fields in sorted
    order (`v`, the format version, last), the order of their canonical JSON: the audit
    log then serializes an entry as it stands, without re-sorting it first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: str = Field(description="who caused it: an operator, a token id, 'system'")
    at: str = Field(description="UTC time, RFC 3339")


class DisclosedField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    transform: str


class Disclosure(_Entry):
    case: Token
    fields: list[DisclosedField]
    kind: Literal["disclosure"] = "disclosure"
    legal_basis: str
    package_id: str
    partner: str
    payload_digest: Digest
    purpose: str
    sealing: str
    subject: Token
    v: Literal[1] = 1


ChangeKind = Literal["partner_onboarded", "partner_updated", "partner_suspended", "partner_reinstated"]


class PartnerChange(_Entry):
    kind: ChangeKind
    partner: str
    profile_digest: Digest
    reason: str = ""
    v: Literal[1] = 1


class KeyRotated(_Entry):
    key: Literal["bank-signing"]
    kind: Literal["key_rotated"] = "key_rotated"
    new_kid: str
    old_kid: str
    v: Literal[1] = 1


class CallbackReceived(_Entry):
    """A status event taken in from a partner (callback or poll)."""

    body_digest: Digest
    case: Token
    channel: Literal["callback", "poll"]
    event_type: str
    kind: Literal["callback"] = "callback"
    partner: str
    v: Literal[1] = 1


class ViolationFound(_Entry):
    case: Token
    kind: Literal["violation"] = "violation"
    partner: str
    rule: str
    v: Literal[1] = 1
    violation_id: int


class Recall(_Entry):
    case: Token
    deletion_due: str
    kind: Literal["recall"] = "recall"
    partner: str
    reason: str
    v: Literal[1] = 1


class DeletionAttested(_Entry):
    body_digest: Digest
    case: Token
    kind: Literal["deletion_attested"] = "deletion_attested"
    partner: str
    v: Literal[1] = 1


class TokenCreated(_Entry):
    kind: Literal["token_created"] = "token_created"
    role: str
    token_id: str
    v: Literal[1] = 1


class RetentionPurge(_Entry):
    """Personal data the gateway deleted: how much of each kind, never what. ``subject``
    names the person when an erasure request caused it; a scheduled run has none."""

    case_references: int = Field(ge=0, description="cases whose bank case id was replaced by its token")
    event_originals: int = Field(ge=0, description="reports' encrypted originals deleted")
    event_texts: int = Field(ge=0, description="reports whose screened free text was deleted")
    kind: Literal["retention_purge"] = "retention_purge"
    package_plaintexts: int = Field(ge=0, description="packages' signed (plaintext) forms deleted")
    package_sealed: int = Field(ge=0, description="packages' sealed forms deleted")
    subject: Annotated[str | None, Field(pattern=r"^subj_[0-9a-f]{32}$")] = None
    trigger: Literal["retention", "erasure"]
    v: Literal[1] = 1


class ErasureRequested(_Entry):
    """A data subject's erasure request (PIPL art. 47): cases and partners, by count and id."""

    cases: int = Field(ge=0, description="assignments (case and partner) found about the person")
    erasure_id: str
    held: int = Field(ge=0, description="of them under a legal hold: their erasure waits")
    kind: Literal["erasure_requested"] = "erasure_requested"
    notices: int = Field(ge=0, description="sealed deletion requests queued")
    partners: list[str]
    reason: str
    subject: Token
    v: Literal[1] = 1


class ErasureCompleted(_Entry):
    """Every partner attested deletion and everything the gateway held was deleted."""

    erasure_id: str
    kind: Literal["erasure_completed"] = "erasure_completed"
    subject: Token
    v: Literal[1] = 1


class LegalHold(_Entry):
    """A case put under a legal hold (nothing of it is purged or erased) or released."""

    case: Token
    kind: Literal["legal_hold", "legal_hold_released"]
    reason: str
    v: Literal[1] = 1


Entry = (
    Disclosure
    | PartnerChange
    | KeyRotated
    | CallbackReceived
    | ViolationFound
    | Recall
    | DeletionAttested
    | TokenCreated
    | RetentionPurge
    | ErasureRequested
    | ErasureCompleted
    | LegalHold
)
AuditEntry = Annotated[Entry, Field(discriminator="kind")]
