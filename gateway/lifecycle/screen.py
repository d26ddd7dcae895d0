"""Partners' free text, screened before it is stored; the original kept encrypted.

A report's free-text fields (a reason, a summary, a statement, a contact's note) are
stored in ``events.body`` after `gateway.supervision.redact.redact`: e-mail addresses,
runs of 7 or more digits, and the values of the package the partner received for the
case (names, addresses, numbers as sent) are replaced. The report as it came is kept in
``events.original``, encrypted, for the ``event_original`` retention only. About a
person whose erasure was requested, no free text is kept in clear at all.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.lifecycle.columns import original_at, signed_at
from gateway.storage import Transaction
from gateway.storage.atrest import KeyRing
from gateway.supervision.redact import redact, values_of
from schemas.package import RECALL_PURPOSE

#: The free-text fields of status events (`schemas.events.Text`).
FREE_TEXT = ("reason", "summary", "statement", "text")
WITHHELD = "<withheld: erasure requested>"
PURGED = "<purged>"


def free_text(body: dict[str, Any]) -> dict[str, str]:
    """The free-text fields of a report that hold any text."""
    return {name: body[name] for name in FREE_TEXT if isinstance(body.get(name), str) and body[name]}


def replaced(body: dict[str, Any], replace: Any) -> dict[str, Any]:
    """``body`` with each free text ``t`` replaced by ``replace(t)``."""
    return {**body, **{name: replace(text) for name, text in free_text(body).items()}}


def package_data(signed: str) -> Any:
    """The minimized case inside a signed package (our own token: not verified here)."""
    payload = signed.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["data"]


#: The signed form of the newest package (not a recall notice) of a case at a partner.
LATEST_SIGNED = (
    "SELECT p.id, b.signed FROM packages p JOIN package_bodies b ON b.package_id = p.id"
    " WHERE p.partner_id = ? AND p.case_ref = ? AND p.purpose != ? ORDER BY p.created_at DESC LIMIT 1"
)


async def known_values(
    keyring: KeyRing, tx: Transaction, partner_id: str, case_ref: str, latest: str = LATEST_SIGNED
) -> list[str]:
    """What the partner received about the case: the values its text may echo.
    ``latest``: the query of `LATEST_SIGNED` (the upgrade step has its own, for the
    schema of its version)."""
    row = await tx.fetchone(latest, (partner_id, case_ref, RECALL_PURPOSE))
    plain = await keyring.open(tx, signed_at(row["id"]), row["signed"]) if row else None
    return values_of(package_data(plain)) if plain else []


async def erasure_requested(tx: Transaction, subject: str) -> bool:
    return bool(await tx.fetchval("SELECT COUNT(*) FROM erasures WHERE subject_token = ?", (subject,)))


def screened(body: dict[str, Any], known: Iterable[str], withheld: bool) -> str:
    values = list(known)
    text = replaced(body, lambda t: WITHHELD if withheld else redact(t, values))
    return json.dumps(text, ensure_ascii=False, separators=(",", ":"))


async def stored_event(
    keyring: KeyRing,
    tx: Transaction,
    partner_id: str,
    webhook_id: str | None,
    case: dict[str, Any],
    raw: str,
    parsed: dict[str, Any] | None = None,
    latest: str = LATEST_SIGNED,
) -> tuple[str, str | None]:
    """What is stored of a report (``raw``, its JSON; ``parsed``, the same parsed, if the
    caller has it) about the assignment ``case``: the body with its free text screened,
    and the original encrypted (None: no free text). ``latest``: see `known_values`."""
    body = json.loads(raw) if parsed is None else parsed
    if not free_text(body):
        return raw, None
    subject = case["subject_token"]
    withheld = await erasure_requested(tx, subject)
    known = [] if withheld else await known_values(keyring, tx, partner_id, case["case_ref"], latest)
    original = await keyring.seal(tx, subject, original_at(partner_id, webhook_id), raw)
    return screened(body, known, withheld), original
