"""Nothing leaves on the strength of a commit a power cut could take back.

On SQLite a commit is written to the WAL without an fsync (``synchronous=NORMAL``);
the checkpointer syncs it tens of milliseconds later. A package that left before that
could outlive its own placement and its disclosure in the audit log. So the dispatcher
fsyncs the WAL once a claim is in, before the claim's packages go (`Database.sync`);
the same for a checkpoint before a witness sees it (a witness that cosigned a
checkpoint the log then lost would take the log's next one at that size for a fork).

Seen from outside, with strace: ``gateway dispatch --once`` and ``gateway audit
checkpoint`` over plain http (so the request shows in the trace), with a reader holding
a snapshot from before their commits, so that no checkpoint can copy those pages back
and sync the WAL on the way. The WAL is fsynced before the first request leaves. The
checkpointer thread, whose checkpoint the reader keeps from copying, then syncs the WAL
by itself, on its own schedule: those syncs may or may not come before a request, and
do not count. Only a sync that the sender waited for is a guarantee.

Run on every backend option: the workspace is a SQLite one.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.config import DATABASE_ENV_VAR, load_settings
from gateway.core import Gateway
from gateway.onboarding import registry
from tests.partners import Agency, agency_profile, init_workspace, place_many, rows, serve
from tests.test_audit_known import grow, ok, vkey_of
from tests.test_audit_witness import NAME, start_witness
from tests.test_serve import free_port
from tests.toolchains import debian_tool

PACKAGES = 3


def traced_calls(trace: str) -> list[tuple[str, str, str]]:
    """The trace's system calls in order: (thread id, name, the rest of the line)."""
    return re.findall(r"^(\d+)\s+(\w+)\((.*)$", trace, flags=re.MULTILINE)


def checkpointer_threads(calls: list[tuple[str, str, str]], database: str) -> set[str]:
    """The threads that open a connection of their own to ``database`` (read-write,
    never creating it): the checkpointer's (`gateway.storage.wal.Checkpointer`). The
    gateway's connection is opened by a thread that first creates the file if missing
    (O_EXCL, `gateway.storage.sqlite._open`)."""
    opened: dict[str, set[frozenset[str]]] = {}
    for tid, name, rest in calls:
        path = f'"{database}", '
        if name in ("open", "openat") and path in rest:
            flags = rest.split(path, 1)[1].split(",", 1)[0]
            opened.setdefault(tid, set()).add(frozenset(flags.split("|")))
    return {
        tid for tid, flags in opened.items()
        if all("O_RDWR" in f and "O_EXCL" not in f for f in flags)
    }  # fmt: skip


def traced(strace: str, trace: Path, ws: Path, *command: str) -> list[str]:
    """``gateway -c WS COMMAND`` under strace: the system calls that write, send and
    sync, with the file each writes to and the first bytes written."""
    return [
        strace, "-f", "-y", "-s", "8", "-o", str(trace),
        "-e", "trace=fsync,fdatasync,sendto,sendmsg,write,open,openat",
        sys.executable, "-m", "gateway", "-c", str(ws), *command,
    ]  # fmt: skip


@contextmanager
def snapshot_held(database: str) -> Iterator[None]:
    """Everything so far copied back into the database file, then a read snapshot held:
    no checkpoint of any process can copy later commits back, nor sync the WAL for them.
    (The first commit after it syncs the WAL's new header: make it before the trace.)"""
    reader = sqlite3.connect(database, isolation_level=None)
    try:
        reader.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM audit_entries").fetchall()
        yield
    finally:
        reader.close()


def synced_before(trace: Path, request: str, database: str) -> list[str]:
    """The syncs of a WAL in ``trace`` before the first write or send of ``request``, the
    checkpointer's left out."""
    calls = traced_calls(trace.read_text())
    checkpointer = checkpointer_threads(calls, database)
    assert len(checkpointer) == 1, f"not one checkpointer thread in the trace: {checkpointer}"
    sends = ("sendto", "sendmsg", "write")
    first = next(i for i, (_, name, rest) in enumerate(calls) if name in sends and request in rest)
    return [
        rest for tid, name, rest in calls[:first]
        if name in ("fsync", "fdatasync") and rest.split(">", 1)[0].endswith("-wal")
        and tid not in checkpointer
    ]  # fmt: skip


async def test_the_wal_is_on_the_disk_before_a_package_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strace = debian_tool("strace", "strace")
    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    ws = init_workspace(tmp_path / "ws")
    agency = Agency(private_jwk={}, bank_jwks=ws / "keys" / "bank" / "jwks.json")
    trace = tmp_path / "dispatch.trace"
    async with serve(agency, None):  # plain http: the request's first bytes show in the trace
        profile, agency.private_jwk = agency_profile(
            ws, agency.port, None, adapter="allow_insecure_http = true"
        )
        profile.write_text(profile.read_text().replace("https://", "http://"))
        gw = await Gateway.open(load_settings(ws))
        with snapshot_held(gw.settings.database_url.removeprefix("sqlite:///")):
            try:
                await registry.add(gw, profile, actor="test")
                placed = await place_many(gw, PACKAGES)
            finally:
                await gw.close()
            command = traced(strace, trace, ws, "dispatch", "--once", "--quiet")
            proc = await asyncio.create_subprocess_exec(*command)
            assert await asyncio.wait_for(proc.wait(), 120) == 0
    assert sorted(agency.requests) == sorted(placed)
    database = load_settings(ws).database_url.removeprefix("sqlite:///")
    assert synced_before(trace, '"POST /p', database), "no fsync of the WAL before the first package left"
    async with await Gateway.open(load_settings(ws)) as again:
        states = await rows(again, "SELECT state FROM packages")
    assert [s["state"] for s in states] == ["delivered"] * PACKAGES


def test_a_checkpoint_is_on_the_disk_before_a_witness_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strace = debian_tool("strace", "strace")
    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    ws = init_workspace(tmp_path / "ws")
    grow(ws, 3)
    directory = tmp_path / "witness"
    vkey = ok("witness", "init", "--dir", directory, "--name", NAME, "--log", vkey_of(ws)).strip()
    port = free_port()
    witness = start_witness(directory, port)
    trace = tmp_path / "checkpoint.trace"
    try:
        with (ws / "gateway.toml").open("a", encoding="utf-8") as config:
            config.write(f'\n[[audit_witnesses]]\nurl = "http://127.0.0.1:{port}/"\nvkey = "{vkey}"\n')
        with snapshot_held(load_settings(ws).database_url.removeprefix("sqlite:///")):
            # A write first: the first commit into an emptied WAL syncs its new header.
            grow(ws, 1, "after")
            done = subprocess.run(
                traced(strace, trace, ws, "audit", "checkpoint"), capture_output=True, text=True, timeout=120
            )
    finally:
        witness.terminate()
        witness.wait(timeout=30)
        assert witness.stderr is not None
        witness.stderr.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{load_settings(ws).bank_id}/gateway-audit\n4\n")
    assert f"\u2014 {NAME} " in done.stdout, "the witness cosigned the checkpoint"
    database = load_settings(ws).database_url.removeprefix("sqlite:///")
    assert synced_before(trace, '"POST /a', database), (
        "no fsync of the WAL before the checkpoint went to the witness"
    )
