"""The shape of a partner adapter.

An adapter turns one outbound package into whatever the partner's API takes, and (if
the partner cannot push) fetches status events. It holds its own connections, opened
lazily and released in :meth:`aclose`. It translates foreign errors into
``gateway.errors`` (``PartnerUnavailable``, ``PartnerTimeout``, ``PartnerRejected``) and
never retries by itself: retries, rate limits and the circuit breaker live in the core.
It calls :func:`before_sending` once the last step that may wait before the package
leaves (a connection, a TLS handshake, an SFTP login) is done: the built-in ones do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gateway.errors import DeliveryError, NotSent
from schemas.partner import PartnerProfile

if TYPE_CHECKING:
    from gateway.onboarding.custody import PackageSigner
    from gateway.onboarding.keys import KeyStore
    from gateway.plugin.events import Event


_slot_held: ContextVar[Callable[[], bool] | None] = ContextVar("slot_held", default=None)


def before_sending() -> None:
    """Raise :class:`NotSent` if the concurrency slot the attempt took is no longer the
    lane's. A process that stalls (stopped, swapped out, a blocked event loop) between
    taking a slot and sending may find, when it goes on, that its hold lapsed and
    another dispatcher took the slot: sent now, the partner would have more requests
    in flight than its limit. Outside a dispatch attempt it does nothing."""
    held = _slot_held.get()
    if held is not None and not held():
        raise NotSent("not sent: the concurrency slot lapsed before the package left (the process stalled)")


@contextmanager
def slot_held(check: Callable[[], bool]) -> Iterator[None]:
    """For the core: :func:`before_sending` asks ``check`` within this block (and in tasks
    started in it)."""
    token = _slot_held.set(check)
    try:
        yield
    finally:
        _slot_held.reset(token)


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
    """The compact JWE (sealing ``jwe``) or signed JWS (``tls-only``, ``openpgp``) to send."""
    claims_from: dict[str, Any] | Callable[[], dict[str, Any]] = field(repr=False, compare=False)
    """The minimized claims, or what reads them (once, when `claims` is first asked for)."""

    @functools.cached_property
    def claims(self) -> dict[str, Any]:
        """The minimized claims, for adapters that must render them (SMS, email). The
        dispatcher reads them from the package's signed form only when they are asked
        for: an adapter that sends `sealed` as it is never does, nor does a delivery
        whose answer needs no redacting (about 5% of a package's dispatch CPU)."""
        source = self.claims_from
        return source() if callable(source) else source


#: A receipt's detail when the acknowledgement held what was asked of it and nothing
#: else: the gateway's own word, no text of the partner's (so no personal data to redact).
ACCEPTED = "accepted"


@dataclass(frozen=True)
class Receipt:
    partner_ref: str | None = None
    status: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class PollResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None


@dataclass(frozen=True)
class Resources:
    """What the gateway lends an adapter besides its profile, for adapters that need it
    (``Gateway.adapter_resources``): none of it is ever written in a profile."""

    keys: KeyStore
    """The key store: credentials a profile names by file (`KeyStore.partner_secret`)."""
    signer: Callable[[], PackageSigner]
    """The bank's package signer (the key custody's), for files the bank signs."""
    state_dir: Path
    """The workspace's folder for adapters' own state; each uses ``state_dir / partner id``."""
    emit: Callable[[list[Event]], None] | None = None
    """Tells the ``gateway_event`` subscribers (alerts) of what the adapter saw, such as a
    partner's file it refused."""


class Adapter:
    #: The name profiles use in ``adapter = "..."``.
    name: ClassVar[str]
    #: The partner kinds this adapter can serve.
    kinds: ClassVar[frozenset[str]]
    Config: ClassVar[type[AdapterConfig]] = AdapterConfig
    #: The profiles' ``sealing`` values this adapter can deliver: ``openpgp`` only where
    #: the adapter itself encrypts (it receives the signed claims, not a JWE).
    sealings: ClassVar[frozenset[str]] = frozenset({"jwe", "tls-only"})

    def __init__(
        self, profile: PartnerProfile, config: AdapterConfig, resources: Resources | None = None
    ) -> None:
        self.profile = profile
        self.config = config
        self.resources = resources

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        """Validate the profile's ``[adapter_config]`` and anything else this adapter
        needs of the profile; raise ValueError naming the field."""
        return cls.Config.model_validate(profile.adapter_config)

    @classmethod
    def for_profile(cls, profile: PartnerProfile, resources: Resources | None = None) -> Adapter:
        """An adapter for ``profile``, its config checked; opens no connection. With
        ``resources`` (onboarding, dispatch, polling), an adapter that reads credentials
        checks them here and raises ValueError naming the field."""
        return cls(profile, cls.check_profile(profile), resources)

    def lent(self) -> Resources:
        """The resources; an adapter made without them cannot reach its credentials."""
        if self.resources is None:
            raise DeliveryError(f"adapter {self.name} for {self.profile.id!r} was made without the key store")
        return self.resources

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
