"""What one delivery attempt came to, as the outbox records it."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.delivery.breaker import Signal


# Slots, not frozen: one is made for every attempt, and a frozen dataclass sets each
# field through object.__setattr__ (see `gateway.supervision.base.Contact`).
@dataclass(slots=True)
class Outcome:
    package_id: str
    partner_id: str
    attempt: int
    started_at: str
    latency_ms: float
    state: str
    """delivered, retry_wait or dead."""
    status: str | None
    error_class: str | None
    detail: str
    partner_ref: str | None = None
    next_attempt_at: str | None = None
    retry_after: float | None = None
    signal: Signal | None = None
    """What the attempt says about the partner's health, for the circuit breaker: an
    answer (even a refusal) is a success, no answer a failure, our own errors neither."""
