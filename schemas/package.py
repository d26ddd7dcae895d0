"""The claims of a sealed case package, as a partner's JOSE library sees them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Version of the package claims; bumped when a partner's parser would need to change.
PACKAGE_SCHEMA = "case-package/1"
#: Purpose claim of a recall notice: no case data, only the recall and its deadline.
RECALL_PURPOSE = "recall"


class PackageClaims(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iss: str = Field(description="the bank's identity")
    aud: str = Field(description="the partner id")
    iat: int
    exp: int
    jti: str = Field(description="package id; also the idempotency key of every delivery")
    purpose: str
    schema_: str = Field(alias="schema", default=PACKAGE_SCHEMA)
    case_ref: str = Field(
        description="partner-scoped pseudonym of the case; quote it in status callbacks"
    )
    data: dict[str, Any] = Field(description="the minimized case: only the listed fields")
