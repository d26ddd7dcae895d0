"""Who signs the audit log's checkpoints, under which name, and where the key is published.

The origin (first line of every checkpoint) and the signed-note key name are the same
string, ``<bank_id>/gateway-audit``: C2SP tlog-checkpoint asks for a schema-less URL-like
origin unique to the log, and using it as the key name lets an auditor check that a note
signed by the key is about this log and no other. The verifier key is published next to
the private key as ``keys/bank/audit-log.vkey`` (golang.org/x/mod/sumdb/note format), so
operators can hand it to auditors out of band.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gateway.audit.checkpoint import Checkpoint, NoteKey, format_vkey, key_id, parse_vkey, sign_checkpoint
from gateway.audit.errors import AuditError
from gateway.onboarding.files import write_public
from gateway.onboarding.keys import KeyStore

#: A checkpoint is signed whenever an append makes the size cross a multiple of this.
DEFAULT_CHECKPOINT_EVERY = 1000
VKEY_NAME = "audit-log.vkey"


def origin_for(bank_id: str) -> str:
    return f"{bank_id}/gateway-audit"


def vkey_path(keys: KeyStore) -> Path:
    return keys.bank / VKEY_NAME


def publish_vkey(keys: KeyStore, origin: str, key: NoteKey) -> str:
    """The verifier key of the audit log key; written to ``keys/bank/audit-log.vkey`` if
    missing. A published key that no longer matches the private key is refused rather
    than silently replaced, because auditors may have pinned it."""
    vkey = format_vkey(origin, key.public_key())
    path = vkey_path(keys)
    if path.exists():
        published = path.read_text(encoding="utf-8").strip()
        if published != vkey:
            raise AuditError(
                f"{path} does not match {keys.bank / 'audit-log.pem'} (or bank_id changed): "
                "restore the key that signed the log, or move the stale .vkey away"
            )
        return vkey
    write_public(path, (vkey + "\n").encode())
    return vkey


def fingerprint(vkey: str) -> str:
    """``<name>+<key id>``: short enough to read over the phone when pinning a key."""
    name, public_key = parse_vkey(vkey)
    return f"{name}+{key_id(name, public_key).hex()}"


@dataclass(frozen=True)
class LogSigner:
    """Signs checkpoints of one log; handed to `log.append` so that crossing a multiple
    of `every` entries signs a checkpoint in the same transaction as the entries."""

    origin: str
    private_key: NoteKey = field(repr=False)
    every: int = DEFAULT_CHECKPOINT_EVERY
    clock: Callable[[], datetime] | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise AuditError(f"audit checkpoint interval must be at least 1, got {self.every}")

    @property
    def vkey(self) -> str:
        return format_vkey(self.origin, self.private_key.public_key())

    def sign(self, size: int, root: bytes) -> str:
        return sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, self.private_key)


def signer_for(
    bank_id: str,
    keys: KeyStore,
    key: NoteKey,
    every: int = DEFAULT_CHECKPOINT_EVERY,
    clock: Callable[[], datetime] | None = None,
) -> LogSigner:
    """The workspace's checkpoint signer, signing with ``key`` (from the key custody);
    publishes the verifier key in ``keys/bank/`` on first use."""
    origin = origin_for(bank_id)
    publish_vkey(keys, origin, key)
    return LogSigner(origin, key, every, clock)
