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
    data: dict[str, Any] = Field(
        description="the minimized case: only the fields the partner's profile lists for this purpose, "
        'nested as in the case ("debtor.name" arrives as {"debtor": {"name": ...}}, a list field as '
        "a list of objects); a field the case lacks is absent. Each value as its transform gives it: "
        'keep: the field\'s own type, decimals as text in plain notation ("52310.45"), dates as '
        '"YYYY-MM-DD"; mask: text with * in place of the hidden characters ("**************1234"); '
        'token: "tok_" and 32 hex digits; year: an integer; bucket: a range as text ("<1000", '
        '"1000..<10000", ">=50000"). A number or address sent in another form than its token has its '
        'token beside it, under the same name with _token added ("number_token" beside "number"): '
        "report it as number_token on contacts with that number. "
        'The partner kit holds the exact schema of each purpose\'s data. '
        'A recall notice (purpose "recall") holds only {"recall": {"reason", "deletion_due", "attest_with"}}.'
    )
    test: bool = Field(
        default=False,
        description="present and true only in go-live test packages: synthetic data, not a case",
    )
