"""How an HTTP adapter proves itself to a provider: an API key, HTTP Basic, or HMAC.

A profile chooses the mode in ``[adapter_config.auth]`` and names the file holding the
secret, ``secret_file = "partners/NAME.secret"`` in the key store (0600, refused
otherwise): the secret itself is never written in a profile, and a rotation is a new
file content, picked up at the next request.

``api-key``
    ``{header}: {prefix}{secret}`` (``X-API-Key: ...``, or ``Authorization: Bearer ...``).
``basic``
    ``Authorization: Basic base64(username:secret)`` (RFC 7617).
``hmac``
    Three headers: ``X-Key-Id: {key_id}``, ``X-Timestamp: {unix seconds}`` and
    ``{header}: v1={hex HMAC-SHA256(secret, signing string)}`` (``header`` defaults to
    ``X-Signature``), where the signing string is the lines
    ``{timestamp}\\n{METHOD}\\n{path with query}\\n{hex SHA-256 of the body}``. The
    provider recomputes it, and refuses a timestamp more than a few minutes off.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal

from pydantic import Field, model_validator

from gateway.onboarding.keys import KeyStore
from gateway.plugin.adapter import AdapterConfig


class Auth(AdapterConfig):
    mode: Literal["api-key", "basic", "hmac"]
    secret_file: str = Field(description="the secret's file in the key store: partners/NAME.secret (0600)")
    header: str | None = Field(
        default=None, description="api-key: the header (X-API-Key); hmac: the signature header (X-Signature)"
    )
    prefix: str = Field(default="", description="api-key: before the key, e.g. 'Bearer '")
    username: str | None = Field(default=None, description="basic: the user name (an account id)")
    key_id: str | None = Field(default=None, description="hmac: the key's id, sent as X-Key-Id")

    @model_validator(mode="after")
    def _complete(self) -> Auth:
        if self.mode == "basic" and not self.username:
            raise ValueError("mode 'basic' needs username")
        if self.mode == "hmac" and not self.key_id:
            raise ValueError("mode 'hmac' needs key_id")
        if self.prefix and self.mode != "api-key":
            raise ValueError("prefix is for mode 'api-key'")
        return self

    def secret(self, keys: KeyStore) -> bytes:
        """The secret, from its 0600 file (KeyStoreError naming the file otherwise)."""
        return keys.partner_secret(self.secret_file)


def signing_string(timestamp: int, method: str, path: str, body: bytes) -> bytes:
    return f"{timestamp}\n{method.upper()}\n{path}\n{hashlib.sha256(body).hexdigest()}".encode()


def headers(auth: Auth, secret: bytes, method: str, path: str, body: bytes, now: float) -> dict[str, str]:
    """The headers that authenticate one request (``path`` as sent, query included)."""
    if auth.mode == "api-key":
        return {auth.header or "X-API-Key": auth.prefix + secret.decode()}
    if auth.mode == "basic":
        token = base64.b64encode(f"{auth.username}:".encode() + secret).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    stamp = int(now)
    mac = hmac.new(secret, signing_string(stamp, method, path, body), hashlib.sha256).hexdigest()
    signature = auth.header or "X-Signature"
    return {"X-Key-Id": str(auth.key_id), "X-Timestamp": str(stamp), signature: f"v1={mac}"}
