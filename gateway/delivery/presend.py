"""The rule pack before the gateway itself contacts a debtor (``sms`` and ``email`` partners).

Supervision (:mod:`gateway.inbound.pipeline`) judges the contacts partners *report*; this module
judges the messages the gateway *sends*, with the same :meth:`RulePack.check_contact`
and the same history, so each rule is written once.

**When.** Each time the outbox claims a package of an sms or email partner (first try,
retry after backoff, a lease taken over from a dead worker, a backlog drained late),
inside the claim transaction: the moment judged is the moment of sending, not the
placement's. Recall notices are not contacts with the debtor and are not judged.

**The contact.** Channel = the partner's kind; target the debtor; outcome
``left_message`` (a message is never a conversation, so rules on connected calls never
count it); text = the approved template (subject and body for email; a profile without
templates has no text, which a pack demanding an opt-out notice refuses); no number (the
provider picks it), so it must be inside the hours in every zone on file for the debtor,
and a request closing a medium for one number closes it for the message too. The debt's
limitation period is read from the assignment, for the rules on time-barred debts.
Which rules bite is the pack's business: in the shipped packs the contact hours and the
wording rules (banned phrases, us-reg-f's opt-out notice) name sms/email; a pack that
lists sms or email under a cap (``calls_in_days``, ``attempts_per_number_daily``...)
gets that cap applied here too, across partners.

**History.** The debtor's ``contact_attempt`` events within :data:`HISTORY` by every
partner (the gateway's own delivered messages among them, see below), the gateway's
messages to the same debtor in flight (claimed, not finished), and those let through
earlier in the same claim; and every request the debtor made (a closed medium, cease,
attorney), which no waiting cures: such a message is refused.

**Decision** (:func:`judge`):

- nothing breached: sent;
- breached now but not at a later opening of the contact window (within ``HISTORY``;
  outside hours, a daily or n-day cap full): *held*. The package keeps its state
  (queued, or retry_wait after a failure), ``next_attempt_at`` moves to that opening,
  no attempt is counted, and ``last_error`` names the rules and the time
  (``gateway deliveries``). Every rule counts the debtor's local days, so a breach that
  waiting cures is cured by the window opening of some later day: only those are tried;
- breached at every moment tried (the wording: time does not change the text):
  *refused*, dead, ``last_error`` naming the rules. Such a template passed onboarding,
  so the pack changed since; fix the template (``partners add --update``), place again.

**Recorded.** A delivered message becomes a ``contact_attempt`` event with source
``gateway`` and webhook_id = package id (stored once), in the transaction that stores
the attempt; its time is the attempt's start. Later partner reports and later messages
are judged with it. A message the provider did not take is not a contact.

**Concurrency.** SQLite runs one claim at a time. On PostgreSQL two dispatchers may
claim for two partners (SMS and email) at the same instant; each claim takes a
transaction-scoped advisory lock per debtor (in sorted order, so never a deadlock)
before reading the history, so the second waits and then sees the first's claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.delivery.outcome import Outcome
from gateway.onboarding import registry
from gateway.plugin.adapter import Adapter
from gateway.storage import Lock, Row, Transaction
from gateway.supervision.base import local_time
from gateway.supervision.history import HISTORY, Record, contact_histories, time_barred
from gateway.supervision.rules import Breach, Contact, Request, RulePack
from schemas.events import ContactAttempt
from schemas.package import RECALL_PURPOSE

MESSAGING = frozenset({"sms", "email"})
Adapters = Mapping[str, type[Adapter]]


@dataclass(frozen=True)
class Verdict:
    breaches: list[Breach]
    """Empty: send now."""
    until: datetime | None = None
    """With breaches: when the message may go (held), or None (refused)."""


@dataclass(frozen=True)
class Stopped:
    """A claimed package the rule pack keeps from going now."""

    package_id: str
    until: datetime | None
    reason: str


def judge(
    pack: RulePack,
    contact: Contact,
    history: Sequence[Contact],
    debtor_tz: str,
    requests: Sequence[Request] = (),
) -> Verdict:
    """Send, hold until the first window opening that breaches nothing, or refuse."""
    breaches = pack.check_contact(contact, history, debtor_tz, requests)
    if not breaches:
        return Verdict([])
    later = breaches
    for at in _openings(pack, contact.at, debtor_tz, contact.zones):
        later = pack.check_contact(replace(contact, at=at), history, debtor_tz, requests)
        if not later:
            return Verdict(breaches, at)
    return Verdict(later)  # what waiting does not cure


def _openings(pack: RulePack, after: datetime, debtor_tz: str, zones: Sequence[str]) -> list[datetime]:
    """The contact window's opening (in every zone) on each local day from today to
    ``HISTORY`` ahead."""
    zone = ZoneInfo(debtor_tz)
    today = after.astimezone(zone).date()
    days = (
        datetime.combine(today + timedelta(days=n), time(0), tzinfo=zone) for n in range(HISTORY.days + 1)
    )
    openings = (pack.next_allowed(day, debtor_tz, zones) for day in days)
    return sorted({opening for opening in openings if opening is not None and opening > after})


def message(
    adapters: Adapters,
    record: registry.PartnerRecord,
    purpose: str,
    case_id: str,
    subject: str,
    at: datetime,
    zones: tuple[str, ...] = (),
) -> Contact:
    """The gateway's message as the rule pack sees a contact: its texts are what the
    partner's adapter says it sends (`Adapter.message_texts`)."""
    return Contact(
        at=at,
        channel=record.profile.kind,
        target="debtor",
        outcome="left_message",
        partner=record.id,
        debt=case_id,
        debtor=subject,
        text=_text(adapters, record, purpose),
        zones=zones,
    )


