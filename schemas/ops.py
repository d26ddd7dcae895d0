"""Response bodies of the read-only API routes (operations, supervision, audit), as
OpenAPI documents them. Fields are what the handlers return; a model that allows extra
members says so."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Delivery(_Out):
    id: str
    partner_id: str
    state: str
    attempts: int
    next_attempt_at: str
    partner_ref: str | None
    last_error: str | None
    why: str = Field(description="why a waiting package waits: a rule and until when, breaker, Retry-After")


class Deliveries(RootModel[list[Delivery]]):
    pass


class Violation(_Out):
    id: int
    at: str
    partner_id: str
    case_id: str
    rule: str
    message: str


class Violations(RootModel[list[Violation]]):
    pass


class Attestation(_Out):
    partner_id: str
    case_id: str
    recalled_at: str | None
    recall_reason: str | None
    deletion_due: str | None


class Attestations(RootModel[list[Attestation]]):
    pass


class Breaker(_Out):
    partner: str
    partner_status: str
    breaker: str = Field(description="closed, half_open or open")
    failures: int
    open_until: str | None
    probe_until: str | None
    updated_at: str | None


class Breakers(RootModel[list[Breaker]]):
    pass


class Token(_Out):
    id: str
    role: str
    label: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    status: str = Field(description="active, expired or revoked")


class Tokens(RootModel[list[Token]]):
    pass


class MetricsSummary(_Out):
    """The shared-state gauges of /metrics, as JSON for a dashboard."""

    outbox: dict[str, dict[str, int]] = Field(description="partner -> state -> packages")
    oldest_due_seconds: dict[str, float] = Field(description="partner -> age of its oldest due package")
    breakers: dict[str, str] = Field(description="partner -> breaker state")
    partners: dict[str, str] = Field(description="partner -> status")
    attestations_overdue: dict[str, int]
    audit: dict[str, float | None] = Field(
        description="log_entries, checkpoint_size, checkpoint_age_seconds (None: no checkpoint yet), "
        "checkpoint_lag_seconds"
    )


class Readiness(_Out):
    status: str
    checks: dict[str, str]


class Health(_Out):
    status: str


class PackageView(_Out):
    package_id: str
    partner: str
    case_id: str
    purpose: str
    state: str
    sealing: str
    created_at: str
    fields: list[dict[str, str]]
    claims: dict[str, Any] = Field(description="the signed claims, as the partner reads them")


class CaseTimeline(_Out):
    case_id: str
    assignments: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    violations: list[dict[str, Any]]


class PartnerSummary(_Out):
    id: str
    name: str
    kind: str
    status: str
    status_reason: str
    contract: dict[str, Any]
    profile_digest: str


class Partners(RootModel[list[PartnerSummary]]):
    pass


class Scorecard(_Out):
    """A partner's conduct (`gateway scorecard`, ``GET /v1/partners/{id}/scorecard``)."""

    partner: str
    status: str
    cases: int
    ack_latency_hours: float | None = Field(description="median time from placement to acceptance")
    sla_breaches: int = Field(description="cases not accepted within ack_sla_hours (late, or waiting)")
    contact_attempts: int
    right_party_contact_rate: float | None
    promise_to_pay_rate: float | None
    promise_kept_rate: float | None
    recovery_rate: float | None = Field(description="reported payments over the amount placed")
    complaint_rate: float | None
    violations: int
    violation_rate: float | None = Field(description="violations per contact attempt")


class Checkpoint(_Out):
    size: int
    note: str = Field(description="the C2SP signed note")
    created_at: str


class EntriesPage(_Out):
    entries: list[dict[str, Any]]
    limit: int


class InclusionProof(_Out):
    index: int
    size: int
    leaf: str
    leaf_hash: str
    proof: list[str]
    root: str
    checkpoint: str | None


class ConsistencyProof(_Out):
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str]
    old_checkpoint: str | None
    new_checkpoint: str | None


class JWKS(BaseModel):
    model_config = ConfigDict(extra="allow")

    keys: list[dict[str, Any]]


class OpenAPIDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


class ErasureCase(BaseModel):
    partner: str
    case_token: str
    outcome: str
    detail: str | None = None
    state: str | None = None
    deletion_due: str | None = None
    attested_at: str | None = None


class ErasureStatus(BaseModel):
    """Where a data subject's erasure request stands (`gateway subject status`)."""

    erasure_id: str
    subject: str = Field(description="the person's audit pseudonym, never their identity")
    reason: str
    requested_at: str
    completed_at: str | None
    complete: bool
    attested: int = Field(description="cases whose partner attested deletion")
    cases: list[ErasureCase]
    waiting_for: list[str]
