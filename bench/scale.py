"""Dispatch scaling: one and two dispatcher processes on PostgreSQL, and SQLite against
PostgreSQL for one, in the same run.

    python bench/scale.py                  # 5000 packages per scenario
    python bench/scale.py --packages 20000
    python bench/scale.py --quick          # 300 packages, a smoke run

Each scenario gets a fresh workspace and database holding N queued packages, then times
draining it with K dispatcher processes started the way an operator starts them,
``python -m gateway -c WS dispatch --once --quiet``, all at once. Scenarios: SQLite x 1,
PostgreSQL x 1, PostgreSQL x 2 (the two share one outbox; claims use ``FOR UPDATE SKIP
LOCKED``). Afterwards every package must be ``delivered`` with exactly one attempt, and
the agency must have applied each package id exactly once, under the reference the
gateway stored; a failed check stops the run.

A dispatcher must exit 0 with nothing on stderr but info log lines.
"wall" is from launching the processes to the last one exiting, so it includes Python
start-up and opening the database; "drain" is the longest time a process reports for
its own run; "empty" is one more ``dispatch --once`` on the drained outbox, the fixed
cost per process start. The ratios are taken on the wall figures.

Setup, as in bench/outbound.py: the agency runs in its own process over TLS (a
ThrowawayCA), answers like a real one (Idempotency-Key dedupe, JSON reference) and does
not decrypt; the backlog is a few packages sealed through the real placement whose rows
are copied under new ids (``bench.common.copy_packages``: each copy's ``signed`` and
``sealed`` are sealed again for its own row, as encryption at rest binds a stored value
to its row) with portable SQL through the gateway's ``Transaction``, so the same code
seeds both backends; the tables are ANALYZEd before the drain, as a database in
service would be. The partner's limits (concurrency 32 and 100000/s, shared by all
dispatcher processes) are far above what one process reaches, so the partner profile is
not the bottleneck: the gateway and its database are.

Durability is not the same on both sides: PostgreSQL is a throwaway cluster started
with its defaults (``Cluster(fast=False)``: fsync on, synchronous_commit on, so every
commit waits for the WAL flush), while SQLite runs in WAL mode with
``synchronous=NORMAL`` (a commit does not fsync; a power loss may lose the last
commits, never corrupt). ``GATEWAY_TEST_PG`` points the PostgreSQL scenarios at an
existing server instead (see tests/pgcluster.py).

On a 2-core machine the two-process figure is bounded by the cores, not by the outbox:
two dispatchers, the PostgreSQL backends and the agency process all share two CPUs, so
a second dispatcher can at best use what the first leaves idle while waiting on commits
and round trips; the pg x 2 / pg x 1 ratio says how much of that there is, not how far
more machines would scale.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on the path, where bench/email.py would hide
# the standard library's email package: the checkout takes the folder's place.
REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
else:  # imported (by the tests, another bench)
    sys.path.insert(0, str(REPO))

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

from bench.common import PartnerProcess, agency_process, copy_packages, make_workspace
from gateway.cli.placement import read_case
from gateway.config import DATABASE_ENV_VAR, ENV_VAR, load_settings
from gateway.core import Gateway
from gateway.demo.partners import ThrowawayCA
from gateway.onboarding import registry
from gateway.placement import service as placement
from tests.pgcluster import Cluster

CONCURRENCY = 32
SEEDS = 20


class Agency(PartnerProcess):
    """A fresh agency process per scenario, so its counts are that scenario's alone."""

    def __init__(self, ca: ThrowawayCA, cert: Path, key: Path) -> None:
        super().__init__(ca, agency_process, (str(cert), str(key)), timeout=30)


async def seed(ws: Path, profile: Path, count: int) -> float:
    """Queue ``count`` packages: SEEDS sealed by placement, the rest copies of their rows."""
    gw = await Gateway.open(load_settings(ws))
    try:
        await registry.add(gw, profile, actor="bench")
        case = read_case(REPO / "examples" / "cases" / "case-1001.json")
        seeds = [
            await placement.place(gw, case, "bench", "collection", actor="bench")
            for _ in range(min(SEEDS, count))
        ]
        start = time.perf_counter()
        await copy_packages(gw, [s.package_id for s in seeds], count - len(seeds))
        async with gw.db.transaction() as tx:
            await tx.execute("ANALYZE")
            queued = await tx.fetchval("SELECT COUNT(*) FROM packages WHERE state = 'queued'")
        assert queued == count, (queued, count)
        return time.perf_counter() - start
    finally:
        await gw.close()


def dispatch(ws: Path, processes: int) -> tuple[float, list[dict[str, float]]]:
    """Start ``processes`` dispatchers at once; wall seconds until the last exits, and
    each one's closing line (delivered=... seconds=...)."""
    env = {k: v for k, v in os.environ.items() if k not in (DATABASE_ENV_VAR, ENV_VAR)}
    cmd = [sys.executable, "-m", "gateway", "-c", str(ws), "dispatch", "--once", "--quiet"]
    start = time.perf_counter()
    running = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    outputs = [p.communicate(timeout=1800) for p in running]
    wall = time.perf_counter() - start
    results = []
    for proc, (out, err) in zip(running, outputs, strict=True):
        # Info log lines (the last audit checkpoint at shutdown) are expected; a warning,
        # an error or anything else on stderr fails the run.
        if proc.returncode != 0 or any(line and not line.startswith("INFO ") for line in err.splitlines()):
            raise SystemExit(f"dispatcher exited {proc.returncode}:\n{out}{err}")
        line = out.strip().splitlines()[-1]
        results.append({k: float(v) for k, v in (pair.split("=") for pair in line.split())})
    return wall, results


