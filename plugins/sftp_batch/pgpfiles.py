"""The files exchanged with a partner that takes only OpenPGP (profile ``sealing =
"openpgp"``, ``[adapter_config.openpgp]`` naming its key).

A batch ``B`` is three files, uploaded in this order, each under a temporary name first::

    B.jsonl.pgp             one OpenPGP message (binary): the records, one JSON line per
                            package {"package_id", "case_ref", "purpose", "package"}, signed
                            by the bank's OpenPGP key and encrypted to the partner's
    B.manifest.json.asc     the bank's armored detached OpenPGP signature over the manifest
    B.manifest.json         {"batch_id", "partner", "created_at", "format": "openpgp",
                             "file", "count", "sha256", "signer", "packages": [{"package_id"}]}

``package`` is the package as the bank signed it (``iss``, ``aud``, ``iat``, ``exp``,
``jti``, ``purpose``, ``schema``, ``case_ref``, ``data``): ``data`` holds the minimized
fields of the profile's policy and nothing else; a recall notice is a record of purpose
``recall``. The manifest is in clear (no personal data: ids, counts, digests of the
encrypted file), so the partner checks it before decrypting anything.

A status file ``NAME.jsonl`` (the shape `files.status_events` reads) comes with
``NAME.jsonl.asc``: the partner's armored detached signature (``gpg --armor
--detach-sign``), verified with the key its profile pins before a byte is parsed.
"""

from __future__ import annotations

import json
from datetime import datetime

import pysequoia

from gateway.clock import isotime
from gateway.onboarding import openpgp
from gateway.plugin.adapter import OutboundPackage
from plugins.sftp_batch.files import DATA, MANIFEST, Batch, sha256

ENCRYPTED = DATA + ".pgp"
SIGNATURE = MANIFEST + ".asc"
#: Appended to a status file's name: its detached signature.
STATUS_SIGNATURE = ".asc"


def build_batch(
    batch_id: str,
    partner_id: str,
    packages: list[OutboundPackage],
    bank: openpgp.BankKey,
    recipient: pysequoia.Cert,
    now: datetime,
) -> Batch:
    """The batch's files: the encrypted records, the manifest and its signature."""
    records = [
        {"package_id": p.package_id, "case_ref": p.case_ref, "purpose": p.purpose, "package": p.claims}
        for p in packages
    ]
    lines = (json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records)
    plain = "".join(lines).encode()
    data = openpgp.encrypt_signed(plain, recipient, bank)
    manifest = {
        "batch_id": batch_id,
        "partner": partner_id,
        "created_at": isotime(now),
        "format": "openpgp",
        "file": batch_id + ENCRYPTED,
        "count": len(records),
        "sha256": sha256(data),
        "signer": bank.fingerprint,
        "packages": [{"package_id": r["package_id"]} for r in records],
    }
    manifest_bytes = json.dumps(manifest, indent=1).encode() + b"\n"
    signature = openpgp.sign_detached(manifest_bytes, bank)
    files = (
        (batch_id + ENCRYPTED, data), (batch_id + SIGNATURE, signature), (batch_id + MANIFEST, manifest_bytes)
    )
    return Batch(batch_id, tuple(p.package_id for p in packages), files)
