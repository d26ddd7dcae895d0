"""The rows a placement writes besides its audit entry: the package in the outbox (and
its body, the sealed and signed forms, in a table of their own), the case's assignment
at the partner, and the debtor's contact points with the tokens the partner received
for them.

A batch of placements (`gateway.placement.service.place_batch`) gathers its rows here
and writes each table with one statement for the whole batch, in the order the
packages were sealed, inside the batch's transaction: what a crash or a refusal leaves
behind is the same as with a statement per package (nothing of the batch), and every
upsert runs once per package, in order, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.clock import isotime
from gateway.lifecycle.columns import seal_package as seal_columns
from gateway.onboarding.pseudonyms import Pseudonymizer
from gateway.placement.minimize import ContactPoint
from gateway.placement.package import Sealed
from gateway.storage import Transaction
from gateway.storage.atrest import KeyRing
from schemas.case import Case
from schemas.partner import PartnerProfile

_PACKAGE = (
    "INSERT INTO packages (id, partner_id, case_id, case_ref, subject_token, purpose, sealing,"
    " payload_digest, fields, created_at, expires_at, state, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)"
)
_BODY = "INSERT INTO package_bodies (package_id, sealed, signed) VALUES (?, ?, ?)"

#: Assignments a new placement starts over: the partner finished with the case.
_OVER = "assignments.state IN ('ended', 'deleted')"
_ASSIGNMENT = (
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
    )
)
_CONTACT_POINT = (
    "INSERT INTO contact_points (subject_token, number_id, kind, label, timezone)"
    " VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (subject_token, number_id) DO UPDATE SET kind = excluded.kind,"
    " label = excluded.label, timezone = excluded.timezone"
)
_NUMBER_TOKEN = (
    "INSERT INTO number_tokens (partner_id, token, number_id, subject_token) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (partner_id, token) DO UPDATE SET number_id = excluded.number_id,"
    " subject_token = excluded.subject_token"
)


async def package_row(
    tx: Transaction,
    package: Sealed,
    profile: PartnerProfile,
    *,
    case_id: str,
    subject: str,
    fields: str,
    at: str,
    due: str | None,
    keyring: KeyRing,
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The outbox row of a sealed package, due at ``due`` (default now), and its body
    row: its sealed and signed forms encrypted under the subject's data key.
    ``fields``: the disclosed fields as JSON."""
    signed, sealed = await seal_columns(
        keyring, tx, subject, package.package_id, package.signed, package.sealed
    )
    claims = package.claims
    row = (
        package.package_id,
        profile.id,
        case_id,
        claims["case_ref"],
        subject,
        claims["purpose"],
        profile.sealing,
        package.package_digest,  # the column kept its name
        fields,
        at,
        isotime(datetime.fromtimestamp(claims["exp"], UTC)),
        due or at,
    )
    return row, (package.package_id, sealed, signed)


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
    """Put one sealed package in the outbox, due at ``due`` (default now)."""
    row, body = await package_row(
        tx, package, profile, case_id=case_id, subject=subject, fields=json.dumps(fields), at=at, due=due,
        keyring=keyring,
    )
    await tx.execute(_PACKAGE, row)
    await tx.execute(_BODY, body)


def number_id(value: str, audit: Pseudonymizer) -> str:
    """The bank-side identity of a number or address: the same for every partner, a
    keyed pseudonym (never the number itself)."""
    normal = "".join(value.split()).casefold()
    return audit.token(f"contact:{normal}", prefix="num_")


@dataclass
class PlacementRows:
    """The rows of a batch of placements, written by :meth:`write`."""

    packages: list[tuple[Any, ...]] = field(default_factory=list)
    bodies: list[tuple[Any, ...]] = field(default_factory=list)
    assignments: list[tuple[Any, ...]] = field(default_factory=list)
    contact_points: list[tuple[Any, ...]] = field(default_factory=list)
    number_tokens: list[tuple[Any, ...]] = field(default_factory=list)

    def assign(
        self, case: Case, partner_id: str, case_ref: str, case_token: str, subject: str, purpose: str, at: str
    ) -> None:
        """What supervision needs to know of the case at this partner (no personal data
        beyond the debtor's time zone, which the contact-hours rules need). A case placed
        again while the partner works on it keeps its state; one the partner had
        returned, closed or deleted starts over as placed."""
        loan = case.loan
        reset = str(loan.last_acknowledged) if loan.last_acknowledged else None
        events = orjson.dumps([[kind, str(day)] for kind, day in loan.limitation_events()]).decode()
        self.assignments.append((
            partner_id, case_ref, case.case_id, case_token, subject, purpose, case.debtor.timezone,
            loan.currency, str(loan.outstanding), str(loan.last_due_date), reset, events, at,
        ))  # fmt: skip

    def contacts(
        self,
        subject: str,
        partner_id: str,
        points: list[ContactPoint],
        sent: list[tuple[str, ContactPoint]],
        audit: Pseudonymizer,
    ) -> None:
        """The debtor's numbers and addresses (``points``) under their bank-side
        identities, with their labels and zones, and the token this partner received for
        each one it was sent (``sent``), so that reports naming a partner's token count
        against the same number for every partner."""
        ids = {point.value: number_id(point.value, audit) for point in points}
        self.contact_points += [(subject, ids[p.value], p.kind, p.label, p.timezone) for p in points]
        self.number_tokens += [(partner_id, token, ids[point.value], subject) for token, point in sent]

    async def write(self, tx: Transaction) -> None:
        for sql, rows in (
            (_PACKAGE, self.packages),
            (_BODY, self.bodies),
            (_ASSIGNMENT, self.assignments),
            (_CONTACT_POINT, self.contact_points),
            (_NUMBER_TOKEN, self.number_tokens),
        ):
            if rows:
                await tx.executemany(sql, rows)
