"""The shape of a partner adapter.

An adapter turns one outbound package into whatever the partner's API takes, and (if
the partner cannot push) fetches status events. It holds its own connections, opened
lazily and released in :meth:`aclose`. It translates foreign errors into
``gateway.errors`` (``PartnerUnavailable``, ``PartnerTimeout``, ``PartnerRejected``) and
never retries by itself: retries, rate limits and the circuit breaker live in the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from schemas.partner import PartnerProfile


class AdapterConfig(BaseModel):
    """Base for each adapter's ``Config``: unknown keys in a profile are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class OutboundPackage:
    package_id: str
    case_ref: str
    purpose: str
    sealing: str
    sealed: str
    """The compact JWE (sealing ``jwe``) or signed JWS (``tls-only``) to send."""
    claims: dict[str, Any]
    """The minimized claims, for adapters that must render them (SMS, email)."""


@dataclass(frozen=True)
class Receipt:
    partner_ref: str | None = None
    status: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class PollResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None


class Adapter:
    #: The name profiles use in ``adapter = "..."``.
    name: ClassVar[str]
    #: The partner kinds this adapter can serve.
    kinds: ClassVar[frozenset[str]]
    Config: ClassVar[type[AdapterConfig]] = AdapterConfig

    def __init__(self, profile: PartnerProfile, config: AdapterConfig) -> None:
        self.profile = profile
        self.config = config

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        """Validate the profile's ``[adapter_config]`` and anything else this adapter
        needs of the profile; raise ValueError naming the field."""
        return cls.Config.model_validate(profile.adapter_config)

    @classmethod
    def for_profile(cls, profile: PartnerProfile) -> Adapter:
        """An adapter for ``profile``, its config checked; opens no connection."""
        return cls(profile, cls.check_profile(profile))

    async def deliver(self, package: OutboundPackage) -> Receipt:
        raise NotImplementedError

    def message_texts(self, purpose: str) -> list[str]:
        """Every text the gateway sends in the partner's name for ``purpose`` (an SMS
        body; an email's subject and body), with its ``{slots}`` unfilled. The core checks
        them against the rule pack when the partner is onboarded and before each send.
        Adapters that send no text of the bank's return nothing."""
        return []

    def poll_interval(self) -> float | None:
        """Seconds between polls of this partner's status feed; None: not polled (the
        partner pushes callbacks, or its profile names no feed)."""
        return None

    async def poll(self, since: str | None) -> PollResult:
        raise NotImplementedError(f"adapter {self.name} cannot poll")

    async def aclose(self) -> None:
        """Release connections."""

    async def __aenter__(self) -> Adapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
