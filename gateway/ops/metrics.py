"""Prometheus metrics of one gateway process (``serve`` or ``dispatch``).

Two kinds:

- **Counters and histograms** count what *this process* did (attempts, callbacks,
  violations, requests); Prometheus adds them up across processes.
- **Gauges of shared state** (outbox depth and age, breakers, partners, overdue
  attestations, the audit log) are read from the database at scrape time
  (`state_families`), so every process reports the same figure: several dispatchers
  do not double-count, and a dashboard takes ``max`` over instances, not ``sum``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from gateway.clock import isotime
from gateway.delivery.outcome import Outcome
from gateway.ops.checks import OVERDUE, audit_state, parse
from gateway.plugin.events import Event
from gateway.storage import Database, Transaction

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

DELIVERIES = Counter(
    "gateway_deliveries", "Delivery attempts and packages given up, by partner and outcome "
    "(delivered, retry, dead; expired and refused: dead before an attempt)",
    ["partner", "outcome"], registry=REGISTRY,
)  # fmt: skip
ATTEMPT_SECONDS = Histogram(
    "gateway_delivery_attempt_seconds", "Latency of delivery attempts", ["partner"],
    buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip
CALLBACKS = Counter(
    "gateway_callbacks", "Partner callbacks by partner and HTTP status (rejections included; "
    "partner 'unknown' for a partner id that does not exist)", ["partner", "status"], registry=REGISTRY,
)  # fmt: skip
REQUEST_SECONDS = Histogram(
    "gateway_http_request_seconds", "HTTP processing time by route (placements: /v1/placements, "
    "callbacks: /v1/partners/{partner_id}/callbacks)", ["route", "method"],
    buckets=_SECONDS, registry=REGISTRY,
)  # fmt: skip
VIOLATIONS = Counter(
    "gateway_violations", "Rule violations found, by partner and rule", ["partner", "rule"], registry=REGISTRY
)
SUSPENSIONS = Counter(
    "gateway_partner_suspensions", "Partner suspensions, by partner and by whom (automatic, operator)",
    ["partner", "by"], registry=REGISTRY,
)  # fmt: skip
EVENTS = Counter("gateway_events", "Committed actions by kind (gateway_event)", ["kind"], registry=REGISTRY)
ALERTS = Counter(
    "gateway_alerts", "Alerts by sink and result (sent, failed: given up, dropped: queue full)",
    ["sink", "result"], registry=REGISTRY,
)  # fmt: skip


#: Each metric's children by label values: `labels` validates and hashes its arguments
#: on every call, a few microseconds on each request and event.
_CHILDREN: dict[tuple[Any, ...], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once per label values."""
    key = (metric, *values)
    child = _CHILDREN.get(key)
    if child is None:
        if len(_CHILDREN) >= 4096:  # label values from outside (a method) stay bounded
            _CHILDREN.clear()
        child = _CHILDREN[key] = metric.labels(*values)
    return child


def observe_attempts(outcomes: Iterable[Outcome]) -> None:
    for o in outcomes:
        labelled(DELIVERIES, o.partner_id, "retry" if o.state == "retry_wait" else o.state).inc()
        labelled(ATTEMPT_SECONDS, o.partner_id).observe(o.latency_ms / 1000)


def observe_event(event: Event) -> None:
    labelled(EVENTS, event.kind).inc()
    if event.kind == "violation":
        labelled(VIOLATIONS, event.partner or "", str(event.detail.get("rule", ""))).inc()
    elif event.kind == "partner_suspended":
        by = "automatic" if event.detail.get("actor") == "system" else "operator"
        SUSPENSIONS.labels(event.partner or "", by).inc()
    elif event.kind == "dead" and event.detail.get("cause") in ("expired", "refused"):
        DELIVERIES.labels(event.partner or "", str(event.detail["cause"])).inc()


async def exposition(db: Database, now: datetime) -> bytes:
    """The text format: this process's counters, then the shared state read now."""
    state = CollectorRegistry()
    families = await state_families(db, now)

    class _Snapshot:
        def collect(self) -> list[Metric]:
            return families

    state.register(_Snapshot())  # type: ignore[arg-type]
    return generate_latest(REGISTRY) + generate_latest(state)


async def state_families(db: Database, now: datetime) -> list[Metric]:
    async with db.transaction() as tx:
        return [
            *await _outbox(tx, now),
            *await _partners(tx, now),
            *await _audit(tx, now),
        ]


