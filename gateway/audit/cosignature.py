"""Witness cosignatures of checkpoints: C2SP tlog-cosignature, Ed25519 (``cosignature/v1``).

A witness that checked a checkpoint's consistency with everything it saw of the log
before adds a signature line of its own to the note::

    — <witness name> base64(key id || u64 big-endian timestamp || Ed25519 signature)

The key id is SHA-256(name || 0x0A || 0x04 || public key)[:4], and the signed message is
``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint body. A witness's
verifier key is ``<name>+<key id hex>+<base64(0x04 || public key)>``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit.checkpoint import (
    CheckpointError,
    NoteKey,
    format_vkey,
    key_id,
    parse_vkey,
    signature_line,
    split_note,
)

ALG_COSIGNATURE_V1 = 0x04
_MAX_TIMESTAMP = 2**63 - 1


def witness_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    return format_vkey(name, public_key, ALG_COSIGNATURE_V1)


@dataclass(frozen=True)
class Witness:
    """A witness as a verifier knows it: its name and cosigning public key."""

    name: str
    public_key: Ed25519PublicKey
    vkey: str

    @classmethod
    def parse(cls, vkey: str) -> Witness:
        name, public_key = parse_vkey(vkey.strip(), ALG_COSIGNATURE_V1)
        return cls(name, public_key, vkey.strip())

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key, ALG_COSIGNATURE_V1)

    @property
    def fingerprint(self) -> str:
        return f"{self.name}+{self.key_id.hex()}"


def signed_message(body: str, timestamp: int) -> bytes:
    """What a v1 cosignature signs: header, time line, the whole checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosign(body: str, name: str, key: NoteKey, timestamp: int) -> str:
    """The cosignature line of witness `name` on the checkpoint `body`."""
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise CheckpointError(f"cosignature time {timestamp} out of range")
    signature = key.sign(signed_message(body, timestamp))
    blob = key_id(name, key.public_key(), ALG_COSIGNATURE_V1) + struct.pack(">Q", timestamp) + signature
    return signature_line(name, blob)


def cosigned_by(note: str, witnesses: Iterable[Witness]) -> dict[str, int]:
    """The witnesses (by fingerprint) whose cosignature on `note` verifies, with its time.

    Lines by other keys are ignored, as the spec asks; a line by a listed witness that
    does not verify is refused, so a damaged cosignature is never silently dropped."""
    text, signatures = split_note(note)
    wanted = {(w.name, w.key_id): w for w in witnesses}
    found: dict[str, int] = {}
    for name, blob in signatures:
        witness = wanted.get((name, blob[:4]))
        if witness is None:
            continue
        if len(blob) != 4 + 8 + 64:
            raise CheckpointError(f"bad cosignature by {witness.fingerprint}: {len(blob)} bytes")
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        try:
            witness.public_key.verify(blob[12:], signed_message(text, timestamp))
        except InvalidSignature:
            raise CheckpointError(f"bad cosignature by {witness.fingerprint}") from None
        found[witness.fingerprint] = timestamp
    return found


def with_lines(note: str, lines: Iterable[str]) -> str:
    """`note` with more signature lines (cosignatures) after its own, each once."""
    have = set(note.splitlines(keepends=True))
    return note + "".join(line for line in lines if line not in have)
