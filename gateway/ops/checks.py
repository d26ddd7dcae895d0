"""The health rules shared by readiness, metrics and alerts, each written once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.storage import Transaction

#: Assignments waiting for the partner's deletion attestation; with ``OVERDUE``, past
#: their deadline (the one rule for the command, the API, the metric and the alert).
AWAITING_DELETION = "state = 'recalled' AND attested_at IS NULL"
OVERDUE = f"{AWAITING_DELETION} AND deletion_due < ?"


@dataclass(frozen=True)
class AuditState:
    size: int
    """Entries in the log."""
    checkpoint_size: int
    """Entries the latest signed checkpoint covers (0: none yet)."""
    checkpoint_at: str | None
    uncovered_since: str | None
    """When the first entry no checkpoint covers was appended (None: all covered)."""

    def lag(self, now: datetime) -> float:
        """Seconds the oldest entry not covered by a checkpoint has waited for one."""
        if self.uncovered_since is None:
            return 0.0
        return max((now - parse(self.uncovered_since)).total_seconds(), 0.0)

    def overdue(self, now: datetime, limit: float) -> str | None:
        """Why the checkpoint is late, or None; ``limit`` 0 never."""
        lag = self.lag(now)
        if limit <= 0 or lag <= limit:
            return None
        return (
            f"{self.size - self.checkpoint_size} audit entries have waited {lag:.0f} s for a signed "
            f"checkpoint (limit {limit:.0f} s); is the checkpoint timer running? "
            "`gateway audit checkpoint` signs one now"
        )


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


async def audit_state(tx: Transaction) -> AuditState:
    size = await tx.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries")
    latest = await tx.fetchone("SELECT size, created_at FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
    covered = latest["size"] if latest else 0
    since = None
    if size > covered:
        since = await tx.fetchval("SELECT at FROM audit_entries WHERE idx = ?", (covered,))
    return AuditState(size, covered, latest["created_at"] if latest else None, since)
