"""The auditor's bundle: the whole log in plain files, verifiable with no gateway.

::

    entries.jsonl        one line per entry: {"idx": N, "leaf": "<canonical JSON>"};
                         the leaf string's UTF-8 bytes are exactly what was hashed
    checkpoints/*.note   every signed checkpoint, named by its size (zero-padded)
    audit-log.vkey       the verifier key of the checkpoints (signed-note format)
    jwks.json            the bank's public key set (package signatures)
    README.txt           how to verify

Exporting verifies the log first and refuses one that does not verify (a bundle must
never carry a signature over a changed entry); then it signs a checkpoint, so every
exported entry is covered by a signature and a bundle with entries beyond its last
checkpoint is refused.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.checkpoint import CheckpointError, parse_vkey
from gateway.audit.entrycheck import Progress, Row
from gateway.audit.errors import AuditError, VerificationFailed
from gateway.audit.files import (
    LINE_MOST,
    NOTE_MOST,
    VKEY_MOST,
    LineTooLong,
    capped_lines,
    check_directory,
    open_regular,
    read_text_capped,
)
from gateway.audit.log import CheckpointRecord, checkpoint_now
from gateway.audit.query import checkpoints, stream_entries
from gateway.audit.signer import LogSigner, fingerprint
from gateway.audit.verify import Summary, WitnessPolicy, read_known, start_verifier
from gateway.audit.verifydb import verify_database
from gateway.clock import isotime, utcnow
from gateway.storage import Database

ENTRIES = "entries.jsonl"
CHECKPOINTS = "checkpoints"
VKEY = "audit-log.vkey"
JWKS = "jwks.json"
README = "README.txt"
_BATCH = 10_000

_README = """\
Audit log bundle of {origin}
Exported {exported_at}: {size} entries, {count} signed checkpoints (the latest signed {created_at}).
Checkpoint verifier key: {fingerprint} (full key in {vkey}; compare it with the key
the bank gave you out of band before trusting anything here).

Files
  {entries}  one JSON object per line: {{"idx": N, "leaf": "..."}}; the UTF-8 bytes
                 of "leaf" are the canonical JSON (RFC 8785) of the entry
  {checkpoints}/     C2SP tlog-checkpoint signed notes (Ed25519), one per file
  {vkey}  the checkpoints' verifier key (golang.org/x/mod/sumdb/note format)
  {jwks}      the bank's public JWKS, to check package signatures

To verify
  gateway audit verify-bundle DIR --vkey '<key you got out of band>'
