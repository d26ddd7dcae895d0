"""Verifying Standard Webhooks signatures on partner callbacks.

Partners sign with any Standard Webhooks library: ``webhook-id``, ``webhook-timestamp``
and ``webhook-signature`` headers over ``"{id}.{timestamp}.{body}"``; scheme ``v1`` is
HMAC-SHA256 with a shared ``whsec_`` secret, ``v1a`` is Ed25519 with the partner's key.
Several signatures may be sent at once (key rotation); one valid one is enough.

Everything here runs before anyone is authenticated, so its cost is bounded by the
request, not by what the caller asks for: at most `MOST_SIGNATURES` signatures are
taken, one whose length is not that of its scheme is skipped unchecked, and each
secret's HMAC is computed once however many ``v1`` signatures came. The check is done
in two steps, `read` (the headers' form and freshness, the same for every partner id)
and `verify`, which is given the partner's secrets and keys, or none for an id that is
no partner's: then it verifies against stand-ins nobody holds, so that an unknown
partner id costs what a wrong signature costs and gets the same answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from multidict import MultiMapping

from gateway.errors import InvalidInput, Unauthorized

TOLERANCE_SECONDS = 5 * 60
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: Signatures taken in one ``webhook-signature`` header: room for a rotation or two.
MOST_SIGNATURES = 8
#: The length of a signature of each scheme, decoded.
SIGNATURE_BYTES = {"v1": 32, "v1a": 64}
#: Verified against when there is no secret or no key: nobody holds them.
_NOBODYS_SECRET = os.urandom(32)
_NOBODYS_KEY = Ed25519PrivateKey.generate().public_key()
#: Partners read it: it speaks to them, and says nothing of whether the partner id exists.
REFUSED = (
    "no valid signature (schemes v1 and v1a): sign \"{webhook-id}.{webhook-timestamp}.{body}\" "
    "with the whsec_ secret the bank gave you, or with the Ed25519 key in the key set you sent it"
)


@dataclass(frozen=True)
class Signed:
    """A callback's signature headers, of the right form and fresh, not yet verified."""

    msg_id: str
    stamp: str
    v1: tuple[bytes, ...]
    """The ``v1`` signatures of 32 bytes."""
    v1a: tuple[bytes, ...]
    """The ``v1a`` signatures of 64 bytes."""


def read(headers: MultiMapping[str], *, now: float) -> Signed:
    """The signature headers of a callback. 400 if one is repeated or malformed (or holds
    more than `MOST_SIGNATURES` signatures), 401 if one is missing or the timestamp is
    stale: answers that depend on the headers alone, whichever partner id is named."""
    msg_id, stamp, signatures = (_one(headers, name) for name in HEADERS)
    missing = [name for name, value in zip(HEADERS, (msg_id, stamp, signatures), strict=True) if not value]
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
    items = signatures.split()
    if len(items) > MOST_SIGNATURES:
        raise InvalidInput(
            f"webhook-signature holds {len(items)} signatures; at most {MOST_SIGNATURES} are taken"
        )
    return Signed(msg_id, stamp, _decoded(items, "v1"), _decoded(items, "v1a"))


def verify(
    signed: Signed, body: bytes, *, secrets: Sequence[bytes], public_keys: Sequence[Ed25519PublicKey]
) -> str:
    """``signed.msg_id`` if one of the signatures is valid for ``body``; 401 otherwise.
    No secrets (or no keys): the stand-in nobody holds is tried instead, at the same cost."""
    prefix = signed_content(signed.msg_id, signed.stamp, b"")
    if signed.v1:
        for secret in secrets or (_NOBODYS_SECRET,):
            mac = hmac.new(secret, prefix, hashlib.sha256)
            mac.update(body)
            expected = mac.digest()
            if any(hmac.compare_digest(expected, signature) for signature in signed.v1):
                return signed.msg_id
    if signed.v1a:
        message = prefix + body
        for key in public_keys or (_NOBODYS_KEY,):
            if any(_ed25519_ok(key, message, signature) for signature in signed.v1a):
                return signed.msg_id
    raise Unauthorized(REFUSED)


def signed_content(msg_id: str, stamp: str, body: bytes) -> bytes:
    """What a signature covers: ``"{id}.{timestamp}.{body}"``."""
    return f"{msg_id}.{stamp}.".encode() + body


def sign_v1(secret: bytes, msg_id: str, stamp: str, body: bytes) -> str:
    """A ``v1`` signature as a partner makes it (the kit's sample callbacks)."""
    mac = hmac.new(secret, signed_content(msg_id, stamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def sign_v1a(key: Ed25519PrivateKey, msg_id: str, stamp: str, body: bytes) -> str:
    """A ``v1a`` signature as a partner makes it (the kit's sample callbacks)."""
    return "v1a," + base64.b64encode(key.sign(signed_content(msg_id, stamp, body))).decode("ascii")


def _one(headers: MultiMapping[str], name: str) -> str:
    """The header's value ("" if absent); 400 if sent more than once, as which one was
    signed, and which one a proxy or a library in between would pick, is anyone's guess."""
    values = headers.getall(name, [])
    if len(values) > 1:
        raise InvalidInput(f"{name} sent {len(values)} times; send each webhook header once")
    return values[0] if values else ""


def _decoded(items: list[str], scheme: str) -> tuple[bytes, ...]:
    """The signatures of ``scheme`` that decode to its length; the others cannot match."""
    out = []
    for item in items:
        name, _, encoded = item.partition(",")
        if name != scheme:
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if len(signature) == SIGNATURE_BYTES[scheme]:
            out.append(signature)
    return tuple(out)


def _ed25519_ok(key: Ed25519PublicKey, signed: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        return False
    return True
