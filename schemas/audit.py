"""Audit log entries: what happened, to whom, why; never raw personal data.

Subjects and cases appear only as audit-scope pseudonyms (keyed HMAC tokens), fields
only as paths and transforms, packages only as SHA-256 digests of what was sealed
(random per package, so a digest confirms nothing about a guessed record). Each entry
is one leaf of the Merkle log, hashed as its canonical JSON (RFC 8785).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
Digest = Annotated[str, Field(pattern=DIGEST_PATTERN)]
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
    """A package placed with a partner. Version 2 digests the package as sealed;
    version 1 entries (logs written before) digested the minimized data instead, and
    keep that field and meaning."""

    case: Token
    fields: list[DisclosedField]
    kind: Literal["disclosure"] = "disclosure"
    legal_basis: str
    package_digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description="v2: SHA-256 of the package exactly as stored and sent (the compact JWE; "
        "the JWS for tls-only partners), random per package",
    )
    package_id: str
    partner: str
    payload_digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description="v1 only: SHA-256 of the minimized data (json.dumps, keys sorted)",
    )
    purpose: str
    sealing: str
    subject: Token
    v: Literal[1, 2] = 2

    @model_validator(mode="after")
    def _digest_of_its_version(self) -> Disclosure:
        wanted, other = "package_digest", "payload_digest"
        if self.v == 1:
            wanted, other = other, wanted
        if getattr(self, wanted) is None or getattr(self, other) is not None:
            raise ValueError(f"a version {self.v} disclosure has {wanted} and no {other}")
        return self


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


class KeyRetired(_Entry):
    """A bank signing key retired: published until `published_until` (for packages it
    signed that are still current), then left out; a compromised one at once."""

    compromised: bool
    key: Literal["bank-signing"]
    kid: str
    kind: Literal["key_retired"] = "key_retired"
    published_until: str | None = Field(default=None, description="absent when compromised")
    v: Literal[1] = 1


OpenPGPKeyChange = Literal["openpgp_key_generated", "openpgp_key_imported"]
FINGERPRINT_PATTERN = r"^[0-9A-F]{40}$"


class OpenPGPKeySet(_Entry):
    """The bank's OpenPGP key (which signs file partners' batches) made by the gateway
    or imported, named by its fingerprint (v4: 40 upper-case hex digits), never by key
    material. ``replaced``: a key was in place before (``--replace``); its fingerprint
    is ``previous_fingerprint``, absent if that key's files could not be read."""

    fingerprint: str = Field(pattern=FINGERPRINT_PATTERN, description="the new key's fingerprint")
    key: Literal["bank-openpgp"]
    kind: OpenPGPKeyChange
    previous_fingerprint: str | None = Field(
        default=None,
        pattern=FINGERPRINT_PATTERN,
        description="the key it replaced; absent when there was none or it was unreadable",
    )
    replaced: bool
    v: Literal[1] = 1


SecretChange = Literal["webhook_secret_added", "webhook_secret_removed"]


class WebhookSecretChanged(_Entry):
    """A partner's whsec_ secrets (v1 callback signatures) added or removed, named by
    their ids (`gateway.onboarding.keys.secret_id`), never by the secret."""

    kind: SecretChange
    partner: str
    reason: str = ""
    secret_ids: list[str]
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


class PartnerTest(_Entry):
    """A step of a partner's go-live test (`gateway partners test`): a test package of
    synthetic data sent, the partner's signed test report taken in or refused, the end."""

    kind: Literal["partner_test"] = "partner_test"
    outcome: str = Field(description="what happened, in plain words; no personal data")
    package_digest: Digest
    package_id: str
    partner: str
    step: Literal["package_sent", "callback", "finished"]
    v: Literal[1] = 1


class TokenCreated(_Entry):
    expires_at: str | None = Field(default=None, description="UTC time, RFC 3339; none: no expiry")
    kind: Literal["token_created"] = "token_created"
    role: str
    token_id: str
    v: Literal[1] = 1


class TokenRevoked(_Entry):
    kind: Literal["token_revoked"] = "token_revoked"
    token_id: str
    v: Literal[1] = 1


class Redelivery(_Entry):
    """A dead package put back in the outbox as it was: the same id, the same sealed
    bytes, the same Idempotency-Key. Not a new disclosure: the disclosure entry of the
    package stands, and this one says it was tried again."""

    case: Token
    kind: Literal["redelivery"] = "redelivery"
    package_id: str
    partner: str
    reason: str = ""
    v: Literal[1] = 1


class BreakerReset(_Entry):
    """An operator closed a partner's circuit breaker by hand."""

    kind: Literal["breaker_reset"] = "breaker_reset"
    partner: str
    previous: str = Field(description="the breaker's state before: closed, open or half_open")


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
    | KeyRetired
    | OpenPGPKeySet
    | WebhookSecretChanged
    | CallbackReceived
    | ViolationFound
    | Recall
    | DeletionAttested
    | TokenCreated
    | PartnerTest
    | TokenRevoked
    | Redelivery
    | BreakerReset
    | RetentionPurge
    | ErasureRequested
    | ErasureCompleted
    | LegalHold
)
AuditEntry = Annotated[Entry, Field(discriminator="kind")]
