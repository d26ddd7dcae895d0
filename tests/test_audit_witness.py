"""Witnesses over HTTP on 127.0.0.1 (C2SP tlog-witness): a separate `gateway witness
serve` process cosigns the log's growth, refuses a rollback and a fork, and the
verifiers require its cosignature with --witness."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import witness as witness_service
from gateway.audit.checkpoint import Checkpoint, format_vkey, sign_checkpoint
from gateway.audit.cosignature import Witness, cosigned_by, witness_vkey
from gateway.audit.merkle import consistency_proof, leaf_hash, root_from_leaf_hashes
from tests.helpers import audit_tree_row, invoke, roll_back_audit_log, workspace_sql
from tests.test_audit_known import fails, grow, ok, vkey_of
from tests.test_audit_standalone import extract_script
from tests.test_audit_standalone import run as run_script
from tests.test_serve import free_port

NAME = "witness.test/w1"


class RunningWitness:
    def __init__(self, directory: Path, vkey: str, port: int) -> None:
        self.directory = directory
        self.vkey = vkey
        self.url = f"http://127.0.0.1:{port}"

    def refusals(self) -> list[tuple[int, str]]:
        with sqlite3.connect(self.directory / witness_service.STORE) as conn:
            rows = conn.execute("SELECT status, reason FROM refusals ORDER BY rowid").fetchall()
        conn.close()
        return rows


def start_witness(directory: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "witness", "serve", "--dir", str(directory), "--port", str(port)],
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert line.startswith(f"witness {NAME}+") and f"serving on http://127.0.0.1:{port} " in line, line
    return proc


@pytest.fixture
def witnessed(onboarded: Path, tmp_path: Path) -> Iterator[tuple[Path, RunningWitness]]:
    """The workspace, and a witness of its log in a process of its own, listed in its
    gateway.toml as the operator would."""
    directory = tmp_path / "witness"
    vkey = ok("witness", "init", "--dir", directory, "--name", NAME, "--log", vkey_of(onboarded)).strip()
    port = free_port()
    proc = start_witness(directory, port)
    with (onboarded / "gateway.toml").open("a", encoding="utf-8") as config:
        config.write(f'\n[[audit_witnesses]]\nurl = "http://127.0.0.1:{port}/"\nvkey = "{vkey}"\n')
    try:
        yield onboarded, RunningWitness(directory, vkey, port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()


#: A "witness" that answers every submission with 64 KiB of gzip that inflates to 64 MiB.
HOSTILE = """
import gzip, sys
from aiohttp import web
bomb = gzip.compress(b"0" * (64 << 20), compresslevel=9)
async def add(request):
    await request.read()
    return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
app = web.Application()
app.router.add_post("/add-checkpoint", add)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *_: print("ready", flush=True))
"""


def test_a_witness_answer_is_read_no_further_than_a_witness_would_write(onboarded: Path) -> None:
    """A witness is somebody else's server: an answer past 64 KiB (here a gzip bomb, whose
    Content-Length says 64 KiB) is cut there, not inflated into memory, and the checkpoint
    stands without its cosignature."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", HOSTILE, str(port)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        key = witness_vkey("hostile.test/w", Ed25519PrivateKey.generate().public_key())
        with (onboarded / "gateway.toml").open("a", encoding="utf-8") as config:
            config.write(f'\n[[audit_witnesses]]\nurl = "http://127.0.0.1:{port}/"\nvkey = "{key}"\n')
        grow(onboarded, 2)
        result = invoke("-c", onboarded, "audit", "checkpoint")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    assert result.exit_code == 1
    assert "answered with over 65536 bytes (HTTP 200), not a witness's answer" in result.output
    assert "1 of 1 witnesses did not cosign" in result.output
    assert result.stdout.startswith("example-bank/gateway-audit\n")  # signed by the bank all the same


def cosigners(note: str, vkey: str) -> list[str]:
    return sorted(cosigned_by(note, [Witness.parse(vkey)]))