or, without the gateway, the stand-alone script in AUDITING.md (Python, hashlib and
cryptography only). Both recompute the RFC 9162 Merkle root from the leaves and check
it against a checkpoint whose Ed25519 signature they check with the key: the script
against the latest one, verify-bundle against every one, with the consistency between
successive checkpoints, canonical form and the entry schema.
Leaf hash: SHA-256(0x00 || leaf); node hash: SHA-256(0x01 || left || right).
"""


@dataclass(frozen=True)
class Export:
    directory: Path
    size: int
    checkpoints: int
    vkey: str


def _refuse_non_empty(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise AuditError(f"{directory} exists and is not empty: export into a new directory")


async def export_bundle(
    db: Database,
    public_jwks: dict[str, Any],
    signer: LogSigner,
    directory: Path,
    witness: Callable[[CheckpointRecord], Awaitable[object]] | None = None,
) -> Export:
    """Verify the log, sign a checkpoint of it as it is now (and have `witness` get it
    cosigned), then write the bundle into `directory`."""
    _refuse_non_empty(directory)
    vkey = signer.vkey
    try:
        await verify_database(db, vkey)
    except VerificationFailed as exc:
        raise AuditError(f"refusing to export: {exc}") from None
    latest = await checkpoint_now(db, signer)
    if witness is not None:
        await witness(latest)
    signed = [cp for cp in await checkpoints(db) if cp.size <= latest.size]
    exported_at = isotime((signer.clock or utcnow)())
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ENTRIES).open("w", encoding="utf-8", newline="\n") as out:
        async for rows in stream_entries(db):
            for row in rows:
                if row["idx"] >= latest.size:
                    break
                out.write(json.dumps({"idx": row["idx"], "leaf": row["leaf"]}, ensure_ascii=False) + "\n")
            if rows[-1]["idx"] >= latest.size:
                break
    (directory / CHECKPOINTS).mkdir()
    for cp in signed:
        (directory / CHECKPOINTS / f"{cp.size:012d}.note").write_text(cp.note, encoding="utf-8", newline="\n")
    (directory / VKEY).write_text(vkey + "\n", encoding="utf-8")
    (directory / JWKS).write_text(json.dumps(public_jwks, indent=2) + "\n", encoding="utf-8")
    (directory / README).write_text(
        _README.format(
            origin=signer.origin,
            exported_at=exported_at,
            created_at=latest.created_at,
            size=latest.size,
            count=len(signed),
            fingerprint=fingerprint(vkey),
            entries=ENTRIES,
            checkpoints=CHECKPOINTS,
            vkey=VKEY,
            jwks=JWKS,
        ),
        encoding="utf-8",
    )
    return Export(directory, latest.size, len(signed), vkey)


def bundle_vkey(directory: Path) -> str:
    path = directory / VKEY
    try:
        vkey = read_text_capped(path, VKEY_MOST).strip()
        parse_vkey(vkey)
    except FileNotFoundError:
        raise AuditError(f"{path} is missing: is {directory} an audit bundle?") from None
    except CheckpointError as exc:
        raise AuditError(f"{path}: {exc}") from None
    return vkey


def _notes(directory: Path) -> Iterator[tuple[int | None, str]]:
    folder = directory / CHECKPOINTS
    try:
        check_directory(folder)
    except FileNotFoundError:
        raise AuditError(f"{folder} is missing: is {directory} an audit bundle?") from None
    for path in sorted(folder.iterdir()):
        if path.suffix != ".note" or not path.stem.isdigit():
            raise VerificationFailed(f"unexpected file {path.name} among the checkpoints")
        yield int(path.stem), read_text_capped(path, NOTE_MOST)


def _rows(path: Path) -> Iterator[list[Row]]:
    """The entries of entries.jsonl in batches; every line is read capped (a bundle
    comes from outside)."""
    batch: list[Row] = []
    try:
        file = open_regular(path)
    except FileNotFoundError:
        raise AuditError(f"{path} is missing: is {path.parent} an audit bundle?") from None
    with file:
        try:
            for number, line in capped_lines(file):
                batch.append(_row(number, line))
                if len(batch) == _BATCH:
                    yield batch
                    batch = []
        except LineTooLong as exc:
            raise VerificationFailed(
                f"line {exc.number + 1} of {ENTRIES} is longer than {LINE_MOST} bytes", index=exc.number
            ) from None
    yield batch


def _row(number: int, line: bytes) -> Row:
    """One line of entries.jsonl: ``{"idx": N, "leaf": "..."}`` in UTF-8."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationFailed(f"line {number + 1} of {ENTRIES} is not UTF-8", index=number) from None
    try:
        record = json.loads(text)
        index, leaf = record["idx"], record["leaf"]
        if type(index) is not int or type(leaf) is not str or len(record) != 2:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise VerificationFailed(
            f"line {number + 1} of {ENTRIES} is not {{\"idx\": N, \"leaf\": \"...\"}}",
            index=number,
        ) from None
    return (index, leaf.encode("utf-8"), None)


def verify_bundle(
    directory: Path,
    vkey: str | None = None,
    progress: Progress | None = None,
    *,
    known: str | None = None,
    witnesses: WitnessPolicy | None = None,
) -> Summary:
    """`gateway audit verify-bundle`: no database, settings or secrets needed.

    Trusts `vkey` when given (pinned out of band), else the bundle's own key, whose
    fingerprint the summary names so the auditor can compare it. `known`: the note of
    a checkpoint the auditor kept, which the bundle's log must extend; `witnesses`: the
    cosignatures its latest checkpoint must carry.
    """
    if vkey is None:
        vkey = bundle_vkey(directory)
    else:
        try:
            parse_vkey(vkey)
        except CheckpointError as exc:
            raise AuditError(f"--vkey: {exc}") from None
    kept = None if known is None else read_known(known, vkey)
    verifier = start_verifier(vkey, _notes(directory), known=kept, witnesses=witnesses, progress=progress)
    for batch in _rows(directory / ENTRIES):
        verifier.feed(batch)
    return verifier.finish(require_signed=True)
