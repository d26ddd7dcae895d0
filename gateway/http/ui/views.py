"""What each dashboard page shows, assembled from the services the API calls (one
source for every figure: `gateway.ops.metrics.summary` for the gauges, the
supervision and delivery services for the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gateway.audit import query
from gateway.core import Gateway
from gateway.delivery import control
from gateway.http.ui import charts
from gateway.http.ui.format import moment
from gateway.onboarding import registry
from gateway.ops import activity, metrics
from gateway.placement.service import case_token
from gateway.supervision import scorecards
from gateway.supervision.timeline import case_timeline

#: Outbox states that make a partner's queue (waiting or being sent).
QUEUE_STATES = ("queued", "retry_wait", "sending")
#: Keys of an event's body the timeline shows in columns of their own.
SHOWN_APART = ("type", "case_ref", "occurred_at")
#: Scorecard figures charted over time: (field, title, unit).
TRENDS = [
    ("ack_latency_hours", "Acknowledgement latency (median, hours)", "h"),
    ("right_party_contact_rate", "Right-party contact rate", "%"),
    ("promise_kept_rate", "Promises kept", "%"),
    ("recovery_rate", "Recovery rate", "%"),
    ("complaint_rate", "Complaints per case", "%"),
]


def rule_names(gw: Gateway) -> dict[str, dict[str, str]]:
    """Rule id -> its English and Chinese titles (where the pack gives them) and source."""
    return {
        r.id: {"title": r.title or r.id, "title_zh": r.title_zh, "source": r.source, "note": r.note}
        for r in gw.rules.rules()
    }


async def overview(gw: Gateway) -> dict[str, Any]:
    now = gw.now()
    summary = await metrics.summary(gw.db, now)
    recent = await activity.activity(gw.db, now)
    rows = []
    for record in await registry.list_all(gw):
        pid = record.id
        outbox = summary["outbox"].get(pid, {})
        rows.append({
            "id": pid, "name": record.profile.name, "kind": record.profile.kind,
            "status": summary["partners"].get(pid, record.status), "status_reason": record.status_reason,
            "queue": sum(outbox.get(s, 0) for s in QUEUE_STATES), "dead": outbox.get("dead", 0),
            "oldest_due_seconds": summary["oldest_due_seconds"].get(pid),
            "breaker": summary["breakers"].get(pid, "closed"),
            "attestations_overdue": summary["attestations_overdue"].get(pid, 0),
            **recent.get(pid, activity.empty()),
        })  # fmt: skip
    return {"partners": rows, "audit": summary["audit"], "now": now}


def contract_state(valid_from: date, valid_to: date, today: date) -> str:
    if today < valid_from:
        return f"not yet in force (from {valid_from})"
    if today > valid_to:
        return f"expired on {valid_to}"
    return f"in force, {(valid_to - today).days} days left"


def policy(record: registry.PartnerRecord) -> list[dict[str, Any]]:
    """Each purpose's legal basis and the fields it receives, in words."""
    out = []
    for purpose, rules in record.profile.policy.items():
        fields = []
        for path, rule in rules.fields.items():
            how = {"keep": "as is", "token": "as a token", "year": "year only", "drop": "never sent"}
            text = how.get(rule.transform, rule.transform)
            if rule.transform == "mask":
                text = f"masked, first {rule.first} and last {rule.last} characters shown"
            elif rule.transform == "bucket":
                text = "as a range, bounds " + ", ".join(str(e) for e in rule.edges)
            fields.append({"path": path, "how": text})
        out.append({"purpose": purpose, "legal_basis": rules.legal_basis, "fields": fields})
    return out


async def partner(gw: Gateway, partner_id: str) -> dict[str, Any]:
    record = await registry.get(gw, partner_id)
    card = await scorecards.scorecard(gw, partner_id)
    history = await scorecards.history(gw, partner_id)
    weeks = [start for start, _ in history]
    trends = [charts.line(name, title, weeks, [getattr(c, name) for _, c in history], unit)
              for name, title, unit in TRENDS]  # fmt: skip
    by_rule = await scorecards.violations_by_week(gw, partner_id)
    trends.append(charts.stacked("violations_by_rule", "Violations by rule per week", weeks, by_rule))
    contract = record.profile.contract
    return {
        "record": record, "card": card.model_dump(), "charts": trends,
        "contract": contract.model_dump(mode="json"),
        "contract_state": contract_state(contract.valid_from, contract.valid_to, gw.now().date()),
        "policy": policy(record),
        "breaker": (await control.breakers(gw, partner_id))[0],
        "deliveries": await control.deliveries(gw, partner_id, None, 20),
        "dead": await control.deliveries(gw, partner_id, "dead", 100),
    }  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One line of a case's timeline."""

    at: datetime
    kind: str
    partner: str
    text: str
    zone: str | None


async def case(gw: Gateway, case_id: str) -> dict[str, Any]:
    data = await case_timeline(gw, case_id)
    zones = {a["partner_id"]: a["timezone"] for a in data["assignments"]}
    zone = next(iter(zones.values()), None)
    items = [Item(moment(e["at"]) or gw.now(), "disclosure", e["partner"], _disclosed(e), zone)
             for e in await disclosures(gw, case_id)]  # fmt: skip
    for a in data["assignments"]:
        items += _assignment_items(a)
    for e in data["timeline"]:
        detail = ", ".join(f"{k}={v}" for k, v in e["body"].items() if k not in SHOWN_APART)
        items.append(Item(moment(e["occurred_at"]) or gw.now(), e["type"], e["partner_id"], detail, zone))
    for v in data["violations"]:
        text = f"{v['rule']}: {v['message']}"
        items.append(Item(moment(v["at"]) or gw.now(), "violation", v["partner_id"], text, zone))
    items.sort(key=lambda i: i.at)
    return {"case_id": case_id, "zone": zone, "items": items, "assignments": data["assignments"],
            "violations": data["violations"]}  # fmt: skip


async def disclosures(gw: Gateway, case_id: str) -> list[dict[str, Any]]:
    where = query.EntryFilter(case_token=case_token(gw, case_id), kind="disclosure")
    return [row["entry"] for row in await query.entries(gw.db, where)]


def _disclosed(entry: dict[str, Any]) -> str:
    fields = ", ".join(f"{f['path']} ({f['transform']})" for f in entry.get("fields", []))
    return f"package {entry.get('package_id')} for {entry.get('purpose', '')}: {fields}"


def _assignment_items(a: dict[str, Any]) -> list[Item]:
    zone, partner = a["timezone"], a["partner_id"]
    steps = [
        (a["placed_at"], "placed", f"for {a['purpose']}"),
        (a["recalled_at"], "recall", f"{a.get('recall_reason') or ''}; deletion due {a['deletion_due']}"),
        (a["attested_at"], "attestation", "deletion attested"),
    ]
    return [Item(when, kind, partner, text, zone) for at, kind, text in steps if (when := moment(at))]