def _gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


async def _outbox(tx: Transaction, now: datetime) -> list[Metric]:
    counts = await tx.fetchall(
        "SELECT partner_id, state, COUNT(*) AS n FROM packages"
        " WHERE state IN ('queued', 'retry_wait', 'sending', 'dead') GROUP BY partner_id, state"
    )
    oldest = await tx.fetchall(
        "SELECT partner_id, state, MIN(next_attempt_at) AS due FROM packages"
        " WHERE state IN ('queued', 'retry_wait') AND next_attempt_at <= ? GROUP BY partner_id, state",
        (isotime(now),),
    )
    return [
        _gauge("gateway_outbox_packages", "Packages in the outbox by partner and state (from the database)",
               ["partner", "state"], (([r["partner_id"], r["state"]], r["n"]) for r in counts)),
        _gauge("gateway_outbox_oldest_due_age_seconds",
               "How long the oldest due package has been due, by partner and state (from the database)",
               ["partner", "state"],
               (([r["partner_id"], r["state"]], (now - parse(r["due"])).total_seconds()) for r in oldest)),
    ]  # fmt: skip


async def _partners(tx: Transaction, now: datetime) -> list[Metric]:
    partners = await tx.fetchall("SELECT id, status FROM partners")
    states = {r["partner_id"]: r for r in await tx.fetchall("SELECT * FROM partner_state")}
    overdue = await tx.fetchall(
        f"SELECT partner_id, COUNT(*) AS n FROM assignments WHERE {OVERDUE} GROUP BY partner_id",
        (isotime(now),),
    )
    breaker = [
        ([p["id"], s], 1.0 if states.get(p["id"], {}).get("breaker", "closed") == s else 0.0)
        for p in partners
        for s in ("closed", "half_open", "open")
    ]
    return [
        _gauge("gateway_partner_status", "1 for each partner's current status", ["partner", "status"],
               (([p["id"], p["status"]], 1.0) for p in partners)),
        _gauge("gateway_breaker_state", "1 for each partner's current circuit breaker state",
               ["partner", "state"], breaker),
        _gauge("gateway_attestations_overdue", "Recalled cases whose deletion attestation is overdue",
               ["partner"], (([r["partner_id"]], r["n"]) for r in overdue)),
    ]  # fmt: skip


async def _audit(tx: Transaction, now: datetime) -> list[Metric]:
    audit = await audit_state(tx)
    age = (now - parse(audit.checkpoint_at)).total_seconds() if audit.checkpoint_at else float("nan")
    return [
        _gauge("gateway_audit_log_entries", "Entries in the audit log", [], [([], audit.size)]),
        _gauge("gateway_audit_checkpoint_size", "Entries the latest signed checkpoint covers", [],
               [([], audit.checkpoint_size)]),
        _gauge("gateway_audit_checkpoint_age_seconds", "Age of the latest signed checkpoint", [],
               [([], age)]),
        _gauge("gateway_audit_checkpoint_lag_seconds",
               "How long the oldest entry no checkpoint covers has waited (0: all covered)", [],
               [([], audit.lag(now))]),
    ]  # fmt: skip


async def summary(db: Database, now: datetime) -> dict[str, Any]:
    """The shared-state gauges as one JSON object (``GET /v1/metrics/summary``)."""
    out: dict[str, Any] = {
        "outbox": {}, "oldest_due_seconds": {}, "breakers": {}, "partners": {},
        "attestations_overdue": {}, "audit": {},
    }  # fmt: skip
    for family in await state_families(db, now):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            partner = labels.get("partner", "")
            if family.name == "gateway_outbox_packages":
                out["outbox"].setdefault(partner, {})[labels["state"]] = int(value)
            elif family.name == "gateway_outbox_oldest_due_age_seconds":
                out["oldest_due_seconds"][partner] = max(value, out["oldest_due_seconds"].get(partner, 0.0))
            elif family.name == "gateway_breaker_state" and value:
                out["breakers"][partner] = labels["state"]
            elif family.name == "gateway_partner_status":
                out["partners"][partner] = labels["status"]
            elif family.name == "gateway_attestations_overdue":
                out["attestations_overdue"][partner] = int(value)
            elif family.name.startswith("gateway_audit_"):
                key = family.name.removeprefix("gateway_audit_")
                out["audit"][key] = None if math.isnan(value) else value
    return out
