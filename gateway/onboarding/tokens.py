"""API bearer tokens with roles, stored hashed.

A token reads ``gwt_<id>_<secret>``; only SHA-256 of the secret is stored (the secret is
256 random bits, so a plain hash is enough: there is nothing to guess). The token is
shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway.clock import isotime
from gateway.controls import check_text
from gateway.core import Gateway
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from schemas.audit import TokenCreated, TokenRevoked

ROLES = ("operator", "auditor", "admin")


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: str

    def require(self, *roles: str) -> None:
        if self.role != "admin" and self.role not in roles:
            raise Forbidden(f"role {self.role!r} may not do this (needs {' or '.join(roles)})")


async def create(
    gw: Gateway, role: str, label: str, *, actor: str, expires_in: timedelta | None = None
) -> str:
    """A new token, shown once; with ``expires_in`` it is refused (401) after that."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r} (choose {', '.join(ROLES)})")
    check_text(label, "label")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = gw.now()
    expires = isotime(now + expires_in) if expires_in else None
    async with gw.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO api_tokens (id, role, secret_hash, label, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (token_id, role, _hash(secret), label, isotime(now), expires),
        )
        await gw.record(
            tx,
            [TokenCreated(at=isotime(now), actor=actor, token_id=token_id, role=role, expires_at=expires)],
        )
    return f"gwt_{token_id}_{secret}"


async def list_tokens(gw: Gateway) -> list[dict[str, Any]]:
    """Every token's id, role, label and dates; never the secret nor its hash."""
    now = isotime(gw.now())
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT id, role, label, created_at, expires_at, revoked_at FROM api_tokens"
            " ORDER BY created_at, id"
        )
    for row in rows:
        row["status"] = status_of(row, now)
    return rows


def status_of(row: dict[str, Any], now: str) -> str:
    if row["revoked_at"]:
        return "revoked"
    if row["expires_at"] and row["expires_at"] <= now:
        return "expired"
    return "active"


async def revoke(gw: Gateway, token_id: str, *, actor: str) -> str:
    """Mark the token revoked (it then gets 401); return when. Recorded in the audit log."""
    token_id = token_id.removeprefix("gwt_").partition("_")[0]
    now = isotime(gw.now())
    async with gw.db.transaction() as tx:
        row = await tx.fetchone(f"SELECT revoked_at FROM api_tokens WHERE id = ?{tx.for_update}", (token_id,))
        if row is None:
            raise NotFound(f"no token {token_id!r} (see `gateway tokens list`)")
        if row["revoked_at"]:
            raise Conflict(f"token {token_id} was already revoked at {row['revoked_at']}")
        await tx.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", (now, token_id))
        await gw.record(tx, [TokenRevoked(at=now, actor=actor, token_id=token_id)])
    return now


async def authenticate(gw: Gateway, authorization: str | None) -> Principal:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.startswith("gwt_"):
        raise Unauthorized("send Authorization: Bearer gwt_... (create one with `gateway tokens create`)")
    token_id, _, secret = token.removeprefix("gwt_").partition("_")
    async with gw.db.transaction() as tx:
        row = await tx.fetchone(
            "SELECT role, secret_hash, revoked_at, expires_at FROM api_tokens WHERE id = ?", (token_id,)
        )
    if row is None or row["revoked_at"] or not hmac.compare_digest(row["secret_hash"], _hash(secret)):
        raise Unauthorized("unknown or revoked token")
    if row["expires_at"] and row["expires_at"] <= isotime(gw.now()):
        raise Unauthorized("token expired; create a new one with `gateway tokens create`")
    return Principal(token_id, row["role"])


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
