"""Verifying Standard Webhooks signatures on partner callbacks.

Partners sign with any Standard Webhooks library: ``webhook-id``, ``webhook-timestamp``
and ``webhook-signature`` headers over ``"{id}.{timestamp}.{body}"``; scheme ``v1`` is
HMAC-SHA256 with a shared ``whsec_`` secret, ``v1a`` is Ed25519 with the partner's key.
Several signatures may be sent at once (key rotation); one valid one is enough.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from multidict import MultiMapping

from gateway.errors import InvalidInput, Unauthorized

TOLERANCE_SECONDS = 5 * 60
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def verify(
    headers: MultiMapping[str],
    body: bytes,
    *,
    secrets: Sequence[bytes],
    public_keys: Sequence[Ed25519PublicKey],
    now: float,
) -> str:
    """Check one callback; return its ``webhook-id``. Raise InvalidInput or Unauthorized."""
    msg_id, stamp, signatures = (_one(headers, name) for name in HEADERS)
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", stamp),
            ("webhook-signature", signatures),
        )
        if not value
    ]
    if missing:
        raise Unauthorized(f"missing header {', '.join(missing)} (sign with a Standard Webhooks library)")
    if len(msg_id) > 200 or not msg_id.isprintable():
        raise InvalidInput("webhook-id must be at most 200 printable characters")
    # isdigit alone lets other scripts' digits through ("²" even fails int()).
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise InvalidInput("webhook-timestamp must be integer seconds since the epoch, in ASCII digits")
    skew = now - int(stamp)
    if abs(skew) > TOLERANCE_SECONDS:
        which = "old" if skew > 0 else "far in the future"
        raise Unauthorized(
            f"webhook-timestamp is {which} ({int(abs(skew))} s; tolerance {TOLERANCE_SECONDS} s)"
        )
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    for item in signatures.split():
        scheme, _, encoded = item.partition(",")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if scheme == "v1" and any(_hmac_ok(secret, signed, signature) for secret in secrets):
            return msg_id
        if scheme == "v1a" and any(_ed25519_ok(key, signed, signature) for key in public_keys):
            return msg_id
    raise Unauthorized("no valid signature (schemes v1 and v1a; check the partner's secret or key)")


def _one(headers: MultiMapping[str], name: str) -> str:
    """The header's value ("" if absent); 400 if sent more than once, as which one was
    signed, and which one a proxy or a library in between would pick, is anyone's guess."""
    values = headers.getall(name, [])
    if len(values) > 1:
        raise InvalidInput(f"{name} sent {len(values)} times; send each webhook header once")
    return values[0] if values else ""


def _hmac_ok(secret: bytes, signed: bytes, signature: bytes) -> bool:
    expected = hmac.new(secret, signed, hashlib.sha256).digest()
    return hmac.compare_digest(expected, signature)


def _ed25519_ok(key: Ed25519PublicKey, signed: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        return False
    return True