#: The texts of each partner's messages, by adapter, profile digest and purpose: making
#: the adapter checks its whole profile (TLS files read), which is not a per-message cost.
_TEXTS: dict[tuple[type[Adapter], str, str], str | None] = {}


def _text(adapters: Adapters, record: registry.PartnerRecord, purpose: str) -> str | None:
    cls = adapters.get(record.profile.adapter)
    if cls is None:
        return None
    key = (cls, record.profile_digest, purpose)
    if key not in _TEXTS:
        if len(_TEXTS) >= 256:
            _TEXTS.clear()
        _TEXTS[key] = "\n".join(cls.for_profile(record.profile).message_texts(purpose)) or None
    return _TEXTS[key]


async def screen(
    gw: Gateway, tx: Transaction, partner_id: str, rows: list[Row], now: datetime
) -> list[Stopped]:
    """Judge the packages just claimed for ``partner_id``; return those that must not go
    now. The debtors' histories and the assignments are read for all of them at once."""
    record = await registry.fetch(tx, partner_id)
    if record.profile.kind not in MESSAGING:
        return []
    subjects = sorted({row["subject_token"] for row in rows})  # sorted: never a deadlock
    await tx.take_turns_all(Lock.DEBTOR_CONTACTS, subjects)
    messages = [row for row in rows if row["purpose"] != RECALL_PURPOSE]
    if not messages:
        return []
    claimed = {row["id"] for row in rows}
    histories = await _histories(
        gw.adapters, tx, sorted({row["subject_token"] for row in messages}), now, claimed
    )
    assignments = await _assignments(tx, partner_id, [row["case_ref"] for row in messages])
    stopped = []
    for row in messages:
        subject = row["subject_token"]
        known = histories[subject]
        assignment = assignments[row["case_ref"]]  # written with the package
        tz = assignment["timezone"]
        zones = known.numbers.zones(None)
        contact = replace(
            message(gw.adapters, record, row["purpose"], row["case_id"], subject, now, zones),
            time_barred=time_barred(gw.rules, assignment, now),
        )
        verdict = judge(gw.rules, contact, known.contacts, tz, known.requests)
        if not verdict.breaches:
            known.contacts.append(contact)
            continue
        stopped.append(_stopped(row["id"], verdict, tz))
    return stopped


async def _assignments(tx: Transaction, partner_id: str, case_refs: list[str]) -> dict[str, Row]:
    found = await tx.fetchall(
        "SELECT case_ref, timezone, last_due_date, last_reset, limitation_events FROM assignments"
        f" WHERE partner_id = ? AND case_ref IN ({_marks(case_refs)})",
        (partner_id, *case_refs),
    )
    return {row["case_ref"]: row for row in found}


def _stopped(package_id: str, verdict: Verdict, tz: str) -> Stopped:
    rules = "; ".join(f"{b.rule}: {b.message}" for b in verdict.breaches)
    if verdict.until:
        when = f"{isotime(verdict.until)} = {local_time(verdict.until, ZoneInfo(tz))}"
        return Stopped(package_id, verdict.until, f"held by the rule pack until {when}: {rules}")
    return Stopped(package_id, None, f"refused by the rule pack: {rules}")


