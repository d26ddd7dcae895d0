"""Bodies of the operator HTTP API, and the RFC 9457 problem document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.case import Case


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlacementRequest(_Model):
    case: Case
    partner: str
    purpose: str


class PlacementResponse(_Model):
    package_id: str
    partner: str
    purpose: str
    case_ref: str


#: Longest reason an operator may give for a recall, an offboarding or a suspension.
MAX_REASON = 500


class RecallRequest(_Model):
    case_id: str
    partner: str
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class RecallResponse(_Model):
    case_id: str
    partner: str
    deletion_due: str
    notice_package_id: str | None


class ErasureRequest(_Model):
    """A data subject's erasure request: the person by identity document, as in the case files."""

    id_type: str = Field(min_length=1, max_length=50)
    id_number: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class CallbackResponse(_Model):
    event_id: int
    state: str = Field(description="the case's state at this partner after the report")
    violations: list[str]
    partner_status: str = Field(
        default="active", description="the partner's status after the report: suspended if it suspended it"
    )


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    request_id: str | None = Field(
        default=None,
        description="the X-Request-Id of the request: a 5xx says only this, and the gateway's "
        "log holds the error under it",
    )
    extra: dict[str, Any] | None = None
