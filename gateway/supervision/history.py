"""A debtor's contacts and requests, by every partner and the gateway's own sends: what
the rules judge a report or a message against.

Numbers are resolved here: a partner reports the token it received for a number
(``number_token``), scoped to that partner; the placement recorded which bank-side
identity each token stands for (``number_tokens``), so the same number counts as one
whichever partner called it. The zones and labels on file for each number come along
(``contact_points``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from gateway.clock import isotime
from gateway.storage import Row, Transaction
from gateway.supervision.base import Contact, Request
from gateway.supervision.rules import RulePack

#: How far around a contact others are read for frequency rules (7-in-7 needs a week
#: plus a day), before it and after it: a late report may complete a breach.
HISTORY = timedelta(days=8)
#: Third-party contacts older than the window, for rules that count them ever: the
#: terms of the partial index ``events_third_party`` (migration 15), literally.
_THIRD_PARTY = """type = 'contact_attempt' AND body LIKE '%"target":"third_party"%'"""
_SELECT = "SELECT id, partner_id, case_id, type, body, received_at, subject_token, occurred_at,"


@dataclass(frozen=True)
class Numbers:
    """The debtor's numbers and addresses as the placements recorded them."""

    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    """(partner, token) -> bank-side identity."""
    points: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    """Bank-side identity -> (label, time zone)."""

    def resolve(self, partner: str, token: str | None) -> str | None:
        return None if token is None else self.tokens.get((partner, token))

    def zones(self, number: str | None) -> tuple[str, ...]:
        """Where the person may be, besides the debtor's zone: the number's own zone, or
        every zone on file when the number is unknown."""
        if number is not None:
            zone = self.points.get(number, (None, None))[1]
            return (zone,) if zone else ()
        return self.every_zone

    @cached_property
    def every_zone(self) -> tuple[str, ...]:
        return tuple(sorted({zone for _, zone in self.points.values() if zone}))

    def label(self, number: str | None) -> str | None:
        return None if number is None else self.points.get(number, (None, None))[0]

    def place(self, number: str | None) -> tuple[str | None, tuple[str, ...]]:
        """`label` and `zones` of ``number`` in one look-up."""
        if number is None:
            return None, self.every_zone
        label, zone = self.points.get(number, (None, None))
        return label, (zone,) if zone else ()


@dataclass(frozen=True)
class Record:
    contacts: list[Contact]
    requests: list[Request]
    numbers: Numbers


async def numbers_of(tx: Transaction, subject: str) -> Numbers:
    return (await numbers_of_all(tx, [subject]))[subject]


async def numbers_of_all(tx: Transaction, subjects: Sequence[str]) -> dict[str, Numbers]:
    """`numbers_of` each of ``subjects`` (distinct), in one statement for all."""
    # One statement for both tables: a token row has a partner, a contact point none.
    marks = _marks(subjects)
    rows = await tx.fetchall(
        "SELECT subject_token, partner_id, token, number_id, NULL AS label, NULL AS timezone"
        f" FROM number_tokens WHERE subject_token IN ({marks}) UNION ALL SELECT subject_token, NULL,"
        f" NULL, number_id, label, timezone FROM contact_points WHERE subject_token IN ({marks})",
        (*subjects, *subjects),
    )
    found = {subject: Numbers() for subject in subjects}
    for r in rows:
        numbers = found[r["subject_token"]]
        if r["partner_id"] is not None:
            numbers.tokens[(r["partner_id"], r["token"])] = r["number_id"]
        else:
            numbers.points[r["number_id"]] = (r["label"], r["timezone"])
    return found


async def contact_history(
    tx: Transaction, subject: str, since: datetime, until: datetime, exclude: int = 0
) -> Record:
    """The debtor's contacts from ``since`` to ``until`` by every partner, the gateway's
    own SMS and email included (stored as ``source = 'gateway'`` events, see
    :mod:`gateway.delivery.presend`), their third-party contacts before that, and every
    request they made; ``exclude`` is the event being judged (ids start at 1). The
    events come in one statement (each report checks its history)."""
    return (await contact_histories(tx, [subject], since, until, exclude))[subject]