def test_the_witness_cosigns_the_growth_of_the_log(
    witnessed: tuple[Path, RunningWitness], tmp_path: Path
) -> None:
    ws, witness = witnessed
    fingerprint = Witness.parse(witness.vkey).fingerprint
    grow(ws, 2)
    assert cosigners(ok("-c", ws, "audit", "checkpoint"), witness.vkey) == [fingerprint]
    grow(ws, 3)  # the witness now checks a consistency proof from 6 to 9
    note = ok("-c", ws, "audit", "checkpoint")
    assert note.startswith("example-bank/gateway-audit\n9\n")
    assert cosigners(note, witness.vkey) == [fingerprint]
    pinned = ("--vkey", vkey_of(ws), "--witness", witness.vkey)
    assert f"cosigned by {fingerprint}" in ok("-c", ws, "audit", "verify", *pinned)
    ok("-c", ws, "audit", "export", tmp_path / "bundle")
    assert cosigners((tmp_path / "bundle" / "checkpoints" / "000000000009.note").read_text(), witness.vkey)
    assert f"cosigned by {fingerprint}" in ok("audit", "verify-bundle", tmp_path / "bundle", *pinned)
    assert witness.refusals() == []
    # The stand-alone script of AUDITING.md skips the cosignature lines.
    script = tmp_path / "verify_bundle.py"
    script.write_text(extract_script(), encoding="utf-8")
    done = run_script(script, tmp_path / "bundle", vkey_of(ws))
    assert done.returncode == 0 and done.stdout.startswith("OK: 9 entries match"), done.stderr

    # An auditor who wants two witnesses is not satisfied by one.
    other = witness_vkey("witness.test/w2", Ed25519PrivateKey.generate().public_key())
    two = (*pinned, "--witness", other, "--witnesses-required", "2")
    line = fails("audit", "verify-bundle", tmp_path / "bundle", *two)
    assert line == (
        "Error: audit log does not verify: checkpoint at size 9: cosigned by 1 of the witnesses given "
        f"({fingerprint}), 2 required: no independent witness vouches that this is the log everyone "
        "else sees"
    )
    usage = invoke("audit", "verify-bundle", tmp_path / "bundle", *pinned, "--witnesses-required", "2")
    assert usage.exit_code == 2 and "2 cosignatures required but 1 witness keys given" in usage.output


def test_the_witness_refuses_a_rollback(witnessed: tuple[Path, RunningWitness]) -> None:
    ws, witness = witnessed
    grow(ws, 2)
    with workspace_sql(ws) as sql:
        at_six = audit_tree_row(sql)
    grow(ws, 3)
    ok("-c", ws, "audit", "checkpoint")  # the witness saw 9
    with workspace_sql(ws) as sql:
        roll_back_audit_log(sql, at_six)
    result = invoke("-c", ws, "audit", "checkpoint")  # signs 6 now, and offers it
    assert result.exit_code == 1
    fingerprint = Witness.parse(witness.vkey).fingerprint
    assert (
        f"witness {fingerprint}: the witness has cosigned size 9, beyond this log's latest checkpoint (6): "
        "another instance is ahead, or this log was rolled back"
    ) in result.stderr
    assert "Error: 1 of 1 witnesses did not cosign (see above)" in result.stderr
    six = result.stdout
    assert six.startswith("example-bank/gateway-audit\n6\n") and cosigners(six, witness.vkey) == []

    # Over the protocol itself: the smaller checkpoint from its own size is a 409 that
    # tells the witness's size, and the request is kept as evidence.
    status, kind, body = asyncio.run(post(witness.url, f"old 6\n\n{six}"))
    assert (status, kind, body) == (409, "text/x.tlog.size", "9\n")
    assert (409, "old size 6 is not the size last cosigned (9)") in witness.refusals()


