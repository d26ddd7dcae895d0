"""Getting checkpoints cosigned by witnesses (C2SP tlog-witness), off the append path.

The witnesses are listed in gateway.toml (``[[audit_witnesses]]``: URL and verifier
key). Only the latest checkpoint is ever submitted: a witness checks a consistency proof
from the size it cosigned last, so the checkpoints signed in between need no visit of
their own, however fast the log grows. Each witness's verified cosignature is stored
beside the checkpoint (`log.store_cosignature`) and served and exported with its note.

A witness that is down or refuses costs the log nothing: the checkpoint stands, signed
by the bank, and the next round tries again. A refusal (409 at the witness's own size,
422) says the log is not the one the witness saw before, and is logged as such.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from gateway.audit import log, proofs
from gateway.audit.checkpoint import CheckpointError
from gateway.audit.cosignature import Witness, cosigned_by
from gateway.clock import isotime, utcnow
from gateway.config import WitnessSettings
from gateway.errors import ConfigError
from gateway.httpbody import read_capped
from gateway.storage import Database

logger = logging.getLogger(__name__)
#: Seconds between two looks at the latest checkpoint while serving.
PERIOD = 2.0
#: Seconds a witness has to answer one submission.
TIMEOUT = 10.0
SIZE_TYPE = "text/x.tlog.size"
#: The most of a witness's answer read: a cosignature or a size is one short line.
ANSWER_BYTES = 1 << 16


@dataclass
class Target:
    """One witness as the log submits to it; `size` is the size it last cosigned, as far
    as this process knows (None: not looked up yet)."""

    url: str
    witness: Witness
    size: int | None = None

    @property
    def name(self) -> str:
        return self.witness.fingerprint


@dataclass(frozen=True)
class Outcome:
    witness: str
    ok: bool
    size: int
    detail: str


def configured(entries: Sequence[WitnessSettings]) -> list[Target]:
    """The targets of gateway.toml's ``audit_witnesses``."""
    targets = []
    for number, entry in enumerate(entries, start=1):
        try:
            targets.append(Target(entry.url, Witness.parse(entry.vkey)))
        except CheckpointError as exc:
            raise ConfigError(f"audit_witnesses entry {number} ({entry.url}): vkey: {exc}") from None
    return targets


async def _request_body(db: Database, old: int, record: log.CheckpointRecord) -> str:
    """``old N``, the consistency proof from N to the checkpoint, a blank line, the note."""
    hashes: list[bytes] = []
    if 0 < old < record.size:
        hashes = (await proofs.consistency_proof(db, old, record.size)).proof
    lines = "".join(base64.b64encode(node).decode("ascii") + "\n" for node in hashes)
    return f"old {old}\n{lines}\n{record.note}"


async def _cosigned_size(db: Database, target: Target) -> int:
    async with db.transaction() as tx:
        size = await tx.fetchval(
            "SELECT MAX(size) FROM audit_cosignatures WHERE witness = ?", (target.name,)
        )
    return int(size or 0)


async def _keep(db: Database, target: Target, record: log.CheckpointRecord, answer: str) -> bool:
    """Store the answer's cosignature line by this witness, if one verifies."""
    for line in answer.splitlines(keepends=True):
        try:
            good = target.name in cosigned_by(record.note + line, [target.witness])
        except CheckpointError:
            good = False
        if good:
            async with db.transaction() as tx:
                await log.store_cosignature(tx, record.size, target.name, line, isotime(utcnow()))
            return True
    return False


async def submit(db: Database, target: Target, session: aiohttp.ClientSession) -> Outcome:
    """Submit the latest checkpoint to one witness, unless it already cosigned it."""
    async with db.transaction() as tx:
        record = await log.latest_checkpoint(tx)
    if record is None:
        return Outcome(target.name, True, 0, "no checkpoint yet")
    if target.size is None:
        target.size = await _cosigned_size(db, target)
    if target.size == record.size:
        return Outcome(target.name, True, record.size, "already cosigned")
    # On the disk before a witness sees it: a witness that cosigned a checkpoint the log
    # then lost to a power cut would see the log's next one at that size as a fork.
    await db.sync()
    old = min(target.size, record.size)
    for _ in range(2):  # a 409 tells the witness's size: one more try from there
        body = await _request_body(db, old, record)
        url = target.url.rstrip("/") + "/add-checkpoint"
        async with session.post(url, data=body.encode(), headers={"Content-Type": "text/plain"}) as resp:
            data, more = await read_capped(resp, ANSWER_BYTES)
            status, answer, kind = resp.status, data.decode("utf-8", "replace"), resp.content_type
        if more:
            target.size = None
            why = f"answered with over {ANSWER_BYTES} bytes (HTTP {status}), not a witness's answer"
            return Outcome(target.name, False, record.size, why)
        if status == 200:
            if not await _keep(db, target, record, answer):
                return Outcome(target.name, False, record.size, "answered without a valid cosignature")
            target.size = record.size
            return Outcome(target.name, True, record.size, "cosigned")
        theirs = _their_size(status, kind, answer)
        if theirs is None or theirs == old or theirs > record.size:
            target.size = None  # look it up again next time
            why = _refusal(status, answer, theirs, old, record.size)
            return Outcome(target.name, False, record.size, why)
        old = theirs
    return Outcome(target.name, False, record.size, "the witness's size kept changing")


def _their_size(status: int, kind: str, answer: str) -> int | None:
    if status != 409 or kind != SIZE_TYPE or not answer.strip().isdigit():
        return None
    return int(answer.strip())


def _refusal(status: int, answer: str, theirs: int | None, old: int, size: int) -> str:
    if theirs is not None and theirs > size:
        return (
            f"the witness has cosigned size {theirs}, beyond this log's latest checkpoint ({size}): "
            "another instance is ahead, or this log was rolled back"
        )
    if theirs is not None and theirs == old:
        return (
            f"refused the checkpoint at size {size} (HTTP 409): the witness cosigned another root at "
            f"size {old}: this log is not the one it saw (a fork)"
        )
    text = " ".join(answer.split())[:200]
    return f"refused the checkpoint at size {size} (HTTP {status}): {text}"


async def submit_all(db: Database, targets: Sequence[Target]) -> list[Outcome]:
    """One round: the latest checkpoint to every witness, concurrently."""
    if not targets:
        return []
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        done = await asyncio.gather(*(submit(db, t, session) for t in targets), return_exceptions=True)
    outcomes = []
    for target, result in zip(targets, done, strict=True):
        if isinstance(result, BaseException):
            target.size = None
            result = Outcome(target.name, False, 0, f"unreachable ({type(result).__name__})")
        outcomes.append(result)
    return outcomes


async def run(db: Database, targets: Sequence[Target], stop: asyncio.Event, period: float = PERIOD) -> None:
    """Until `stop` is set, every `period` seconds submit the latest checkpoint to the
    witnesses that have not cosigned it; failures are logged and retried next round."""
    if not targets:
        return
    while not stop.is_set():
        try:
            for outcome in await submit_all(db, targets):
                if not outcome.ok:
                    logger.warning("audit witness %s: %s", outcome.witness, outcome.detail)
        except Exception as exc:  # a locked database: next round
            logger.warning("audit witnesses: no submission this round (%s)", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)