async def contact_histories(
    tx: Transaction, subjects: Sequence[str], since: datetime, until: datetime, exclude: int = 0
) -> dict[str, Record]:
    """`contact_history` of each of ``subjects`` (distinct), in the same two statements
    for all of them (the gateway's messages of one claim are judged together)."""
    numbers = await numbers_of_all(tx, subjects)
    start, end = isotime(since), isotime(until)
    rows = await tx.fetchall(
        history_statement(len(subjects)),
        (*subjects, start, end, exclude, *subjects, start, start, *subjects, exclude),
    )
    recent: dict[str, list[Row]] = {subject: [] for subject in subjects}
    older: dict[str, list[Row]] = {subject: [] for subject in subjects}
    asked: dict[str, list[Row]] = {subject: [] for subject in subjects}
    for row in rows:
        kind = asked if row["type"] == "contact_request" else recent if row["recent"] else older
        kind[row["subject_token"]].append(row)
    return {
        subject: Record(
            [as_contact(r, orjson.loads(r["body"]), subject, numbers[subject])
             for r in recent[subject] + older[subject]],
            [as_request(r, orjson.loads(r["body"]), numbers[subject]) for r in asked[subject]],
            numbers[subject],
        )
        for subject in subjects
    }


def history_statement(subjects: int) -> str:
    """The events of `contact_histories` for ``subjects`` people; its parameters: the
    subjects, start, end, the excluded id; the subjects, start; start, the subjects, the
    excluded id. Three ranges of migration 15's indexes, whatever the length of a
    person's history: contacts in the window, third-party contacts before it, requests."""
    marks = ", ".join("?" * subjects)
    return (
        f"{_SELECT} TRUE AS recent FROM events WHERE subject_token IN ({marks}) AND type = 'contact_attempt'"
        " AND occurred_at >= ? AND occurred_at <= ? AND id != ?"
        f" UNION ALL {_SELECT} FALSE FROM events WHERE subject_token IN ({marks}) AND {_THIRD_PARTY}"
        " AND occurred_at < ?"
        f" UNION ALL {_SELECT} occurred_at >= ? FROM events WHERE subject_token IN ({marks})"
        " AND type = 'contact_request' AND id != ? ORDER BY occurred_at, id"
    )


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def as_contact(
    row: Row, body: dict[str, Any], subject: str, numbers: Numbers, *, time_barred: bool = False
) -> Contact:
    """A stored (or just received) contact report; ``row`` gives the partner, the case,
    the event id and when the gateway received it (``time_barred``: the debt was, then)."""
    partner = row["partner_id"]
    token = body.get("number_token")
    number = None if token is None else numbers.tokens.get((partner, token))
    place, zones = numbers.place(number)
    received = row.get("received_at")
    # Positional, in `Contact`'s field order (a test holds them to it): a report's
    # history makes one per earlier contact, and keywords cost a fifth more.
    return Contact(
        datetime.fromisoformat(body["occurred_at"]),
        body["channel"],
        body["target"],
        body["outcome"],
        partner,
        row["case_id"],
        subject,
        number,
        body.get("staff_count"),
        body.get("text"),
        row.get("id"),
        None if received is None else datetime.fromisoformat(received),  # "Z" reads as UTC
        zones,
        place,
        time_barred,
    )


def as_request(row: Row, body: dict[str, Any], numbers: Numbers) -> Request:
    return Request(
        at=datetime.fromisoformat(body["occurred_at"]),
        kind=body["kind"],
        partner=row["partner_id"],
        debt=row["case_id"],
        channel=body.get("channel"),
        number=numbers.resolve(row["partner_id"], body.get("number_token")),
        known_at=_when(row.get("received_at")),
        event=row.get("id"),
    )


def limitation_events(assignment: Row) -> list[tuple[str, date]]:
    """An assignment's limitation events; rows placed before they were recorded hold
    only the acknowledgement date."""
    if assignment.get("limitation_events") is not None:
        return [(kind, date.fromisoformat(day)) for kind, day in json.loads(assignment["limitation_events"])]
    reset = assignment.get("last_reset")
    return [("acknowledgement", date.fromisoformat(reset))] if reset else []


#: Limitation expiries a pack remembers (`RulePack.expiries`) before it starts over.
EXPIRIES = 4096


def time_barred(pack: RulePack, assignment: Row, at: datetime) -> bool:
    """Whether the assignment's debt was past its limitation period on the debtor's day of ``at``."""
    # Every report on a case asks: the answer depends only on these columns.
    key = (assignment["last_due_date"], assignment.get("limitation_events"), assignment.get("last_reset"))
    if key in pack.expiries:
        expires = pack.expiries[key]
    else:
        due = date.fromisoformat(assignment["last_due_date"])
        expires = pack.limitation_expires(due, limitation_events(assignment))
        if len(pack.expiries) >= EXPIRIES:
            pack.expiries.clear()
        pack.expiries[key] = expires
    return expires is not None and at.astimezone(ZoneInfo(assignment["timezone"])).date() > expires


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)  # "Z" reads as UTC
