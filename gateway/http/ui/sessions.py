"""Dashboard sessions: an API token, given once at sign-in, exchanged for a cookie.

The cookie holds a random 256-bit secret; the database holds only its SHA-256, the id
of the token that opened it and its expiry (`ui_sessions`). Every request reads the
token's row again, so a revoked or expired token ends its sessions at once, and a
session never outlives its token nor `LIFETIME`.

CSRF: every form carries a synchronizer token derived from the session secret (an
HMAC of it), so it is bound to the session, never stored, and unknown to any page that
cannot read the HttpOnly cookie. The sign-in form, before any session exists, carries
the value of a short-lived cookie of its own (double submit). Both cookies are
``SameSite=Strict`` besides.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import Forbidden
from gateway.onboarding.tokens import Principal, authenticate, status_of

COOKIE = "gw_session"
LOGIN_COOKIE = "gw_signin"
PATH = "/ui"
LIFETIME = timedelta(hours=8)
LOGIN_LIFETIME = timedelta(minutes=30)
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: str

    @property
    def role(self) -> str:
        return self.principal.role

    def may(self, *roles: str) -> bool:
        return self.role == "admin" or self.role in roles


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_of(secret: str) -> str:
    return hmac.new(secret.encode(), b"dashboard csrf", hashlib.sha256).hexdigest()


def secure(request: web.Request) -> bool:
    """Served over TLS, directly or behind a proxy that says so."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name, value, max_age=age, path=PATH, httponly=True, secure=secure(request), samesite="Strict"
    )


async def sign_in(gw: Gateway, token: str) -> tuple[str, Session]:
    """Check ``token`` as the API does; open a session; return its secret and itself."""
    principal = await authenticate(gw, f"Bearer {token.strip()}")
    now = gw.now()
    async with gw.db.transaction() as tx:
        token_expiry = await tx.fetchval("SELECT expires_at FROM api_tokens WHERE id = ?",
                                         (principal.token_id,))  # fmt: skip
        expires = min(isotime(now + LIFETIME), token_expiry or isotime(now + LIFETIME))
        await tx.execute("DELETE FROM ui_sessions WHERE expires_at <= ?", (isotime(now),))
        secret = secrets.token_urlsafe(32)
        await tx.execute(
            "INSERT INTO ui_sessions (secret_hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (_hash(secret), principal.token_id, isotime(now), expires),
        )
    return secret, Session(principal, csrf_of(secret), expires)


async def current(gw: Gateway, secret: str | None) -> Session | None:
    """The session of this cookie, if it and its token are both still good (a cookie
    that is not ASCII, as no session's is, is none)."""
    if not secret or not secret.isascii():
        return None
    async with gw.db.transaction() as tx:
        row = await tx.fetchone(
            "SELECT s.token_id, s.expires_at, t.role, t.revoked_at, t.expires_at AS token_expires"
            " FROM ui_sessions s JOIN api_tokens t ON t.id = s.token_id WHERE s.secret_hash = ?",
            (_hash(secret),),
        )
    now = isotime(gw.now())
    if row is None or row["expires_at"] <= now:
        return None
    if status_of({"revoked_at": row["revoked_at"], "expires_at": row["token_expires"]}, now) != "active":
        return None
    return Session(Principal(row["token_id"], row["role"]), csrf_of(secret), row["expires_at"])


async def sign_out(gw: Gateway, secret: str | None) -> None:
    if secret and secret.isascii():
        async with gw.db.transaction() as tx:
            await tx.execute("DELETE FROM ui_sessions WHERE secret_hash = ?", (_hash(secret),))


def check_csrf(expected: str, given: object) -> None:
    """403 unless the form's token is the one this session (or sign-in form) was given.
    Tokens are ASCII; any other text (which `hmac.compare_digest` refuses with a
    TypeError) is a wrong one."""
    given = given if isinstance(given, str) and given.isascii() else ""
    if not given or not expected.isascii() or not hmac.compare_digest(expected, given):
        raise Forbidden("the form's security token is missing or stale: reload the page and try again")


def seconds_until(expires_at: str, now: datetime) -> int:
    return max(int((datetime.fromisoformat(expires_at.replace("Z", "+00:00")) - now).total_seconds()), 0)
