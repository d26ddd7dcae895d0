"""Taking in a partner's status report: one pipeline for callbacks and polling.

validate -> the case was placed with this partner -> the report fits the case's state
-> store (idempotent by webhook id) -> compliance check -> violations -> automatic
suspension. The event, its violations, the state change and the audit entries are
committed together: a report is either fully taken in or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from gateway.clock import isotime
from gateway.config import first_error
from gateway.core import Gateway
from gateway.errors import Conflict, Forbidden, InvalidInput
from gateway.inbound import lifecycle
from gateway.onboarding import registry
from gateway.storage import Transaction
from gateway.supervision.history import HISTORY, as_contact, contact_history
from gateway.supervision.rules import Breach
from schemas.audit import CallbackReceived, DeletionAttested, PartnerChange, ViolationFound
from schemas.events import StatusEvent

EVENT = TypeAdapter(StatusEvent)
Channel = Literal["callback", "poll"]
#: How far ahead of the gateway's clock a reported time may be (clocks drift).
FUTURE_SKEW = timedelta(minutes=5)
#: Violations counted for automatic suspension.
SUSPENSION_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Ingested:
    event_id: int
    case_id: str
    state: str
    violations: list[Breach]
    suspended: bool


def parse_event(body: bytes) -> Any:
    try:
        return EVENT.validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(f"invalid status event: {first_error(exc)}", status=422) from None


def digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


async def ingest(
    gw: Gateway,
    partner_id: str,
    body: bytes,
    *,
    channel: Channel,
    webhook_id: str,
) -> Ingested:
    """Take in a report whose origin is already established (polling)."""
    event = parse_event(body)
    return await admit(gw, partner_id, body, channel=channel, check=lambda record: (webhook_id, event))


#: Given the partner, authenticate and parse a report: return its webhook id and event.
Check = Callable[[registry.PartnerRecord], tuple[str, Any]]


class _Impossible(Exception):
    """Raised inside the report's savepoint so that it rolls back; flagged after it."""

    def __init__(self, assignment: dict[str, Any], event_type: str) -> None:
        self.assignment = assignment
        self.event_type = event_type


async def admit(
    gw: Gateway,
    partner_id: str,
    body: bytes,
    *,
    channel: Channel,
    check: Check,
) -> Ingested:
    """The whole pipeline: the partner (404) -> ``check`` (signature, body: 4xx) ->
    dedupe by webhook id (409) -> the case was placed with this partner (403) -> the
    report fits the case's state (409, flagged) -> take it in.

    Reports that arrive together share one transaction (`gateway.storage.groups`), each in a
    savepoint of its own: a refusal undoes its own report and nothing else, so nothing
    of a refused report is stored (the impossible-transition flag is written on its
    own, after). The answer comes once the report's group committed."""

    async def job(tx: Transaction, entries: list[Any]) -> Ingested:
        return await _admit(gw, tx, entries, partner_id, body, channel, check)

    try:
        return await gw.writer.run(job)
    except _Impossible as exc:
        assignment, event_type = exc.assignment, exc.event_type

    async def flag(tx: Transaction, entries: list[Any]) -> None:
        entries.append(await _flag_transition(gw, tx, partner_id, assignment, event_type))

    await gw.writer.run(flag)
    raise Conflict(
        f"a {event_type!r} report is impossible for a case in state {assignment['state']!r}; "
        "it was refused and flagged for review"
    )