async def _histories(
    adapters: Adapters, tx: Transaction, subjects: list[str], now: datetime, claimed: set[str]
) -> dict[str, Record]:
    """Reported and recorded contacts and requests of each debtor, and the gateway's
    messages to them in flight."""
    known = await contact_histories(tx, subjects, now - HISTORY, now + HISTORY)
    rows = await tx.fetchall(
        "SELECT id, partner_id, case_id, purpose, subject_token FROM packages"
        f" WHERE subject_token IN ({_marks(subjects)}) AND state = 'sending' AND purpose != ?",
        (*subjects, RECALL_PURPOSE),
    )
    records: dict[str, registry.PartnerRecord] = {}
    for row in rows:
        if row["id"] in claimed:
            continue
        if row["partner_id"] not in records:
            records[row["partner_id"]] = await registry.fetch(tx, row["partner_id"])
        record = records[row["partner_id"]]
        if record.profile.kind in MESSAGING:
            subject = row["subject_token"]
            known[subject].contacts.append(
                message(adapters, record, row["purpose"], row["case_id"], subject, now)
            )
    return known


async def record_sent(
    adapters: Adapters, tx: Transaction, outcomes: Sequence[Outcome], now: datetime
) -> None:
    """Store each delivered message of an sms or email partner as the debtor's contact;
    the packages and the contacts already stored are read for all of them at once."""
    delivered = [o for o in outcomes if o.state == "delivered"]
    records = {p: await registry.fetch(tx, p) for p in {o.partner_id for o in delivered}}
    sent = [o for o in delivered if records[o.partner_id].profile.kind in MESSAGING]
    if not sent:
        return
    ids = [o.package_id for o in sent]
    found = await tx.fetchall(
        "SELECT id, case_ref, case_id, subject_token, purpose FROM packages"
        f" WHERE id IN ({_marks(ids)}) AND purpose != ?", (*ids, RECALL_PURPOSE),
    )  # fmt: skip
    packages = {row["id"]: row for row in found}
    seen = await _recorded(tx, list(packages.values()))
    events = []
    for outcome in sent:
        row = packages.get(outcome.package_id)
        if row is None or outcome.package_id in seen:
            continue
        seen.add(outcome.package_id)
        record = records[outcome.partner_id]
        contact = message(adapters, record, row["purpose"], row["case_id"], row["subject_token"], now)
        body = ContactAttempt(
            type="contact_attempt",
            case_ref=row["case_ref"],
            occurred_at=datetime.fromisoformat(outcome.started_at),
            package_id=outcome.package_id,
            channel=contact.channel,  # type: ignore[arg-type]  # a messaging kind
            target="debtor",
            outcome="left_message",
            text=contact.text[:4000] if contact.text else None,
        )
        events.append((record.id, row["case_ref"], row["case_id"], row["subject_token"], outcome.started_at,
                       isotime(now), outcome.package_id, body.model_dump_json()))  # fmt: skip
    await tx.executemany(
        "INSERT INTO events (partner_id, case_ref, case_id, subject_token, type, occurred_at,"
        " received_at, source, webhook_id, body)"
        " VALUES (?, ?, ?, ?, 'contact_attempt', ?, ?, 'gateway', ?, ?)",
        events,
    )


async def _recorded(tx: Transaction, packages: list[Row]) -> set[str]:
    """Those of ``packages`` whose delivery is stored already: a second worker that took
    over an expired lease may report the same delivery."""
    if not packages:
        return set()
    subjects = sorted({row["subject_token"] for row in packages})
    ids = [row["id"] for row in packages]
    found = await tx.fetchall(recorded_statement(len(subjects), len(ids)), (*subjects, *ids))
    return {row["webhook_id"] for row in found}


def recorded_statement(subjects: int, packages: int) -> str:
    """`_recorded`'s look-up of the stored deliveries of ``packages`` packages of
    ``subjects`` people; its parameters: the subjects, then the package ids."""
    return (
        f"SELECT webhook_id FROM events WHERE subject_token IN ({_holes(subjects)})"
        f" AND source = 'gateway' AND webhook_id IN ({_holes(packages)})"
    )


def _marks(items: Sequence[object]) -> str:
    return _holes(len(items))


def _holes(count: int) -> str:
    return ", ".join("?" * count)