async def verify(ws: Path, agency: Agency, count: int) -> int:
    """Every package delivered once, the agency applied each once; return its resends."""
    gw = await Gateway.open(load_settings(ws))
    try:
        async with gw.db.transaction() as tx:
            rows = await tx.fetchall("SELECT id, state, attempts, partner_ref FROM packages")
            attempts = await tx.fetchval("SELECT COUNT(*) FROM attempts")
    finally:
        await gw.close()
    stats = await agency.stats()
    references: dict[str, str] = stats["references"]  # type: ignore[assignment]
    problems = []
    if len(rows) != count:
        problems.append(f"{len(rows)} packages, expected {count}")
    if not_delivered := [r["id"] for r in rows if r["state"] != "delivered"]:
        problems.append(f"{len(not_delivered)} not delivered, e.g. {not_delivered[0]}")
    if attempts != count or any(r["attempts"] != 1 for r in rows):
        problems.append(f"{attempts} attempts recorded for {count} packages")
    if set(references) != {r["id"] for r in rows}:
        problems.append(f"agency applied {len(references)} packages, the gateway holds {len(rows)}")
    if wrong := [r["id"] for r in rows if references.get(r["id"]) != r["partner_ref"]]:
        problems.append(f"{len(wrong)} packages store a reference the agency did not give them")
    if problems:
        raise SystemExit("verification failed: " + "; ".join(problems))
    return int(stats["requests"]) - len(references)  # type: ignore[call-overload]


@dataclass
class Result:
    name: str
    packages: int
    wall: float
    drain: float
    empty: float
    resends: int
    split: list[int]

    @property
    def rate(self) -> float:
        return self.packages / self.wall


def scenario(
    name: str,
    database_url: str,
    processes: int,
    count: int,
    root: Path,
    ca: ThrowawayCA,
    cert: Path,
    key: Path,
) -> Result:
    agency = Agency(ca, cert, key)
    try:
        ws = root / name.replace(" ", "")
        profile = make_workspace(ws, agency.port, ca, CONCURRENCY, database_url)
        copy_s = asyncio.run(seed(ws, profile, count))
        print(f"{name}: queued {count} packages (copies in {copy_s:.1f} s), draining ...", flush=True)
        wall, results = dispatch(ws, processes)
        delivered = sum(int(r["delivered"]) for r in results)
        if delivered != count or any(r["dead"] or r["retry_wait"] for r in results):
            raise SystemExit(f"{name}: dispatchers reported {results}")
        resends = asyncio.run(verify(ws, agency, count))
        empty, _ = dispatch(ws, 1)
        return Result(
            name,
            count,
            wall,
            max(r["seconds"] for r in results),
            empty,
            resends,
            [int(r["delivered"]) for r in results],
        )
    finally:
        agency.stop()


def main(args: argparse.Namespace) -> None:
    count = 300 if args.quick else args.packages
    os.environ.pop(DATABASE_ENV_VAR, None)  # the workspaces name their own databases
    print(
        f"{count} packages per scenario; {os.cpu_count()} CPUs; partner concurrency {CONCURRENCY} shared",
        flush=True,
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp, Cluster(fast=False) as cluster:
        root = Path(tmp)
        ca = ThrowawayCA(root / "ca")
        cert, key = ca.issue("agency")
        plans = [
            ("sqlite x 1", "sqlite:///gateway.db", 1),
            ("postgresql x 1", cluster.new_schema("bench_pg1"), 1),
            ("postgresql x 2", cluster.new_schema("bench_pg2"), 2),
        ]
        for name, url, processes in plans:
            results.append(scenario(name, url, processes, count, root, ca, cert, key))

    print()
    print(
        f"{'scenario':<16} {'packages':>8} {'wall s':>7} {'pkg/s':>7} {'drain s':>8} {'pkg/s':>7}"
        f" {'empty s':>8} {'resends':>7}  per process"
    )
    for r in results:
        print(
            f"{r.name:<16} {r.packages:>8} {r.wall:>7.2f} {r.rate:>7.0f} {r.drain:>8.2f}"
            f" {r.packages / r.drain:>7.0f} {r.empty:>8.2f} {r.resends:>7}  {'/'.join(map(str, r.split))}"
        )
    sqlite1, pg1, pg2 = results
    print()
    print(
        f"postgresql x 2 / postgresql x 1: {pg2.rate / pg1.rate:.2f}  "
        f"(drain only: {pg1.drain / pg2.drain:.2f})"
    )
    print(
        f"postgresql x 1 / sqlite x 1:     {pg1.rate / sqlite1.rate:.2f}  "
        f"(drain only: {sqlite1.drain / pg1.drain:.2f})"
    )
    print("every package delivered with one attempt; the agency applied each exactly once")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=5000, help="queued packages per scenario")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 packages per scenario")
    main(parser.parse_args())
