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

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import Forbidden, InvalidInput, Unauthorized
from schemas.audit import TokenCreated

ROLES = ("operator", "auditor", "admin")


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: str

    def require(self, *roles: str) -> None:
        if self.role != "admin" and self.role not in roles:
            raise Forbidden(f"role {self.role!r} may not do this (needs {' or '.join(roles)})")


async def create(gw: Gateway, role: str, label: str, *, actor: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r} (choose {', '.join(ROLES)})")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = isotime(gw.now())
    async with gw.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO api_tokens (id, role, secret_hash, label, created_at) VALUES (?, ?, ?, ?, ?)",
            (token_id, role, _hash(secret), label, now),
        )
        await gw.record(
            tx, [TokenCreated(at=now, actor=actor, token_id=token_id, role=role)]
        )
    return f"gwt_{token_id}_{secret}"


async def authenticate(gw: Gateway, authorization: str | None) -> Principal:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.startswith("gwt_"):
        raise Unauthorized("send Authorization: Bearer gwt_... (create one with `gateway tokens create`)")
    token_id, _, secret = token.removeprefix("gwt_").partition("_")
    async with gw.db.transaction() as tx:
        row = await tx.fetchone(
            "SELECT role, secret_hash, revoked_at FROM api_tokens WHERE id = ?", (token_id,)
        )
    if row is None or row["revoked_at"] or not hmac.compare_digest(row["secret_hash"], _hash(secret)):
        raise Unauthorized("unknown or revoked token")
    return Principal(token_id, row["role"])


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
