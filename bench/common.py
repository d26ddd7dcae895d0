"""What the benchmarks share: a local agency process, a bench workspace, a backlog of
queued packages, CPU time of this process and of a server process around a timed run,
and the goal figures a script hands to `bench/goals.py`."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import ssl
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from gateway.config import CONFIG_NAME, load_settings, render_config
from gateway.core import Gateway
from gateway.demo.partners import ThrowawayCA
from gateway.filecache import SETTLE_SECONDS
from gateway.lifecycle.columns import open_package, seal_package
from gateway.onboarding.jwk import generate_encryption_key
from gateway.onboarding.keys import KeyStore
from gateway.storage.atrest import FileKek

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")
#: The columns a copied package takes from its seed as they are (not its id, nor the
#: sealed values, which are bound to their row).
COPIED = (
    "partner_id, case_id, case_ref, subject_token, purpose, sealing,"
    " payload_digest, fields, created_at, expires_at, state, next_attempt_at"
)


def process_cpu(pid: int) -> float:
    """CPU seconds (user+sys) process ``pid`` has used so far, all its threads."""
    # The command name (field 2) may hold spaces; utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Goal:
    """One goal of issue 26 as a script measured it, for `bench/goals.py`'s table."""

    figure: str
    floor: str
    gateway: str
    goal: str
    met: bool


def write_goals(path: str | None, goals: Sequence[Goal]) -> None:
    """Write ``goals`` as JSON to ``path`` (a script's ``--goals-json``), if given."""
    if path:
        Path(path).write_text(json.dumps([asdict(goal) for goal in goals], ensure_ascii=False))


def add_goals_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--goals-json", metavar="FILE",
                        help="also write the goal figures to FILE as JSON (see bench/goals.py)")


@dataclass
class Cpu:
    """CPU seconds a timed run cost this process (``here``, all threads) and the server
    process it talks to (``server``: the agency of bench/outbound.py, the server under
    test of bench/inbound.py), filled in by `cpu_used`."""

    here: float = 0.0
    server: float = 0.0


@contextmanager
def cpu_used(server_pid: int) -> Iterator[Cpu]:
    """CPU this process and process ``server_pid`` use inside the ``with`` block."""
    used = Cpu()
    here, server = time.process_time(), process_cpu(server_pid)
    try:
        yield used
    finally:
        used.here = time.process_time() - here
        used.server = process_cpu(server_pid) - server


def agency_process(cert: str, key: str, ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """An agency that acts on each Idempotency-Key once and tells what it did at /stats."""
    references: dict[str, str] = {}
    requests = 0

    async def accept(request: web.Request) -> web.Response:
        nonlocal requests
        await request.read()
        requests += 1
        ref = references.setdefault(request.headers["Idempotency-Key"], f"REF-{len(references)}")
        return web.json_response({"reference": ref}, status=201)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": requests, "references": references})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/packages", accept)
    app.router.add_get("/stats", stats)
    asyncio.run(serve_tls(app, cert, key, ready))


