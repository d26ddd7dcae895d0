"""Placement: policy check, minimize, seal, and write to the outbox with its audit entry.

The package row and its disclosure entry are written in one transaction before anything
is sent, so a crash loses nothing and the log never misses a disclosure.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import NotFound, PolicyViolation
from gateway.lifecycle.columns import open_package
from gateway.onboarding import registry
from gateway.onboarding.pseudonyms import Pseudonymizer
from gateway.placement.minimize import (
    ContactPoint,
    Minimizer,
    contact_points,
    disclosed_fields,
    tokenised_points,
)
from gateway.placement.package import SealingKeys, seal_package, sealing_keys
from gateway.placement.rows import PlacementRows, package_row
from gateway.placement.seal import verify_signed
from gateway.placement.transforms import Transform
from gateway.storage import Row, Transaction
from schemas.audit import DisclosedField, Disclosure
from schemas.case import Case
from schemas.partner import LEGAL_PURPOSES, PartnerProfile, PurposePolicy


# Slots, not frozen: one is made for every case placed, and a frozen dataclass sets each
# field through object.__setattr__ (see `gateway.supervision.base.Contact`).
@dataclass(slots=True)
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


def debtor_zones(case: Case, points: list[ContactPoint] | None = None) -> list[str]:
    """Every time zone on file for the debtor besides the main one (``points``: the
    case's `contact_points`, when the caller has them)."""
    zones = {point.timezone for point in (contact_points(case) if points is None else points)}
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


@dataclass(frozen=True)
class _Batch:
    """What every placement of a batch shares, looked up once for the batch."""

    partner_id: str
    purpose: str
    actor: str
    profile: PartnerProfile
    policy: PurposePolicy
    tokens: Pseudonymizer
    audit: Pseudonymizer
    transforms: Mapping[str, Transform]
    disclosed: list[DisclosedField]
    fields: str
    """``disclosed`` as the packages' ``fields`` column holds it (JSON)."""

    @functools.cached_property
    def minimize(self) -> Minimizer:
        """`minimize` under the batch's policy, made for the first package minimized."""
        return Minimizer(self.policy, self.transforms)


async def _place_in(
    gw: Gateway,
    tx: Transaction,
    entries: list[Any],
    cases: Sequence[Case],
    partner_id: str,
    purpose: str,
    actor: str,
) -> list[Placement | PolicyViolation]:
    """The placements of `cases` in ``tx``; their disclosures go to ``entries``, their
    rows to the database at the end (`gateway.placement.rows`)."""
    outcomes: list[Placement | PolicyViolation] = []
    record = await registry.fetch(tx, partner_id, share=True)
    check_policy(record, purpose, gw)
    profile = record.profile
    policy = profile.policy[purpose]  # type: ignore[index]
    tokens = gw.keys.pseudonymizer(f"partner:{partner_id}")
    fields = disclosed_fields(policy)
    disclosed = [DisclosedField(**f) for f in fields]  # frozen: one list for the batch
    audit = gw.keys.pseudonymizer("audit")
    batch = _Batch(
        partner_id, purpose, actor, profile, policy, tokens, audit, gw.transforms, disclosed,
        json.dumps(fields),
    )
    refs = [tokens.token(f"case:{case.case_id}", prefix="case_") for case in cases]
    recalled = await _recalled(tx, partner_id, refs)
    refused: dict[int, PolicyViolation] = {}
    for i, (case, case_ref) in enumerate(zip(cases, refs, strict=True)):
        try:
            check_limitation(gw, case, purpose)
            check_not_recalled(case.case_id, partner_id, recalled.get(case_ref))
        except PolicyViolation as refusal:
            refused[i] = refusal
    # The data keys of the debtors placed, for their packages' stored columns, found or
    # made at once (none for a debtor whose case is refused: nothing of theirs is stored).
    subjects = [subject_token(gw, case, audit) for case in cases]
    await gw.keyring.prepare(tx, [s for i, s in enumerate(subjects) if i not in refused])
    rows = PlacementRows()
    keys: SealingKeys | None = None  # looked up for the first package sealed
    for i, (case, case_ref, subject) in enumerate(zip(cases, refs, subjects, strict=True)):
        if i in refused:
            outcomes.append(refused[i])
            continue
        keys = keys or sealing_keys(gw, profile)
        outcomes.append(await _place_one(gw, tx, batch, keys, case, case_ref, subject, rows, entries))
    await rows.write(tx)
    return outcomes


async def _place_one(
    gw: Gateway,
    tx: Transaction,
    batch: _Batch,
    keys: SealingKeys,
    case: Case,
    case_ref: str,
    subject: str,
    rows: PlacementRows,
    entries: list[Any],
) -> Placement:
    """Minimize and seal one case (``subject``: its debtor's `subject_token`); its rows go
    to ``rows``, its disclosure to ``entries``."""
    profile, audit = batch.profile, batch.audit
    # The partner's tokens of this case, each made once: a number's token is asked for by
    # its transform and again by `tokenised_points` (kept for this placement only).
    tokens = batch.tokens.remembering()
    data = batch.minimize(case, tokens)
    package = seal_package(gw, profile, batch.purpose, case_ref, data, keys=keys)
    at = isotime(gw.now())
    entry = Disclosure(
        at=at,
        actor=batch.actor,
        package_id=package.package_id,
        partner=batch.partner_id,
        purpose=batch.purpose,
        legal_basis=batch.policy.legal_basis,
        subject=subject,
        case=case_token(gw, case.case_id, audit),
        fields=batch.disclosed,
        package_digest=package.package_digest,
        sealing=profile.sealing,
    )
    points = contact_points(case)
    row, body = await package_row(
        tx, package, profile, case_id=case.case_id, subject=entry.subject, fields=batch.fields, at=at,
        due=_due(gw, profile, case, at, points), keyring=gw.keyring,
    )
    rows.packages.append(row)
    rows.bodies.append(body)
    rows.assign(case, batch.partner_id, case_ref, entry.case, entry.subject, batch.purpose, at)
    sent = tokenised_points(points, batch.policy, tokens)
    rows.contacts(entry.subject, batch.partner_id, points, sent, audit)
    entries.append(entry)
    return Placement(package.package_id, batch.partner_id, batch.purpose, case_ref, package.claims)


def _due(gw: Gateway, profile: PartnerProfile, case: Case, at: str, points: list[ContactPoint]) -> str:
    """When the package is due: now, but where the gateway itself contacts the debtor
    (SMS, email), a reminder due outside the contact hours of the debtor's time zone
    waits until the window opens; a debtor on file in more than one zone (``points``,
    the case's contact points) waits for an hour convenient in all."""
    if profile.kind not in ("sms", "email"):
        return at
    opening = gw.rules.next_allowed(gw.now(), case.debtor.timezone, debtor_zones(case, points))
    return isotime(opening or gw.now())


async def _recalled(tx: Transaction, partner_id: str, case_refs: list[str]) -> dict[str, Row]:
    """The assignments of ``case_refs`` at the partner that stand recalled, by case_ref:
    one query for a batch (a placement never recalls, so what it finds holds for the
    whole batch)."""
    rows = await tx.fetchall_in(
        "SELECT case_ref, recalled_at, deletion_due FROM assignments WHERE partner_id = ?"
        " AND state = 'recalled' AND case_ref IN ({marks})",
        list(dict.fromkeys(case_refs)),
        (partner_id,),
    )
    return {row["case_ref"]: row for row in rows}


def check_not_recalled(case_id: str, partner_id: str, recall: Row | None) -> None:
    """A case recalled from a partner goes to it again only once it attested deleting
    what it had (PIPL art. 21): until then the recall stands. ``recall``: the case's
    assignment at the partner if it stands recalled (`_recalled`)."""
    if recall is not None:
        raise PolicyViolation(
            "recalled",
            f"case {case_id} was recalled from {partner_id!r} ({recall['recalled_at']}) and its "
            f"deletion is not attested yet (due {recall['deletion_due']}); it can go to them again "
            "once they report deletion_attested",
        )


async def show(gw: Gateway, package_id: str) -> dict[str, Any]:
    """The package as the partner will read it, from the signed token itself."""
    async with gw.db.transaction() as tx:
        row = await tx.fetchone(
            "SELECT p.*, b.sealed, b.signed FROM packages p JOIN package_bodies b ON b.package_id = p.id"
            " WHERE p.id = ?",
            (package_id,),
        )
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
