"""The dispatcher's options (``[dispatch]`` in gateway.toml) and the counts it reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gateway.config import DispatchSettings
from gateway.delivery.breaker import BreakerPolicy


@dataclass(frozen=True)
class Options:
    lease: float = 120.0
    """Seconds a claim is held; a dead worker's packages are claimed again after it."""
    batch: int = 50
    """Most packages claimed in one transaction."""
    idle: float = 2.0
    """Longest sleep of a lane with nothing due."""
    refresh: float = 15.0
    """Seconds between looks for new or changed partners (``run`` only)."""
    slot_lease: float = 10.0
    """Seconds a lane's hold on a partner's concurrency slots lasts unless renewed."""
    breaker: BreakerPolicy | None = None
    """The breaker's policy; None: the workspace's (``[breaker]`` in gateway.toml)."""

    @property
    def slot_lease_for_claims(self) -> float:
        """The slot lease, at most half the claims' lease: a lane waiting for the slots
        of a killed dispatcher must not outwait the leases of the packages it holds."""
        return min(self.slot_lease, self.lease / 2)

    @classmethod
    def from_settings(cls, settings: DispatchSettings, **overrides: Any) -> Options:
        """The workspace's ``[dispatch]`` settings (gateway.toml, ``GATEWAY_DISPATCH__*``),
        with ``overrides`` (a command's flags) over them."""
        base = {
            "lease": settings.lease_seconds,
            "batch": settings.batch,
            "idle": settings.idle_seconds,
            "refresh": settings.refresh_seconds,
            "slot_lease": settings.slot_lease_seconds,
        }
        return cls(**{**base, **overrides})


@dataclass
class Stats:
    delivered: int = 0
    retry_wait: int = 0
    dead: int = 0
    started: float = field(default_factory=time.monotonic)

    def count(self, state: str) -> None:
        setattr(self, state, getattr(self, state) + 1)

    @property
    def rate(self) -> float:
        return self.delivered / max(time.monotonic() - self.started, 1e-9)