async def serve_tls(app: web.Application, cert: str, key: str, ready: Any) -> None:
    """Serve ``app`` over TLS on 127.0.0.1 until the process ends; put its port on ``ready``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    ready.put(runner.addresses[0][1])
    await asyncio.Event().wait()


def keys_settled() -> None:
    """Wait until key files made just now are as a deployment's are: older than
    SETTLE_SECONDS, so read once and cached (`gateway.filecache` re-reads a file changed
    less than that ago on every use, which a fresh workspace would otherwise measure)."""
    time.sleep(SETTLE_SECONDS + 0.2)


def make_workspace(
    ws: Path, port: int, ca: ThrowawayCA, concurrency: int, database_url: str = "sqlite:///gateway.db"
) -> Path:
    """A workspace whose partner "bench" is the agency at ``port``; returns its profile."""
    ws.mkdir()
    config = render_config("bench-bank", "Bench Bank").replace(
        'database_url = "sqlite:///gateway.db"', f"database_url = {json.dumps(database_url)}"
    )
    (ws / CONFIG_NAME).write_text(config)
    settings = load_settings(ws)
    KeyStore(settings.keys_dir).generate()
    FileKek(settings.keys_dir / "bank").create()  # the data keys' KEK, as `gateway init` makes it
    key = generate_encryption_key("P-256")
    (settings.keys_dir / "partners" / "bench.jwks.json").write_text(
        json.dumps({"keys": [key.as_dict(private=False)]})
    )
    profile = ws / "bench.toml"
    profile.write_text(
        (REPO / "examples" / "partners" / "acme-collect.toml")
        .read_text()
        .replace('id = "acme-collect"', 'id = "bench"')
        .replace("partners/acme-collect.jwks.json", "partners/bench.jwks.json")
        .replace("https://127.0.0.1:18441", f"https://127.0.0.1:{port}")
        .replace("rate_per_second = 20", "rate_per_second = 100000")
        .replace("concurrency = 4", f"concurrency = {concurrency}")
        .replace("[adapter_config]", f'[adapter_config]\nca_file = "{ca.ca_file}"')
    )
    return profile


async def copy_packages(gw: Gateway, seed_ids: Sequence[str], copies: int, step: int = 5000) -> None:
    """Queue ``copies`` more packages, copies of the packages ``seed_ids`` under new ids.

    A copy is what the gateway would store for the same placement under the new id: its
    ``signed`` and ``sealed`` are opened and sealed again for the new row (stored values
    are bound to their column and row, so a value copied as it is would not open), the
    other columns are the seed's. One transaction per ``step`` copies; portable SQL, so
    the same code seeds SQLite and PostgreSQL."""
    async with gw.db.transaction() as tx:
        rows = [
            await tx.fetchone(
                "SELECT p.*, b.sealed, b.signed FROM packages p"
                " JOIN package_bodies b ON b.package_id = p.id WHERE p.id = ?",
                (i,),
            )
            for i in seed_ids
        ]
        seeds = [await open_package(gw.keyring, tx, r) for r in rows if r is not None]
    assert len(seeds) == len(seed_ids), "a seed package is missing"
    made = 0
    while made < copies:
        batch = []
        async with gw.db.transaction() as tx:
            for i in range(made, min(made + step, copies)):
                seed, new_id = seeds[i % len(seeds)], f"pkg_{uuid.uuid4().hex}"
                signed, sealed = await seal_package(
                    gw.keyring, tx, seed["subject_token"], new_id, seed["signed"], seed["sealed"]
                )
                batch.append((new_id, signed, sealed, seed["id"]))
            # CAST: PostgreSQL must know the type of a parameter in a select list.
            await tx.executemany(
                f"INSERT INTO packages (id, {COPIED})"
                f" SELECT CAST(? AS TEXT), {COPIED} FROM packages WHERE id = ?",
                [(new_id, seed_id) for new_id, _, _, seed_id in batch],
            )
            await tx.executemany(
                "INSERT INTO package_bodies (package_id, signed, sealed) VALUES (?, ?, ?)",
                [(new_id, signed, sealed) for new_id, signed, sealed, _ in batch],
            )
        made += len(batch)


def run_loop(main: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """Run ``main`` on asyncio's own event loop or on uvloop's (``--loop`` of the benches)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


class PartnerProcess:
    """A local TLS partner in a process of its own: ``target(*args, ready)`` serves and
    puts its port on ``ready``; ``GET /stats`` answers its counts."""

    def __init__(self, ca: ThrowawayCA, target: Any, args: tuple[Any, ...], timeout: float = 60) -> None:
        self.ca = ca
        spawn = multiprocessing.get_context("spawn")
        ready: Any = spawn.Queue()
        self.process = spawn.Process(target=target, args=(*args, ready), daemon=True)
        self.process.start()
        self.port: int = ready.get(timeout=timeout)

    async def stats(self) -> dict[str, Any]:
        tls = ssl.create_default_context(cafile=str(self.ca.ca_file))
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session,
            session.get(f"https://127.0.0.1:{self.port}/stats") as answer,
        ):
            return await answer.json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.process.terminate()
        self.process.join()
