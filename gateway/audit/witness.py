"""A witness (C2SP tlog-witness): cosigns a log's checkpoints once it has checked that
each one extends the last it saw, so that the log cannot show two histories.

It runs apart from the gateway (``gateway witness serve --dir DIR``), ideally on a host
and under a key that the bank's operators do not control, and needs nothing of the
gateway's: no database, settings or secrets. Its directory holds::

    witness.pem    the witness's Ed25519 private key (0600)
    witness.vkey   its verifier key, name+id+base64(0x04 || key): give it to the bank
                   (for gateway.toml) and to the auditors (for --witness)
    logs           the verifier keys of the logs it witnesses, one a line
    witness.db     SQLite: the latest checkpoint cosigned per log, and every refusal
                   with the request that caused it (evidence of a rollback or fork)

`add_checkpoint` follows the spec: 404 for an unknown origin, 403 for a checkpoint no
trusted key signed, 400 for a malformed request or an old size beyond the checkpoint,
409 (with the witness's size, ``text/x.tlog.size``) when the old size is not the one it
cosigned last or the same size has another root, 422 when the consistency proof fails.
The check and the update of the stored size are one SQLite transaction.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import merkle, proofcheck
from gateway.audit.checkpoint import Checkpoint, CheckpointError, parse_and_verify, parse_vkey
from gateway.audit.cosignature import Witness, cosign, witness_vkey
from gateway.clock import isotime, utcnow
from gateway.errors import ConfigError
from gateway.onboarding.files import write_private, write_public

logger = logging.getLogger(__name__)
KEY, VKEY, LOGS, STORE = "witness.pem", "witness.vkey", "logs", "witness.db"
#: The spec's bound on consistency proof lines.
MAX_PROOF = 63
MAX_BODY = 64 * 1024
SIZE_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS checkpoints (origin TEXT PRIMARY KEY, size INTEGER NOT NULL,"
    " root BLOB NOT NULL, note TEXT NOT NULL, updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refusals (at TEXT NOT NULL, origin TEXT NOT NULL, status INTEGER NOT NULL,"
    " reason TEXT NOT NULL, request TEXT NOT NULL)",
)


class Refused(Exception):
    """An add-checkpoint request refused with `status`; `size` for a 409 that tells it."""

    def __init__(self, status: int, reason: str, size: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.size = size


def init(directory: Path, name: str, logs: tuple[str, ...]) -> str:
    """Make (or extend) a witness directory: its key on first use, the logs it trusts.
    Returns the witness's verifier key."""
    for vkey in logs:
        try:
            parse_vkey(vkey)
        except CheckpointError as exc:
            raise ConfigError(f"--log {vkey[:60]!r}: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (directory / KEY).exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(directory / KEY, pem)
        write_public(directory / VKEY, (witness_vkey(name, key.public_key()) + "\n").encode())
    vkey = (directory / VKEY).read_text(encoding="utf-8").strip()
    if Witness.parse(vkey).name != name:
        raise ConfigError(f"{directory} is the witness {Witness.parse(vkey).name!r}, not {name!r}")
    known = set(_read_logs(directory))
    with (directory / LOGS).open("a", encoding="utf-8") as out:
        for log_vkey in logs:
            if log_vkey not in known:
                out.write(log_vkey + "\n")
                known.add(log_vkey)
    return vkey


def _read_logs(directory: Path) -> list[str]:
    path = directory / LOGS
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@dataclass
class WitnessService:
    """What `add_checkpoint` needs: the key, the trusted logs by origin, the store."""

    name: str
    key: Ed25519PrivateKey
    logs: dict[str, str]
    store: Path

    @classmethod
    def open(cls, directory: Path) -> WitnessService:
        try:
            pem = (directory / KEY).read_bytes()
            vkey = (directory / VKEY).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{directory} is not a witness directory: run `gateway witness init`") from None
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{directory / KEY} is not an Ed25519 key")
        logs = {parse_vkey(v)[0]: v for v in _read_logs(directory)}
        with sqlite3.connect(directory / STORE) as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
        conn.close()
        return cls(Witness.parse(vkey).name, key, logs, directory / STORE)

    @property
    def vkey(self) -> str:
        return witness_vkey(self.name, self.key.public_key())

    def add_checkpoint(self, body: bytes) -> str:
        """Check one request; the cosignature line, or Refused."""
        old, proof, note = parse_request(body)
        cp = self._verified(note)
        if cp.size < old:
            raise Refused(400, f"old size {old} is beyond the checkpoint's size {cp.size}")
        if old == 0 and proof:
            raise Refused(400, "a request from old size 0 carries no proof")
        conn = sqlite3.connect(self.store, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # the check and the update are one step
            row = conn.execute("SELECT size, root FROM checkpoints WHERE origin = ?", (cp.origin,)).fetchone()
            _check_extends(row, old, proof, cp)
            conn.execute(
                "INSERT INTO checkpoints (origin, size, root, note, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root,"
                " note = excluded.note, updated_at = excluded.updated_at",
                (cp.origin, cp.size, cp.root, note, isotime(utcnow())),
            )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
        return cosign(cp.text(), self.name, self.key, int(time.time()))

    def _verified(self, note: str) -> Checkpoint:
        origin = note.split("\n", 1)[0]
        vkey = self.logs.get(origin)
        if vkey is None:
            raise Refused(404, f"unknown log {origin[:100]!r}")
        try:
            return parse_and_verify(note, vkey)
        except CheckpointError as exc:
            raise Refused(403, f"not signed by the log's key: {exc}") from None

    def record_refusal(self, refused: Refused, body: bytes) -> None:
        """Keep a refused request: a rollback or fork attempt is evidence to show."""
        text = body.decode("utf-8", "replace")
        origin = text.partition("\n\n")[2].split("\n", 1)[0][:200]
        with sqlite3.connect(self.store) as conn:
            conn.execute(
                "INSERT INTO refusals (at, origin, status, reason, request) VALUES (?, ?, ?, ?, ?)",
                (isotime(utcnow()), origin, refused.status, refused.reason, text),
            )
        conn.close()


def parse_request(body: bytes) -> tuple[int, list[bytes], str]:
    """``old N``, up to 63 base64 proof hashes, an empty line, a checkpoint note."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the request is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or not _OLD.fullmatch(lines[0]):
        raise Refused(400, "the request does not start with 'old <size>' and a proof, then an empty line")
    if len(lines) - 1 > MAX_PROOF:
        raise Refused(400, f"more than {MAX_PROOF} proof lines")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            node = b""
        if len(node) != merkle.HASH_SIZE:
            raise Refused(400, f"proof line {line[:60]!r} is not a base64 SHA-256 hash")
        proof.append(node)
    return int(lines[0][4:]), proof, note


def _check_extends(row: tuple[int, bytes] | None, old: int, proof: list[bytes], cp: Checkpoint) -> None:
    """The spec's checks against the stored (size, root) of the log; Refused if any fails."""
    size, root = (row[0], bytes(row[1])) if row else (0, b"")
    if old != size:
        raise Refused(409, f"old size {old} is not the size last cosigned ({size})", size)
    if old == cp.size:
        if root != cp.root:
            raise Refused(409, f"a checkpoint of size {old} with another root was cosigned: a fork", size)
        return
    if old == 0:
        return  # the first checkpoint seen of this log
    try:
        proofcheck.verify_consistency(old, cp.size, proof, root, cp.root)
    except proofcheck.ProofError as exc:
        raise Refused(422, f"not consistent with the checkpoint cosigned at size {old}: {exc}") from None


def create_app(service: WitnessService) -> web.Application:
    """The witness's HTTP interface: ``POST /add-checkpoint``."""

    async def add_checkpoint(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            line = service.add_checkpoint(body)
        except Refused as refused:
            logger.warning("refused a checkpoint (%d): %s", refused.status, refused.reason)
            service.record_refusal(refused, body)
            if refused.size is not None:
                return web.Response(status=409, text=f"{refused.size}\n", content_type=SIZE_TYPE)
            return web.Response(status=refused.status, text=refused.reason + "\n")
        return web.Response(text=line, content_type="text/plain")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/add-checkpoint", add_checkpoint)
    return app
