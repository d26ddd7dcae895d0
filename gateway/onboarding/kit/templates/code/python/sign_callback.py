"""Sign a status report for the bank (Standard Webhooks) and send it.

v1 (HMAC-SHA256 with the whsec_ secret the bank gave you):
    pip install "standardwebhooks>=1.0,<2"
v1a (Ed25519 with your key, whose public half is in the key set the bank holds):
    pip install "cryptography>=42"

    python sign_callback.py v1 SECRET_FILE BODY_FILE [URL]
    python sign_callback.py v1a PRIVATE_ED25519_JWK_FILE BODY_FILE [URL]

Without URL it prints the headers; with URL it POSTs the body and prints the answer.
"""

import base64
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks.webhooks import Webhook


def sign_v1(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """"v1,<base64 HMAC-SHA256>" over "{id}.{timestamp}.{body}"."""
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)


def sign_v1a(private_jwk: dict, msg_id: str, timestamp: int, body: str) -> str:
    """"v1a,<base64 Ed25519>" over "{id}.{timestamp}.{body}"."""
    seed = base64.urlsafe_b64decode(private_jwk["d"] + "=" * (-len(private_jwk["d"]) % 4))
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(f"{msg_id}.{timestamp}.{body}".encode())
    return "v1a," + base64.b64encode(signature).decode()


def headers(msg_id: str, timestamp: int, signature: str) -> dict:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,  # unique per event; a retry of the same event reuses it
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def send(url: str, body: str, signed: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body.encode(), headers=signed, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:  # a problem document says what is wrong
        return refused.code, json.load(refused)


def main(scheme: str, credential_file: str, body_file: str, url: str | None = None) -> None:
    with open(body_file) as f:
        body = f.read()
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    with open(credential_file) as f:
        credential = f.read().strip()
    if scheme == "v1":
        signature = sign_v1(credential, msg_id, timestamp, body)
    else:
        signature = sign_v1a(json.loads(credential), msg_id, timestamp, body)
    signed = headers(msg_id, timestamp, signature)
    print(json.dumps(send(url, body, signed) if url else signed, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:5])
