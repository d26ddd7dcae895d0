"""Playing a partner that reports back: signed callbacks with the standardwebhooks package,
sent as a library sends them or piece by piece; and what the gateway stored of them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks.webhooks import Webhook

from gateway.core import Gateway
from gateway.placement import service as placement
from schemas.case import Case
from tests.helpers import sample_case

URL = "/v1/partners/{}/callbacks"
CASE = Case.model_validate_json(sample_case().read_text())


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


def hmac_signature(secret: str, msg_id: str, stamp: str, body: str) -> str:
    """``v1,...`` over exactly this id, timestamp text and body, for timestamps that no
    library would write."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{stamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def placed_with_secrets(gw: Gateway) -> dict[str, Any]:
    """The sample case placed with the agency and the arbitration body; v1 secrets issued."""
    agency = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    arbitration = await placement.place(gw, CASE, "sz-arbitration", "arbitration", actor="test")
    secrets = {}
    for partner in ("acme-collect", "sz-arbitration"):
        path = gw.keys.add_webhook_secret(partner)
        secrets[partner] = path.read_text().split()[-1]
    return {"agency_ref": agency.case_ref, "arbitration_ref": arbitration.case_ref, "secrets": secrets}


async def post(client: TestClient, partner: str, body: str, headers: Any) -> Any:
    return await client.post(URL.format(partner), data=io.BytesIO(body.encode()), headers=headers)


async def post_in_pieces(
    port: int, path: str, headers: dict[str, str], pieces: list[bytes], *, chunked: bool = False
) -> tuple[int, dict[str, Any]]:
    """POST ``pieces`` over a connection of its own, pausing after each so that the
    server sees the body arrive in parts (with a Content-Length, or chunked without one);
    return the status and the JSON answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {sum(map(len, pieces))}"
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", framing]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    for n, piece in enumerate(pieces, 1):
        last = b"0\r\n\r\n" if chunked and n == len(pieces) else b""
        writer.write(b"%x\r\n%s\r\n%s" % (len(piece), piece, last) if chunked else piece)
        await writer.drain()
        await asyncio.sleep(0.1)
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def counts(gw: Gateway) -> tuple[int, int]:
    """Events and dedupe rows stored."""
    async with gw.db.transaction() as tx:
        return (
            await tx.fetchval("SELECT COUNT(*) FROM events"),
            await tx.fetchval("SELECT COUNT(*) FROM callbacks"),
        )
