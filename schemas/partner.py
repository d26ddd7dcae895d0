"""A partner profile: who the partner is, what it may receive, and how to reach it.

Profiles are TOML files written by the bank's integration team and loaded with
``gateway partners add FILE``. This module checks their shape; checks that need the
outside world (the adapter exists, the key file is usable, the contract is current, the
field paths exist in ``Case``) live in ``gateway.onboarding.registry``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Kind = Literal["agency", "arbitration", "sms", "email"]
Purpose = Literal["reminder", "collection", "locate", "arbitration", "litigation"]

#: Purposes that go to a court or arbitration body: refused once the claim is time-barred.
LEGAL_PURPOSES: frozenset[str] = frozenset({"arbitration", "litigation"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldRule(_Model):
    """How one field path leaves: ``"keep"`` in TOML is short for ``{transform="keep"}``."""

    transform: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,39}$",
        description="keep, mask, token, year, bucket, drop, or a plugin's transform",
    )
    options: dict[str, str | int | bool | list[str]] = Field(
        default_factory=dict, description="options of a plugin's transform"
    )
    first: int = Field(default=0, ge=0, description="mask: characters kept at the start")
    last: int = Field(default=0, ge=0, description="mask: characters kept at the end")
    edges: list[Decimal] = Field(default_factory=list, description="bucket: range bounds")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"transform": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _parameters(self) -> FieldRule:
        if self.transform == "mask" and self.first + self.last == 0:
            raise ValueError(
                "mask needs first and/or last, e.g. {transform='mask', first=3, last=4}"
            )
        if self.transform == "bucket":
            if not self.edges:
                raise ValueError(
                    "bucket needs edges, e.g. {transform='bucket', edges=[1000, 10000]}"
                )
            if sorted(set(self.edges)) != self.edges:
                raise ValueError("bucket edges must be strictly increasing")
        return self


class PurposePolicy(_Model):
    legal_basis: str = Field(
        min_length=1, description="Why this disclosure is lawful, e.g. 'PIPL art. 13(2) contract'"
    )
    fields: dict[str, FieldRule] = Field(min_length=1)


class Contract(_Model):
    number: str = Field(min_length=1)
    valid_from: date
    valid_to: date
    purposes: list[Purpose] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Contract:
        if self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self

    def covers(self, purpose: str, day: date) -> bool:
        return purpose in self.purposes and self.valid_from <= day <= self.valid_to


class Limits(_Model):
    concurrency: int = Field(default=4, ge=1, le=256)
    rate_per_second: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base: float = Field(default=1.0, gt=0, description="seconds")
    backoff_cap: float = Field(default=300.0, gt=0, description="seconds")
    timeout: float = Field(default=30.0, gt=0, description="seconds per attempt")


class Supervision(_Model):
    violation_threshold: int = Field(
        default=5, ge=1, description="violations (rolling 30 days) that suspend the partner automatically"
    )
    ack_sla_hours: float = Field(default=24.0, gt=0, description="time to acknowledge a placement")
    deletion_deadline_days: int = Field(
        default=15, ge=1, description="days to attest deletion after a recall (PIPL art. 21)"
    )


class RetentionDays(_Model):
    """Days this partner's data is kept, per kind, where they differ from the rule pack's
    ``[retention.personal]`` (the moment each counts from is the pack's)."""

    package_sealed: int | None = Field(default=None, ge=0, le=36600)
    package_plaintext: int | None = Field(default=None, ge=0, le=36600)
    event_original: int | None = Field(default=None, ge=0, le=36600)
    event_text: int | None = Field(default=None, ge=0, le=36600)
    case_reference: int | None = Field(default=None, ge=0, le=36600)


#: What a partner id looks like.
PARTNER_ID = r"^[a-z0-9][a-z0-9-]{1,62}$"


class PartnerProfile(_Model):
    id: str = Field(pattern=PARTNER_ID)
    name: str = Field(min_length=1)
    kind: Kind
    adapter: str = Field(min_length=1, description="name of a registered adapter plugin")
    endpoint: str = Field(min_length=1)
    sealing: Literal["jwe", "tls-only", "openpgp"] = Field(
        default="jwe",
        description="jwe: packages sealed as nested JWTs; openpgp: signed and encrypted with OpenPGP by a "
        "file adapter (sftp_batch); tls-only: rendered messages for sms and email providers",
    )
    callback_format: str = Field(
        default="standard-webhooks",
        pattern=r"^[a-z][a-z0-9_-]{0,39}$",
        description="how the partner's callbacks are signed and shaped: standard-webhooks, or a plugin's",
    )
    jwks: str | None = Field(
        default=None,
        # Checked at onboarding and at every read (`gateway.onboarding.keys.partner_file`), not
        # here: profiles stored before that rule must still load.
        description="partner's public JWKS: a file of keys/partners/, e.g. partners/NAME.jwks.json",
    )
    package_ttl_days: int = Field(default=30, ge=1, le=366)
    contract: Contract
    policy: dict[Purpose, PurposePolicy] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    supervision: Supervision = Field(default_factory=Supervision)
    retention: RetentionDays = Field(default_factory=RetentionDays)
    adapter_config: dict[str, Any] = Field(
        default_factory=dict, description="the [adapter_config] table, checked by the adapter"
    )
