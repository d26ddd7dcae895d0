"""The files exchanged with a file partner: placement batches out, status files in.

A batch ``B`` is three files, uploaded in this order, each under a temporary name first::

    B.jsonl                 one line per package: {"package_id", "case_ref", "purpose", "jwe"}
    B.manifest.json.jws     the bank's detached JWS over the manifest (header..signature)
    B.manifest.json         {"batch_id", "partner", "created_at", "file", "count",
                             "sha256", "packages": [{"package_id", "sha256"}]}

The manifest comes last: a partner takes a batch once its manifest is there, checks the
signature with the bank's published JWKS, the count and the digests, and opens each JWE.

A status file ``NAME.jsonl`` holds one status event per line (the shape of
``schemas/events.py``) plus the partner's ``id`` for it, and comes with
``NAME.jsonl.jws``: a detached JWS (EdDSA) by one of the partner's Ed25519 keys
(``use: sig`` in its key set). A file whose signature does not verify, or with a line
that is not such an object, is refused whole.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.clock import isotime
from gateway.onboarding.custody import PackageSigner
from gateway.placement.seal import sign_detached
from gateway.plugin.adapter import OutboundPackage

DATA, MANIFEST, SIGNATURE = ".jsonl", ".manifest.json", ".manifest.json.jws"
STATUS, STATUS_SIGNATURE = ".jsonl", ".jsonl.jws"


@dataclass(frozen=True)
class Batch:
    batch_id: str
    packages: tuple[str, ...]
    files: tuple[tuple[str, bytes], ...]
    """(name, content) in upload order: the manifest last."""


def new_batch_id(now: datetime) -> str:
    return f"B{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_batch(
    batch_id: str, partner_id: str, packages: list[OutboundPackage], signer: PackageSigner, now: datetime
) -> Batch:
    """The batch's files: the records, the manifest and its signature."""
    records = [
        {"package_id": p.package_id, "case_ref": p.case_ref, "purpose": p.purpose, "jwe": p.sealed}
        for p in packages
    ]
    data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
    manifest = {
        "batch_id": batch_id,
        "partner": partner_id,
        "created_at": isotime(now),
        "file": batch_id + DATA,
        "count": len(records),
        "sha256": sha256(data),
        "packages": [{"package_id": r["package_id"], "sha256": sha256(r["jwe"].encode())} for r in records],
    }
    manifest_bytes = json.dumps(manifest, indent=1).encode() + b"\n"
    signature = sign_detached(manifest_bytes, signer).encode() + b"\n"
    files = (
        (batch_id + DATA, data), (batch_id + SIGNATURE, signature), (batch_id + MANIFEST, manifest_bytes)
    )
    return Batch(batch_id, tuple(p.package_id for p in packages), files)


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_detached(content: bytes, jws: bytes, keys: tuple[Ed25519PublicKey, ...]) -> bool:
    """Whether ``jws`` (``header..signature``, EdDSA) signs ``content`` with one of ``keys``."""
    try:
        protected, payload, signature = jws.decode("ascii").strip().split(".")
        header = json.loads(_unb64url(protected))
        raw = _unb64url(signature)
    except (ValueError, UnicodeDecodeError):
        return False
    if payload or not isinstance(header, dict) or header.get("alg") != "EdDSA" or len(raw) != 64:
        return False
    signing_input = protected.encode() + b"." + _b64url(content)
    for key in keys:
        try:
            key.verify(raw, signing_input)
            return True
        except InvalidSignature:
            continue
    return False


def status_events(content: bytes) -> list[dict[str, Any]]:
    """The events of a status file, each with its ``id``; ValueError naming the line."""
    events = []
    for number, line in enumerate(content.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise ValueError(f"line {number} is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
            raise ValueError(f"line {number} is not an event object with an \"id\"")
        events.append(event)
    return events
