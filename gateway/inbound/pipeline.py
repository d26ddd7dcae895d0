"""Taking in a partner's status report: one pipeline for callbacks and polling.

validate -> the case was placed with this partner -> the report fits the case's state
-> store (idempotent by webhook id) -> compliance check -> violations -> automatic
suspension. The event, its violations, the state change and the audit entries are
committed together: a report is either fully taken in or not at all. A report the
case's state does not allow is refused, and its flag (a violation) is committed with
its webhook id, so that it is flagged once however often it is sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter, ValidationError

from gateway.clock import isotime
from gateway.config import first_error
from gateway.core import Gateway
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from gateway.inbound import lifecycle, violations, webhooks
from gateway.lifecycle.screen import stored_event
from gateway.onboarding import golive, registry
from gateway.storage import Transaction
from gateway.supervision.history import HISTORY, as_contact, as_request, contact_history, time_barred
from gateway.supervision.rules import Breach
from schemas.audit import CallbackReceived, DeletionAttested
from schemas.events import StatusEvent

EVENT = TypeAdapter(StatusEvent)
Channel = Literal["callback", "poll"]
#: How far ahead of the gateway's clock a reported time may be (clocks drift).
FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Ingested:
    event_id: int
    case_id: str
    state: str
    violations: list[Breach]
    suspended: bool
    partner_status: str = "active"
    """The partner's status once the report is taken in (suspended if it suspended it)."""


def parse_event(body: bytes, now: datetime) -> Any:
    """The report in ``body``; 422 if it is no valid event or happened after ``now``
    (give or take `FUTURE_SKEW`)."""
    try:
        event = EVENT.validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(f"invalid status event: {first_error(exc)}", status=422) from None
    if event.occurred_at > now + FUTURE_SKEW:
        raise InvalidInput(
            f"invalid status event: occurred_at {event.occurred_at.isoformat()} is in the future",
            status=422,
        )
    return event


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
    """Take in a report whose origin is established (a callback whose signature was
    verified, an event of the partner's feed): the body (422) -> the partner (404) ->
    dedupe by webhook id (409) -> the case was placed with this partner (403) -> an
    amount in the case's currency (422) -> the report fits the case's state (409,
    flagged) -> take it in.

    The body is parsed before the report joins the writers. Reports that arrive
    together share one transaction (`gateway.storage.groups`), each in a savepoint of
    its own: a refusal undoes its own report and nothing else, so nothing of a refused
    report is stored. Except the flag of an impossible report, stored with the
    report's webhook id in the report's own savepoint: a replay of it is a replay
    (409, nothing stored), not a new flag. The answer comes once the report's group
    committed."""
    event = parse_event(body, gw.now())

    async def job(tx: Transaction, entries: list[Any]) -> Ingested | violations.Flagged:
        return await _admit(gw, tx, entries, partner_id, webhook_id, event, body, channel)

    outcome = await gw.writer.run(job)
    if isinstance(outcome, violations.Flagged):
        raise Conflict(outcome.refusal)
    return outcome


async def _admit(
    gw: Gateway,
    tx: Transaction,
    entries: list[Any],
    partner_id: str,
    webhook_id: str,
    event: Any,
    body: bytes,
    channel: Channel,
) -> Ingested | violations.Flagged:
    try:
        record = await registry.fetch(tx, partner_id)
    except NotFound:
        # A report verified for an id that is no partner's (a secret file left after a
        # partner's row went): answered as any unknown partner id is.
        raise Unauthorized(webhooks.REFUSED) from None
    now = gw.now()
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
        if await golive.take_report(gw, tx, entries, partner_id, event):
            return Ingested(event_id=0, case_id="", state="test", violations=[], suspended=False)
        raise Forbidden(f"no case with case_ref {event.case_ref!r} was placed with {partner_id!r}")
    _same_currency(event, assignment)
    if channel == "poll":
        check_polled(record, assignment["state"])
    state = lifecycle.next_state(assignment["state"], event.type)
    if state is None:
        return await violations.flag_transition(tx, entries, record, assignment, event.type, now)
    return await _take_in(gw, tx, entries, record, assignment, event, state, body, channel, webhook_id, now)


def _same_currency(event: Any, assignment: dict[str, Any]) -> None:
    """An amount is in the case's currency: 422 for a report that names another."""
    # Read from the fields: the types without an amount have no such field, and
    # pydantic's getattr of a missing name raises and catches an error (~2 µs).
    currency = event.__dict__.get("currency")
    if currency is not None and currency != assignment["currency"]:
        raise InvalidInput(
            f"invalid status event: {event.type}.currency: the case's amounts are in"
            f" {assignment['currency']}, not {currency}",
            status=422,
        )


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
    raw = event.model_dump_json()
    parsed = orjson.loads(raw)  # the event as JSON values, as stored events are read back
    event_id = await _store_event(
        gw, tx, partner_id, assignment, event, raw, parsed, channel, webhook_id, now
    )
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
    breaches = await _check(gw, tx, partner_id, assignment, event, parsed, event_id, now)
    # A violation is charged to the partner of the contact that broke the rule, which a
    # late report may reveal for another partner: each charged partner may be suspended.
    charged: dict[str, registry.PartnerRecord] = {}
    for breach in breaches:
        entry = await violations.store_violation(tx, partner_id, assignment, breach, event_id, now)
        entries.append(entry)
        if entry.partner not in charged:
            own = entry.partner == partner_id
            charged[entry.partner] = record if own else await registry.fetch(tx, entry.partner)
    suspended = False
    for charged_id, charged_record in sorted(charged.items()):
        if await violations.maybe_suspend(tx, charged_record, now, entries) and charged_id == partner_id:
            suspended = True
    status = "suspended" if suspended else record.status
    return Ingested(event_id, assignment["case_id"], state, breaches, suspended, status)


async def _store_event(
    gw: Gateway,
    tx: Transaction,
    partner_id: str,
    assignment: dict[str, Any],
    event: Any,
    raw: str,
    parsed: dict[str, Any],
    channel: Channel,
    webhook_id: str,
    now: datetime,
) -> int:
    """Store the report (``raw``: its JSON, ``parsed``: the same as JSON values): its
    free text screened, the original encrypted (`gateway.lifecycle.screen`)."""
    body, original = await stored_event(gw.keyring, tx, partner_id, webhook_id, assignment, raw, parsed)
    return await tx.insert_id(
        "INSERT INTO events (partner_id, case_ref, case_id, subject_token, type, occurred_at, received_at,"
        " source, webhook_id, body, original) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            body,
            original,
        ),
    )


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
    body: dict[str, Any],
    event_id: int,
    now: datetime,
) -> list[Breach]:
    """Compliance of a reported contact or request against the rule pack, with every
    partner's contacts with the same person around it (before and after it: a late
    report may complete a breach) and the requests the person made."""
    if event.type not in ("contact_attempt", "contact_request"):
        return []
    subject = assignment["subject_token"]
    at = event.occurred_at
    record = await contact_history(tx, subject, at - HISTORY, at + HISTORY, event_id)
    row = {"id": event_id, "partner_id": partner_id, "case_id": assignment["case_id"]}
    row["received_at"] = isotime(now)
    tz = assignment["timezone"]
    if event.type == "contact_request":
        request = as_request(row, body, record.numbers)
        return gw.rules.check_request(request, record.contacts, tz, record.requests)
    barred = time_barred(gw.rules, assignment, at)
    current = as_contact(row, body, subject, record.numbers, time_barred=barred)
    return gw.rules.check_contact(current, record.contacts, tz, record.requests)
