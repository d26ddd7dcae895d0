"""Placement: policy check, minimize, seal, and write to the outbox with its audit entry.

The package row and its disclosure entry are written in one transaction before anything
is sent, so a crash loses nothing and the log never misses a disclosure.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import NotFound, PolicyViolation
from gateway.lifecycle.columns import open_package
from gateway.lifecycle.columns import seal_package as seal_columns
from gateway.onboarding import registry
from gateway.onboarding.keys import Pseudonymizer
from gateway.placement.minimize import contact_points, disclosed_fields, minimize, tokenised_points
from gateway.placement.package import Sealed, SealingKeys, seal_package, sealing_keys
from gateway.placement.seal import verify_signed
from gateway.storage import Transaction
from gateway.storage.atrest import KeyRing
from schemas.audit import DisclosedField, Disclosure
from schemas.case import Case
from schemas.partner import LEGAL_PURPOSES, PartnerProfile, PurposePolicy


@dataclass(frozen=True)
class Placement:
    package_id: str
    partner_id: str
    purpose: str
    case_ref: str
    claims: dict[str, Any]


def subject_token(gw: Gateway, case: Case, audit: Pseudonymizer | None = None) -> str:
    """The audit-scope pseudonym of the debtor, the key of a PIPL access report.
    (``audit``: the audit scope's pseudonymizer, when the caller holds it already.)"""
    return person_token(gw, case.debtor.id_type, case.debtor.id_number, audit)


def person_token(gw: Gateway, id_type: str, id_number: str, audit: Pseudonymizer | None = None) -> str:
    """The audit-scope pseudonym of a person by identity document, as written in cases."""
    return (audit or gw.keys.pseudonymizer("audit")).token(f"{id_type}:{id_number}", prefix="subj_")


def case_token(gw: Gateway, case_id: str, audit: Pseudonymizer | None = None) -> str:
    return (audit or gw.keys.pseudonymizer("audit")).token(f"case:{case_id}", prefix="case_")


def check_policy(record: registry.PartnerRecord, purpose: str, gw: Gateway) -> None:
    profile = record.profile
    if record.status != "active":
        remedy = (
            registry.ONBOARD_AGAIN
            if record.status == "offboarded"
            else f"`gateway partners reinstate {profile.id}` first"
        )
        raise PolicyViolation(
            "partner-active",
            f"partner {profile.id!r} is {record.status} ({record.status_reason or 'no reason given'}); "
            + remedy,
        )
    today = gw.now().date()
    if not profile.contract.covers(purpose, today):
        contract = profile.contract
        raise PolicyViolation(
            "contract",
            f"contract {contract.number} ({contract.valid_from} to {contract.valid_to}, "
            f"purposes {', '.join(contract.purposes)}) does not cover {purpose!r} on {today}",
        )
    if purpose not in profile.policy:
        raise PolicyViolation(
            "field-policy",
            f"profile {profile.id!r} has no [policy.{purpose}] field list; nothing may be sent",
        )


async def enqueue(
    tx: Transaction,
    package: Sealed,
    profile: PartnerProfile,
    *,
    case_id: str,
    subject: str,
    fields: list[dict[str, str]],
    at: str,
    due: str | None = None,
    keyring: KeyRing,
) -> None:
    """Put a sealed package in the outbox, due at ``due`` (default now); its signed and
    sealed forms are stored encrypted under the subject's data key."""
    signed, sealed = await seal_columns(
        keyring, tx, subject, package.package_id, package.signed, package.sealed
    )
    await tx.execute(
        "INSERT INTO packages (id, partner_id, case_id, case_ref, subject_token, purpose, sealing,"
        " sealed, signed, payload_digest, fields, created_at, expires_at, state, next_attempt_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
        (
            package.package_id,
            profile.id,
            case_id,
            package.claims["case_ref"],
            subject,
            package.claims["purpose"],
            profile.sealing,
            sealed,
            signed,
            package.package_digest,  # the column kept its name
            json.dumps(fields),
            at,
            isotime(datetime.fromtimestamp(package.claims["exp"], UTC)),
            due or at,
        ),
    )


def check_limitation(gw: Gateway, case: Case, purpose: str) -> None:
    """A time-barred claim is not taken to arbitration or court (Civil Code art. 188;
    12 CFR 1006.26(b)). The period counts the case's events the rule pack says restart
    it, and "today" is the date on the debtor's clock."""
    if purpose not in LEGAL_PURPOSES:
        return
    events = case.loan.limitation_events()
    expires = gw.rules.limitation_expires(case.loan.last_due_date, events)
    today = gw.now().astimezone(ZoneInfo(case.debtor.timezone)).date()
    if expires is not None and expires < today:
        counted = [f"{kind} {day}" for kind, day in events if kind in gw.rules.limitation.resets]
        raise PolicyViolation(
            "limitation-period",
            f"the limitation period of case {case.case_id} ended on {expires} (last due "
            f"{case.loan.last_due_date}; events that restart it: {', '.join(counted) or 'none'}); "
            f"it cannot be placed for {purpose}",
        )


def number_id(gw: Gateway, value: str, audit: Pseudonymizer | None = None) -> str:
    """The bank-side identity of a number or address: the same for every partner, a
    keyed pseudonym (never the number itself)."""
    normal = "".join(value.split()).casefold()
    return (audit or gw.keys.pseudonymizer("audit")).token(f"contact:{normal}", prefix="num_")


async def record_contact_points(
    gw: Gateway, tx: Transaction, case: Case, subject: str, partner_id: str, policy: PurposePolicy
) -> None:
    """Record the debtor's numbers and addresses under their bank-side identities (with
    their labels and zones), and which token this partner received for each, so that
    reports naming a partner's token count against the same number for every partner."""
    audit = gw.keys.pseudonymizer("audit")
    points = contact_points(case)
    ids = {point.value: number_id(gw, point.value, audit) for point in points}
    if points:
        await tx.executemany(
            "INSERT INTO contact_points (subject_token, number_id, kind, label, timezone)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (subject_token, number_id) DO UPDATE SET kind = excluded.kind,"
            " label = excluded.label, timezone = excluded.timezone",
            [(subject, ids[p.value], p.kind, p.label, p.timezone) for p in points],
        )
    tokens = gw.keys.pseudonymizer(f"partner:{partner_id}")
    sent = tokenised_points(case, policy, tokens)
    if sent:
        await tx.executemany(
            "INSERT INTO number_tokens (partner_id, token, number_id, subject_token) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (partner_id, token) DO UPDATE SET number_id = excluded.number_id,"
            " subject_token = excluded.subject_token",
            [(partner_id, token, ids[point.value], subject) for token, point in sent],
        )


def debtor_zones(case: Case) -> list[str]:
    """Every time zone on file for the debtor besides the main one."""
    zones = {point.timezone for point in contact_points(case)}
    return sorted(z for z in zones if z and z != case.debtor.timezone)


async def place(gw: Gateway, case: Case, partner_id: str, purpose: str, *, actor: str) -> Placement:
    """Check, minimize, seal and queue a package for the partner, and record the
    disclosure: one transaction (shared with concurrent placements and reports on
    SQLite, see `place_batch`), with the partner's row held (shared) until it commits,
    so a suspension or a profile change is either seen here or waits for this package.
    Sealing is CPU work that holds the event loop anyway, so doing it inside costs
    the other tasks of this process nothing."""
    (outcome,) = await place_batch(gw, [case], partner_id, purpose, actor=actor)
    if isinstance(outcome, PolicyViolation):
        raise outcome
    return outcome


#: Cases per transaction in `place_many`: the per-transaction costs (BEGIN, the
#: partner row, the audit tree state, COMMIT) are paid once per batch. A batch holds
#: the database's write lock while its cases are sealed (about 1.5 ms each): 500 at
#: most keeps other writers (callbacks, the dispatcher) waiting under a second.
BATCH = 100
MAX_BATCH = 500


async def place_many(
    gw: Gateway,
    cases: Iterable[Case],
    partner_id: str,
    purpose: str,
    *,
    actor: str,
    batch: int = BATCH,
) -> AsyncIterator[tuple[Case, Placement | PolicyViolation]]:
    """Place many cases with one partner, `batch` per transaction; yield each case
    with its placement or the rule that refused it, in order, as its batch commits.

    A case a rule refuses (limitation, an open recall) is skipped and the others go
    on. What stops the whole run is raised instead: the partner not active or its
    contract not covering the purpose (checked again for each batch, so a partner
    suspended meanwhile receives nothing more), a key that cannot seal, a storage
    error. Every batch committed before it stays placed; the failing one leaves
    nothing behind. Cancelled (Ctrl-C), it yields the batch being written, which is
    placed, and raises CancelledError before the next.
    """
    remaining = iter(cases)
    task = asyncio.current_task()
    while chunk := list(itertools.islice(remaining, batch)):
        outcomes = await place_batch(gw, chunk, partner_id, purpose, actor=actor)
        for done in zip(chunk, outcomes, strict=True):
            yield done
        if task is not None and task.cancelling():
            # Interrupted (Ctrl-C) while the batch was written: it is placed and told
            # above; the next one is not begun.
            raise asyncio.CancelledError


async def place_batch(
    gw: Gateway, cases: Sequence[Case], partner_id: str, purpose: str, *, actor: str
) -> list[Placement | PolicyViolation]:
    """Place `cases` in one transaction (see `place` and `place_many`). On SQLite,
    placements that arrive together (API callers) share it (`gateway.storage.groups`)."""

    async def job(tx: Transaction, entries: list[Any]) -> list[Placement | PolicyViolation]:
        return await _place_in(gw, tx, entries, cases, partner_id, purpose, actor)

    return await gw.writer.run(job)


async def _place_in(
    gw: Gateway,
    tx: Transaction,
    entries: list[Any],
    cases: Sequence[Case],
    partner_id: str,
    purpose: str,
    actor: str,
) -> list[Placement | PolicyViolation]:
    """The placements of `cases` in ``tx``; their disclosures go to ``entries``."""
    outcomes: list[Placement | PolicyViolation] = []
    record = await registry.fetch(tx, partner_id, share=True)
    check_policy(record, purpose, gw)
    profile = record.profile
    policy = profile.policy[purpose]  # type: ignore[index]
    tokens = gw.keys.pseudonymizer(f"partner:{partner_id}")
    audit = gw.keys.pseudonymizer("audit")
    fields = disclosed_fields(policy)
    disclosed = [DisclosedField(**f) for f in fields]  # frozen: one list for the batch
    keys: SealingKeys | None = None  # looked up for the first package sealed
    for case in cases:
        case_ref = tokens.token(f"case:{case.case_id}", prefix="case_")
        try:
            check_limitation(gw, case, purpose)
            await check_not_recalled(tx, case.case_id, partner_id, case_ref)
        except PolicyViolation as refused:
            outcomes.append(refused)
            continue
        keys = keys or sealing_keys(gw, profile)
        data = minimize(case, policy, tokens, gw.transforms)
        package = seal_package(gw, profile, purpose, case_ref, data, keys=keys)
        at = isotime(gw.now())
        entry = Disclosure(
            at=at,
            actor=actor,
            package_id=package.package_id,
            partner=partner_id,
            purpose=purpose,
            legal_basis=policy.legal_basis,
            subject=subject_token(gw, case, audit),
            case=case_token(gw, case.case_id, audit),
            fields=disclosed,
            package_digest=package.package_digest,
            sealing=profile.sealing,
        )
        await enqueue(
            tx, package, profile, case_id=case.case_id, subject=entry.subject, fields=fields, at=at,
            due=_due(gw, profile, case, at), keyring=gw.keyring,
        )
        await _assign(tx, case, partner_id, case_ref, entry, purpose, at)
        await record_contact_points(gw, tx, case, entry.subject, partner_id, policy)
        entries.append(entry)
        outcomes.append(Placement(package.package_id, partner_id, purpose, case_ref, package.claims))
    return outcomes


def _due(gw: Gateway, profile: PartnerProfile, case: Case, at: str) -> str:
    """When the package is due: now, but where the gateway itself contacts the debtor
    (SMS, email), a reminder due outside the contact hours of the debtor's time zone
    waits until the window opens; a debtor on file in more than one zone waits for an
    hour convenient in all."""
    if profile.kind not in ("sms", "email"):
        return at
    opening = gw.rules.next_allowed(gw.now(), case.debtor.timezone, debtor_zones(case))
    return isotime(opening or gw.now())


async def check_not_recalled(tx: Transaction, case_id: str, partner_id: str, case_ref: str) -> None:
    """A case recalled from a partner goes to it again only once it attested deleting
    what it had (PIPL art. 21): until then the recall stands."""
    prior = await tx.fetchone(
        "SELECT state, recalled_at, deletion_due FROM assignments WHERE partner_id = ? AND case_ref = ?",
        (partner_id, case_ref),
    )
    if prior is not None and prior["state"] == "recalled":
        raise PolicyViolation(
            "recalled",
            f"case {case_id} was recalled from {partner_id!r} ({prior['recalled_at']}) and its "
            f"deletion is not attested yet (due {prior['deletion_due']}); it can go to them again "
            "once they report deletion_attested",
        )


#: Assignments a new placement starts over: the partner finished with the case.
_OVER = "assignments.state IN ('ended', 'deleted')"


async def _assign(
    tx: Transaction, case: Case, partner_id: str, case_ref: str, entry: Disclosure, purpose: str, at: str
) -> None:
    """Record what supervision needs to know of the case at this partner (no personal
    data beyond the debtor's time zone, which the contact-hours rules need). A case
    placed again while the partner works on it keeps its state; one the partner had
    returned, closed or deleted starts over as placed."""
    loan = case.loan
    reset = str(loan.last_acknowledged) if loan.last_acknowledged else None
    events = json.dumps([[kind, str(day)] for kind, day in loan.limitation_events()])
    await tx.execute(
        "INSERT INTO assignments (partner_id, case_ref, case_id, case_token, subject_token, purpose,"
        " timezone,"
        " currency, amount_placed, last_due_date, last_reset, limitation_events, state, placed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'placed', ?)"
        " ON CONFLICT (partner_id, case_ref) DO UPDATE SET timezone = excluded.timezone,"
        " amount_placed = excluded.amount_placed, last_due_date = excluded.last_due_date,"
        " last_reset = excluded.last_reset, limitation_events = excluded.limitation_events,"
        f" state = CASE WHEN {_OVER} THEN 'placed' ELSE assignments.state END,"
        f" placed_at = CASE WHEN {_OVER} THEN excluded.placed_at ELSE assignments.placed_at END,"
        + ", ".join(
            f"{column} = CASE WHEN {_OVER} THEN NULL ELSE assignments.{column} END"
            for column in ("accepted_at", "recalled_at", "recall_reason", "deletion_due", "attested_at")
        ),
        (
            partner_id,
            case_ref,
            case.case_id,
            entry.case,
            entry.subject,
            purpose,
            case.debtor.timezone,
            loan.currency,
            str(loan.outstanding),
            str(loan.last_due_date),
            reset,
            events,
            at,
        ),
    )


async def show(gw: Gateway, package_id: str) -> dict[str, Any]:
    """The package as the partner will read it, from the signed token itself."""
    async with gw.db.transaction() as tx:
        row = await tx.fetchone("SELECT * FROM packages WHERE id = ?", (package_id,))
        if row is not None:
            row = await open_package(gw.keyring, tx, row)
    if row is None:
        raise NotFound(f"no package {package_id!r} (see `gateway package list`)")
    view = {
        "package_id": row["id"],
        "partner": row["partner_id"],
        "case_id": row["case_id"],
        "purpose": row["purpose"],
        "state": row["state"],
        "sealing": row["sealing"],
        "created_at": row["created_at"],
        "fields": json.loads(row["fields"]),
    }
    if row["signed"] is None:  # its plaintext was purged (`gateway retention run`)
        purged = {"payload_digest": row["payload_digest"], "purged_at": row["plaintext_purged_at"]}
        return {**view, **purged, "claims": None}
    return {**view, "claims": verify_signed(row["signed"], gw.custody.public_jwks(gw.now()))}


async def list_packages(gw: Gateway, partner_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    sql = "SELECT id, partner_id, case_id, purpose, state, attempts, created_at FROM packages"
    params: tuple[Any, ...] = ()
    if partner_id:
        sql += " WHERE partner_id = ?"
        params = (partner_id,)
    sql += " ORDER BY created_at DESC, id LIMIT ?"
    async with gw.db.transaction() as tx:
        return await tx.fetchall(sql, (*params, limit))
