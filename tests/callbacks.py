"""Playing a partner that reports back: signed callbacks with the standardwebhooks package."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks.webhooks import Webhook


def event(case_ref: str, type_: str, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "case_ref": case_ref,
        "occurred_at": (at or datetime.now(UTC)).isoformat(),
        **fields,
    }


def signed_headers(
    secret: str, body: str, *, msg_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }


def ed25519_headers(key: Ed25519PrivateKey, body: str, *, msg_id: str | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(datetime.now(UTC).timestamp()))
    signature = key.sign(f"{msg_id}.{stamp}.{body}".encode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1a," + base64.b64encode(signature).decode(),
        "content-type": "application/json",
    }


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)
