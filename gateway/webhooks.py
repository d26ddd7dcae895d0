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
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import InvalidInput, Unauthorized

if TYPE_CHECKING:
    from gateway.keys import KeyStore

TOLERANCE_SECONDS = 5 * 60
#: A key file changed less than this long ago is read again on every use: file times
#: are only as fine as the kernel's clock tick, so a change within the same tick as
#: the cached read would otherwise go unseen.
SETTLE_SECONDS = 2.0

T = TypeVar("T")
_cache: dict[Path, tuple[tuple[int, int, int, int], object]] = {}


def secrets_for(keys: KeyStore, partner_id: str) -> Sequence[bytes]:
    """``keys.webhook_secrets(partner_id)``, read again only when the file changes."""
    return _cached(keys.webhook_secret_path(partner_id), lambda: tuple(keys.webhook_secrets(partner_id)))


def public_keys_for(keys: KeyStore, relative: str | None) -> Sequence[Ed25519PublicKey]:
    """``keys.partner_signature_keys(relative)``, read again only when the file changes."""
    if not relative:
        return ()
    return _cached(keys.root / relative, lambda: tuple(keys.partner_signature_keys(relative)))


def _cached(path: Path, load: Callable[[], T]) -> T:
    """``load()`` of the file at ``path``, kept while the file's inode, size, mtime and
    ctime stay the same (rotation writes a new file and renames it over the old one).
    A missing file, an unreadable one and one changed in the last SETTLE_SECONDS are
    not cached; errors are raised as ``load`` raises them."""
    try:
        st = os.stat(path)
    except OSError:
        return load()
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]  # type: ignore[return-value]
    value = load()
    if time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > SETTLE_SECONDS:
        if len(_cache) >= 1024:
            _cache.clear()
        _cache[path] = (stamp, value)
    return value


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Sequence[bytes],
    public_keys: Sequence[Ed25519PublicKey],
    now: float,
) -> str:
    """Check one callback; return its ``webhook-id``. Raise InvalidInput or Unauthorized."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
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
    if not stamp.isdigit() or len(stamp) > 12:
        raise InvalidInput("webhook-timestamp must be integer seconds since the epoch")
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


def _hmac_ok(secret: bytes, signed: bytes, signature: bytes) -> bool:
    expected = hmac.new(secret, signed, hashlib.sha256).digest()
    return hmac.compare_digest(expected, signature)


def _ed25519_ok(key: Ed25519PublicKey, signed: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        return False
    return True