async def _admit(
    gw: Gateway,
    tx: Transaction,
    entries: list[Any],
    partner_id: str,
    body: bytes,
    channel: Channel,
    check: Check,
) -> Ingested:
    record = await registry.fetch(tx, partner_id)
    webhook_id, event = check(record)
    now = gw.now()
    if event.occurred_at > now + FUTURE_SKEW:
        raise InvalidInput(
            f"invalid status event: occurred_at {event.occurred_at.isoformat()} is in the future",
            status=422,
        )
    # The primary key dedupes: one statement instead of a look-up and an insert.
    if not await tx.execute(
        "INSERT INTO callbacks (partner_id, webhook_id, received_at) VALUES (?, ?, ?)"
        " ON CONFLICT (partner_id, webhook_id) DO NOTHING",
        (partner_id, webhook_id, isotime(now)),
    ):
        raise Conflict(f"webhook-id {webhook_id!r} was already received; it is not applied twice")
    # Locked: two reports on one case change its state one after the other.
    assignment = await tx.fetchone(
        f"SELECT * FROM assignments WHERE partner_id = ? AND case_ref = ?{tx.for_update}",
        (partner_id, event.case_ref),
    )
    if assignment is None:
        raise Forbidden(f"no case with case_ref {event.case_ref!r} was placed with {partner_id!r}")
    if channel == "poll":
        check_polled(record, assignment["state"])
    state = lifecycle.next_state(assignment["state"], event.type)
    if state is None:
        raise _Impossible(assignment, event.type)
    return await _take_in(gw, tx, entries, record, assignment, event, state, body, channel, webhook_id, now)


#: Partner statuses whose status feed the gateway reads (an offboarded partner's is not).
FEED_READ = frozenset({"active", "suspended"})


def check_polled(record: registry.PartnerRecord, case_state: str) -> None:
    """The gateway reads a partner's feed as it sends to it: everything of an active
    partner; of a suspended one, which is sent recall notices only, only reports on the
    cases recalled from it (what a recalled case accepts: deletion attested, returned,
    payment, complaint); of an offboarded one nothing. Checked here, in the report's
    transaction, so a change of status between two polls counts at once. A partner's
    own callbacks are always heard (supervision needs them)."""
    if record.status not in FEED_READ:
        raise Forbidden(f"partner {record.id!r} is {record.status}: its feed is not taken in")
    if record.status == "suspended" and case_state != "recalled":
        raise Forbidden(
            f"partner {record.id!r} is suspended: of its feed, only reports on cases recalled "
            f"from it are taken in (this case is {case_state!r} there)"
        )


async def _take_in(
    gw: Gateway,
    tx: Transaction,
    entries: list[Any],
    record: registry.PartnerRecord,
    assignment: dict[str, Any],
    event: Any,
    state: str,
    body: bytes,
    channel: Channel,
    webhook_id: str,
    now: datetime,
) -> Ingested:
    """Store the report, move the case, check it; its audit entries go to ``entries``."""
    partner_id = record.id
    event_id = await _store_event(tx, partner_id, assignment, event, body, channel, webhook_id, now)
    await _move(tx, assignment, event, state, now)
    actor = f"partner:{partner_id}"
    entries.append(
        CallbackReceived(
            at=isotime(now),
            actor=actor,
            partner=partner_id,
            case=assignment["case_token"],
            event_type=event.type,
            channel=channel,
            body_digest=digest(body),
        )
    )
    if event.type == "deletion_attested":
        entries.append(
            DeletionAttested(
                at=isotime(now),
                actor=actor,
                partner=partner_id,
                case=assignment["case_token"],
                body_digest=digest(body),
            )
        )
    breaches = await _check(gw, tx, partner_id, assignment, event, event_id)
    for breach in breaches:
        entries.append(await _store_violation(tx, partner_id, assignment, breach, event_id, now))
    suspended = bool(breaches) and await _maybe_suspend(tx, record, now, entries)
    return Ingested(event_id, assignment["case_id"], state, breaches, suspended)


async def _store_event(
    tx: Transaction,
    partner_id: str,
    assignment: dict[str, Any],
    event: Any,
    body: bytes,
    channel: Channel,
    webhook_id: str,
    now: datetime,
) -> int:
    event_id = await tx.fetchval(
        "INSERT INTO events (partner_id, case_ref, case_id, subject_token, type, occurred_at, received_at,"
        " source, webhook_id, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            partner_id,
            assignment["case_ref"],
            assignment["case_id"],
            assignment["subject_token"],
            event.type,
            isotime(event.occurred_at),
            isotime(now),
            channel,
            webhook_id,
            event.model_dump_json(),
        ),
    )
    return int(event_id)


