"""Delivery receipts of the Vonage Messages API, as a callback format.

The provider POSTs a JSON status to ``/v1/partners/{id}/callbacks/vonage-messages``
(the profile's ``callback_url``, and ``callback_format = "vonage-messages"``)::

    {"message_uuid": "...", "status": "delivered", "timestamp": "2026-05-01T10:00:03Z",
     "client_ref": "CASE-REF:PACKAGE-ID", "to": "...", "error": {...}}

signed with ``Authorization: Bearer <JWT>``: HS256 with the account's signature secret,
claims ``iat`` and ``payload_hash`` (the hex SHA-256 of the body). The bank keeps that
secret as the partner's webhook secret, ``keys/partners/ID.whsec`` (``whsec_`` and the
secret in base64, one a line: a rotation adds a line). A receipt is taken in once per
message and status. ``delivered`` becomes ``message_delivered``; ``rejected``,
``undeliverable`` and ``failed`` become ``message_failed``; interim statuses
(``submitted``) carry nothing to take in and are acknowledged without being stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from gateway.errors import InvalidInput, Unauthorized
from gateway.inbound.formats import CallbackFormat, Credentials
from gateway.inbound.webhooks import TOLERANCE_SECONDS

REFUSED = "no valid Authorization: Bearer JWT signed with the partner's signature secret"
FAILED = frozenset({"rejected", "undeliverable", "failed"})
#: A JWT longer than this is not the provider's: refused before any work.
MOST_TOKEN = 4096


class VonageReceipts(CallbackFormat):
    name = "vonage-messages"

    def verify(self, headers: Mapping[str, str], body: bytes, credentials: Credentials, now: float) -> str:
        token = headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token or len(token) > MOST_TOKEN:
            raise Unauthorized(REFUSED)
        claims = _claims(token, credentials.secrets)
        expected = hashlib.sha256(body).hexdigest()
        given = claims.get("payload_hash")
        # compare_digest raises on non-ASCII text: such a hash is simply not the body's.
        if not (isinstance(given, str) and given.isascii() and hmac.compare_digest(given, expected)):
            raise Unauthorized("the JWT's payload_hash is not the body's: the body was changed")
        iat = claims.get("iat")
        # Written so that an integer beyond any float (OverflowError) or NaN is refused too.
        fresh = isinstance(iat, int | float) and abs(iat) < 2**53 and abs(now - iat) <= TOLERANCE_SECONDS
        if not fresh:
            raise Unauthorized(f"the JWT's iat is missing or more than {TOLERANCE_SECONDS} s off")
        receipt = _receipt(body)
        return f"vonage:{receipt['message_uuid']}:{receipt['status']}"

    def event_json(self, body: bytes) -> bytes | None:
        receipt = _receipt(body)
        status = receipt["status"]
        if status != "delivered" and status not in FAILED:
            return None
        case_ref, _, package_id = str(receipt.get("client_ref", "")).partition(":")
        event: dict[str, Any] = {
            "case_ref": case_ref, "occurred_at": receipt.get("timestamp"), "package_id": package_id or None,
        }
        if status == "delivered":
            event["type"] = "message_delivered"
        else:
            error = receipt.get("error")
            error = error if isinstance(error, dict) else {}
            reason = " ".join(str(error.get(k, "")) for k in ("title", "detail")).strip()
            event |= {"type": "message_failed", "reason": reason or status}
        return json.dumps(event).encode()


def _claims(token: str, secrets: Any) -> dict[str, Any]:
    for secret in secrets:
        try:
            return dict(jwt.decode(token, OctKey.import_key(secret), algorithms=["HS256"]).claims)
        except (JoseError, ValueError):
            continue
    raise Unauthorized(REFUSED)


def _receipt(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidInput("a receipt is a JSON object", status=422) from None
    keys = ("message_uuid", "status")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in keys):
        raise InvalidInput("a receipt has message_uuid and status", status=422)
    return data
