"""What the outbox tells the rest of the process once a delivery transaction commits:
the attempt metrics, and ``delivered`` and ``dead`` events for ``gateway_event``
subscribers (alerts, SIEM). Events carry ids, classes and counts, never a partner's
free text (which may quote the package)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.delivery.outcome import Outcome
from gateway.logs import context
from gateway.ops import metrics
from gateway.placement.service import case_token
from gateway.plugin.events import Event
from gateway.storage import Row, Transaction

log = logging.getLogger("gateway.delivery")


def attempts_stored(gw: Gateway, tx: Transaction, outcomes: Sequence[Outcome], cases: dict[str, str]) -> None:
    """After ``tx`` commits: count the attempts, announce delivered and dead packages.
    ``cases``: the case id of each dead package."""
    at = isotime(gw.now())
    events = [
        Event(
            "delivered" if o.state == "delivered" else "dead",
            at,
            o.partner_id,
            case_token(gw, cases[o.package_id]) if o.package_id in cases else None,
            _detail(o),
        )
        for o in outcomes
        if o.state in ("delivered", "dead")
    ]

    def done() -> None:
        metrics.observe_attempts(outcomes)
        for o in outcomes:
            if o.state == "retry_wait":
                log.info("attempt failed, retrying at %s: %s", o.next_attempt_at, o.detail,
                         extra=context(partner=o.partner_id, package=o.package_id, attempt=o.attempt,
                                       status=o.status, error_class=o.error_class))  # fmt: skip
        gw.emit(events)

    tx.after_commit(done)


def _detail(o: Outcome) -> dict[str, Any]:
    detail: dict[str, Any] = {"package_id": o.package_id, "attempt": o.attempt}
    if o.state == "dead":
        detail.update(cause="refused by the partner" if o.signal == "success" else "gave up",
                      error_class=o.error_class, status=o.status)  # fmt: skip
    return detail


def dead_unsent(gw: Gateway, tx: Transaction, rows: Sequence[Row], cause: str) -> None:
    """After ``tx`` commits, announce packages that died before an attempt: ``expired``,
    or ``refused`` by the rule pack."""
    if not rows:
        return
    at = isotime(gw.now())
    events = [
        Event("dead", at, r["partner_id"], case_token(gw, r["case_id"]),
              {"package_id": r["id"], "cause": cause})  # fmt: skip
        for r in rows
    ]
    tx.after_commit(lambda: gw.emit(events))