async def _move(tx: Transaction, assignment: dict[str, Any], event: Any, state: str, now: datetime) -> None:
    extra = ""
    params: list[Any] = [state]
    if event.type == "accepted" and assignment["accepted_at"] is None:
        # Acknowledgement latency is measured on the gateway's clock, not the partner's.
        extra, params = ", accepted_at = ?", [state, isotime(now)]
    elif event.type == "deletion_attested":
        extra, params = ", attested_at = ?", [state, isotime(now)]
    if not extra and state == assignment["state"]:
        return  # work on an active case: nothing to write
    await tx.execute(
        f"UPDATE assignments SET state = ?{extra} WHERE partner_id = ? AND case_ref = ?",
        (*params, assignment["partner_id"], assignment["case_ref"]),
    )


async def _check(
    gw: Gateway,
    tx: Transaction,
    partner_id: str,
    assignment: dict[str, Any],
    event: Any,
    event_id: int,
) -> list[Breach]:
    """Compliance of a reported contact against the rule pack, with every partner's
    recent contacts with the same person as history."""
    if event.type != "contact_attempt":
        return []
    subject = assignment["subject_token"]
    history = await contact_history(tx, subject, event.occurred_at - HISTORY, event.occurred_at, event_id)
    current = as_contact(partner_id, assignment["case_id"], event.model_dump(mode="json"), subject)
    return gw.rules.check_contact(current, history, assignment["timezone"])


async def _store_violation(
    tx: Transaction,
    partner_id: str,
    assignment: dict[str, Any],
    breach: Breach,
    event_id: int | None,
    now: datetime,
) -> ViolationFound:
    """Store a violation; return its audit entry for the caller to append."""
    violation_id = await tx.fetchval(
        "INSERT INTO violations (partner_id, case_id, rule, source, message, evidence, event_id, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            partner_id,
            assignment["case_id"],
            breach.rule,
            breach.source,
            breach.message,
            json.dumps(breach.evidence, sort_keys=True, default=str),
            event_id,
            isotime(now),
        ),
    )
    return ViolationFound(
        at=isotime(now),
        actor="system",
        partner=partner_id,
        case=assignment["case_token"],
        rule=breach.rule,
        violation_id=int(violation_id),
    )


async def _maybe_suspend(
    tx: Transaction, record: registry.PartnerRecord, now: datetime, entries: list[Any]
) -> bool:
    """Suspend a partner whose recent violations reach its profile's threshold."""
    if record.status != "active":
        return False
    # Violations found at the same time by other transactions count once they commit:
    # taking the partner's row lock first makes them take turns here.
    await tx.execute(f"SELECT id FROM partners WHERE id = ?{tx.for_update}", (record.id,))
    count = await tx.fetchval(
        "SELECT COUNT(*) FROM violations WHERE partner_id = ? AND at >= ?",
        (record.id, isotime(now - SUSPENSION_WINDOW)),
    )
    threshold = record.profile.supervision.violation_threshold
    if count < threshold:
        return False
    reason = f"automatic: {count} violations in 30 days (threshold {threshold})"
    await tx.execute(
        "UPDATE partners SET status = 'suspended', status_reason = ?, updated_at = ? WHERE id = ?",
        (reason, isotime(now), record.id),
    )
    entries.append(
        PartnerChange(
            kind="partner_suspended",
            at=isotime(now),
            actor="system",
            partner=record.id,
            profile_digest=record.profile_digest,
            reason=reason,
        )
    )
    return True


async def _flag_transition(
    gw: Gateway, tx: Transaction, partner_id: str, assignment: dict[str, Any], event_type: str
) -> ViolationFound:
    breach = Breach(
        rule="protocol.impossible-transition",
        source="gateway case lifecycle (gateway/lifecycle.py)",
        message=f"partner reported {event_type!r} on a case in state {assignment['state']!r}",
        evidence={"state": assignment["state"], "event_type": event_type},
    )
    return await _store_violation(tx, partner_id, assignment, breach, None, gw.now())