def test_the_witness_refuses_a_fork(witnessed: tuple[Path, RunningWitness]) -> None:
    ws, witness = witnessed
    grow(ws, 2)
    ok("-c", ws, "audit", "checkpoint")
    with workspace_sql(ws) as sql:
        at_six = audit_tree_row(sql)
    grow(ws, 3)
    ok("-c", ws, "audit", "checkpoint")  # the witness saw 9
    with workspace_sql(ws) as sql:
        roll_back_audit_log(sql, at_six)
    grow(ws, 3, label="other")  # another history, also of 9 entries
    result = invoke("-c", ws, "audit", "checkpoint")
    assert result.exit_code == 1
    assert (
        "refused the checkpoint at size 9 (HTTP 409): the witness cosigned another root at size 9: "
        "this log is not the one it saw (a fork)"
    ) in result.stderr
    pinned = ("--vkey", vkey_of(ws), "--witness", witness.vkey)
    line = fails("-c", ws, "audit", "verify", *pinned)
    assert line == (
        "Error: audit log does not verify: checkpoint at size 9: cosigned by 0 of the witnesses given "
        "(none of them), 1 required: no independent witness vouches that this is the log everyone else sees"
    )
    grow(ws, 1, label="more")  # the forked log grows on: the proof from 9 cannot hold
    result = invoke("-c", ws, "audit", "checkpoint")
    assert result.exit_code == 1
    assert (
        "refused the checkpoint at size 10 (HTTP 422): not consistent with the checkpoint cosigned at size 9"
    ) in result.stderr
    assert [status for status, _ in witness.refusals()] == [409, 409, 409, 422]


async def post(url: str, body: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/add-checkpoint", data=body) as resp:
        return resp.status, resp.content_type, await resp.text()


class ToyLog:
    """A log of its own making, to speak the protocol to an in-process witness."""

    def __init__(self, origin: str = "toy.example/log") -> None:
        self.origin = origin
        self.key = Ed25519PrivateKey.generate()
        self.vkey = format_vkey(origin, self.key.public_key())
        self.leaves: list[bytes] = []

    def grow(self, n: int, tag: str = "") -> str:
        self.leaves += [leaf_hash(f"{tag}{len(self.leaves) + i}".encode()) for i in range(n)]
        cp = Checkpoint(self.origin, len(self.leaves), root_from_leaf_hashes(self.leaves))
        return sign_checkpoint(cp, self.origin, self.key)

    def request(self, old: int, note: str) -> str:
        import base64

        proof = consistency_proof(self.leaves, old, len(self.leaves)) if 0 < old < len(self.leaves) else []
        return f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note


async def test_the_protocol_answers_as_the_spec_says(tmp_path: Path, aiohttp_client: Any) -> None:
    toy = ToyLog()
    vkey = witness_service.init(tmp_path / "w", NAME, (toy.vkey,))
    service = witness_service.WitnessService.open(tmp_path / "w")
    client = await aiohttp_client(witness_service.create_app(service))

    async def send(body: str) -> tuple[int, str]:
        resp = await client.post("/add-checkpoint", data=body.encode())
        return resp.status, await resp.text()

    first = toy.grow(5)
    status, line = await send(toy.request(0, first))
    assert status == 200 and cosigned_by(first + line, [Witness.parse(vkey)])
    assert (await send(toy.request(0, first)))[0] == 409  # it has seen 5 now
    second = toy.grow(3)
    status, line = await send(toy.request(5, second))
    assert status == 200 and cosigned_by(second + line, [Witness.parse(vkey)])
    assert (await send(toy.request(8, second)))[0] == 200  # the same checkpoint again

    stranger = ToyLog("other.example/log")
    assert (await send(stranger.request(0, stranger.grow(1))))[0] == 404
    forger = ToyLog()  # the same origin, another key
    assert (await send(forger.request(0, forger.grow(9))))[0] == 403
    assert (await send(toy.request(9, toy.grow(0))))[0] == 400  # old beyond the checkpoint
    assert (await send("old 08\n\n" + second))[0] == 400
    assert (await send("old 8\nnot-a-hash\n\n" + second))[0] == 400
    bad_proof = toy.request(8, toy.grow(2)).replace("old 8\n", "old 8\n" + "AAAA" * 10 + "AAA=\n", 1)
    assert (await send(bad_proof))[0] == 422
