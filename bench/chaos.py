"""Chaos: packages through a flaky partner while the dispatcher is killed and restarted.

    .venv/bin/python bench/chaos.py                       # 10,000 packages
    .venv/bin/python bench/chaos.py --packages 2000       # a shorter run
    .venv/bin/python bench/chaos.py --faults 0.25 --kills 3 --seed 7
    .venv/bin/python bench/chaos.py --calm                # also healthy without kills

Two scenarios, each in a fresh workspace (SQLite) holding N packages placed through the
real placement (policy, minimization, sealing, outbox row and audit entry):

- healthy: the partner answers every request at once;
- flaky: a share ``--faults`` of requests (default 25%, drawn at random) fail: 40% of
  them answer 500, 20% 429 with ``Retry-After: 1``, 20% hang past the attempt timeout and
  20% are cut: the connection is closed in the middle of the answer. A hang and a cut
  happen after the partner applied the package, so the gateway, which cannot know it,
  sends it again: the partner must find the ``Idempotency-Key`` it already applied.

In both, a real ``gateway dispatch`` process drains the outbox; it is killed with
SIGKILL ``--kills`` times (default 3), each time once a random share of the packages
(the same shares in both scenarios) is delivered, and started again at once. Its leases
are 5 s (``GATEWAY_DISPATCH__LEASE_SECONDS``), so what a killed process held is taken over soon.

The partner runs in a process of its own (TLS, a throwaway CA) and keeps, per
``Idempotency-Key``, the digest of the body it applied; a key seen again is a repeat,
and a repeat with another body would be the same package changed between two sends.

Printed per scenario: packages placed, delivered, dead; lost (neither applied by the
partner nor pending nor dead in the outbox: the goal is 0); applied twice with different
bodies (goal 0); repeats; requests; the share of time the partner received traffic (of
the drain's 100 ms slots, those in which at least one request arrived: the breaker and
the kills are what idle it); drain time (first dispatcher start to nothing pending);
and ``gateway audit verify``. Goal: flaky drain <= 3x healthy with 25% faults.

The partner's profile: 64 concurrent attempts, an attempt timeout of 1 s, backoff from
0.1 s capped at 2 s and 25 attempts, the breaker's defaults (``[breaker]``). The backoff
is shorter than a real contract's so that the drain measures the gateway's machinery,
not how long a backoff policy chooses to wait.
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
import hashlib
import os
import random
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.common import PartnerProcess, keys_settled, make_workspace, serve_tls
from gateway.cli.placement import read_case
from gateway.config import DATABASE_ENV_VAR, ENV_VAR, load_settings
from gateway.core import Gateway
from gateway.delivery import outbox
from gateway.demo.partners import ThrowawayCA
from gateway.onboarding import registry
from gateway.placement import service as placement

#: How a fault is split between its kinds (shares of the fault rate).
KINDS = {"500": 0.4, "429": 0.2, "hang": 0.2, "cut": 0.2}
TIMEOUT = 1.0
LEASE = 5.0
LIMITS = (
    f"concurrency = 64\nrate_per_second = 100000\ntimeout = {TIMEOUT:g}\n"
    "backoff_base = 0.1\nbackoff_cap = 2.0\nmax_attempts = 25\n"
)
SLOT = 0.1
"""Seconds of a slot of the traffic share."""


@dataclass
class Ledger:
    """What the partner applied, by Idempotency-Key, and what it saw."""

    applied: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    repeats: int = 0
    different: int = 0
    slots: set[int] = field(default_factory=set)

    def arrived(self) -> None:
        self.requests += 1
        self.slots.add(int(time.time() / SLOT))

    def apply(self, key: str, body: bytes) -> None:
        digest = hashlib.sha256(body).hexdigest()
        if key not in self.applied:
            self.applied[key] = digest
            return
        self.repeats += 1
        self.different += self.applied[key] != digest


def partner_app(ledger: Ledger, fault_rate: float, seed: int) -> web.Application:
    """The flaky partner: POST /packages (see the module docstring), GET /stats."""
    rng = random.Random(seed)
    kinds, weights = list(KINDS), list(KINDS.values())

    async def packages(request: web.Request) -> web.StreamResponse:
        ledger.arrived()
        key, body = request.headers.get("Idempotency-Key", ""), await request.read()
        fault = rng.choices(kinds, weights)[0] if rng.random() < fault_rate else "ok"
        if fault == "500":
            return web.Response(status=500, text="internal error")
        if fault == "429":
            return web.Response(status=429, headers={"Retry-After": "1"})
        ledger.apply(key, body)
        if fault == "hang":
            await asyncio.sleep(TIMEOUT + 0.5)
        if fault == "cut":
            answer = web.StreamResponse(status=201, headers={"Content-Type": "application/json"})
            answer.content_length = 64
            await answer.prepare(request)
            await answer.write(b'{"reference": "REF-')
            assert request.transport is not None
            request.transport.abort()
            return answer
        return web.json_response({"reference": f"REF-{key[-12:]}"}, status=201)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {"applied": list(ledger.applied), "requests": ledger.requests, "repeats": ledger.repeats,
             "different": ledger.different, "slots": sorted(ledger.slots)}
        )

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/packages", packages)
    app.router.add_get("/stats", stats)
    return app


def partner_process(cert: str, key: str, fault_rate: float, seed: int, ready: Any) -> None:
    """Serve the flaky partner over TLS on 127.0.0.1; put its port on ``ready``."""
    import logging

    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # the cut answers are on purpose

    asyncio.run(serve_tls(partner_app(Ledger(), fault_rate, seed), cert, key, ready))


class Partner(PartnerProcess):
    """The flaky partner in a process of its own."""

    def __init__(self, ca: ThrowawayCA, fault_rate: float, seed: int) -> None:
        cert, key = ca.issue("agency")
        super().__init__(ca, partner_process, (str(cert), str(key), fault_rate, seed))


async def place(ws: Path, profile: Path, count: int) -> float:
    """Onboard the partner and place ``count`` packages; return placements per second."""
    async with await Gateway.open(load_settings(ws)) as gw:
        await registry.add(gw, profile, actor="bench")
        cases = [read_case(REPO / "examples" / "cases" / "case-1001.json")] * count
        start = time.perf_counter()
        async for _, placed in placement.place_many(gw, cases, "bench", "collection", actor="bench"):
            assert isinstance(placed, placement.Placement), placed
        return count / (time.perf_counter() - start)


class DispatcherProcess:
    """``gateway dispatch`` as an operator runs it, killed and started again on demand."""

    def __init__(self, ws: Path, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "gateway", "-c", str(ws), "dispatch", "--quiet"]
        self.env = {**os.environ, "GATEWAY_DISPATCH__LEASE_SECONDS": f"{LEASE:g}"}
        self.log = log.open("ab")
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=self.log, stderr=self.log)

    def kill_and_restart(self) -> None:
        self.proc.kill()  # SIGKILL: no clean-up of its leases
        self.proc.wait()
        self.proc = self._start()

    def check(self) -> None:
        if self.proc.poll() is not None:
            self.log.close()
            tail = Path(self.log.name).read_text(errors="replace")[-2000:]
            raise SystemExit(f"gateway dispatch exited {self.proc.returncode}:\n{tail}")

    def stop(self) -> float:
        """SIGTERM; return the seconds it took to exit."""
        start = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()
        return time.perf_counter() - start


@dataclass
class Drain:
    seconds: float
    started: float
    ended: float
    kills: list[int]
    """Packages delivered when each SIGKILL was sent."""
    stop_seconds: float


async def drain(ws: Path, count: int, kill_shares: list[float], log: Path) -> Drain:
    """Run the dispatcher until nothing is pending, killing it at the given shares of
    packages delivered."""
    async with await Gateway.open(load_settings(ws)) as gw:
        started = time.time()
        dispatcher = DispatcherProcess(ws, log)
        kills: list[int] = []
        waiting = sorted(kill_shares)
        while True:
            await asyncio.sleep(0.2)
            counts = await outbox.counts(gw)
            delivered = counts.get("delivered", 0)
            if waiting and delivered >= waiting[0] * count:
                waiting.pop(0)
                kills.append(delivered)
                dispatcher.kill_and_restart()
            if not any(counts.get(state, 0) for state in outbox.PENDING_STATES):
                break
            dispatcher.check()
        ended = time.time()
    return Drain(ended - started, started, ended, kills, dispatcher.stop())


@dataclass
class Tally:
    placed: int
    delivered: int
    dead: int
    pending: int
    lost: int
    different: int
    repeats: int
    requests: int
    traffic: float
    """Share of the drain's slots in which the partner received a request."""


async def tally(ws: Path, partner: Partner, drained: Drain) -> Tally:
    async with await Gateway.open(load_settings(ws)) as gw, gw.db.transaction() as tx:
        rows = await tx.fetchall("SELECT id, state FROM packages")
    stats = await partner.stats()
    applied = set(stats["applied"])
    states = [r["state"] for r in rows]
    lost = sum(
        1 for r in rows
        if r["id"] not in applied and r["state"] not in outbox.PENDING_STATES and r["state"] != "dead"
    )
    first, last = int(drained.started / SLOT), int(drained.ended / SLOT)
    busy = sum(1 for slot in stats["slots"] if first <= slot <= last)
    return Tally(
        placed=len(rows), delivered=states.count("delivered"), dead=states.count("dead"),
        pending=sum(states.count(s) for s in outbox.PENDING_STATES), lost=lost,
        different=stats["different"], repeats=stats["repeats"], requests=stats["requests"],
        traffic=busy / max(last - first + 1, 1),
    )


def audit_verify(ws: Path) -> str:
    """``gateway audit verify``'s verdict: its last line, or why it failed."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "-c", str(ws), "audit", "verify"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    lines = (done.stderr + done.stdout).strip().splitlines() or ["(no output)"]
    if done.returncode != 0:
        return f"FAILED ({done.returncode}): {lines[-1]}"
    return lines[-1].split(",")[0]  # "OK: N entries"


@dataclass
class Result:
    name: str
    placement_rate: float
    drained: Drain
    tally: Tally
    audit: str

    @property
    def ok(self) -> bool:
        t = self.tally
        return t.lost == 0 and t.different == 0 and t.pending == 0 and self.audit.startswith("OK")


async def scenario(
    name: str, root: Path, ca: ThrowawayCA, count: int, fault_rate: float, kill_shares: list[float],
    seed: int,
) -> Result:
    """One run in a fresh workspace under ``root``: place, drain with kills, tally."""
    partner = Partner(ca, fault_rate, seed)
    try:
        ws = root / name
        profile = make_workspace(ws, partner.port, ca, 64)
        text = profile.read_text()
        limits = text[text.index("[limits]") :].split("\n\n", 1)[0]
        profile.write_text(text.replace(limits, "[limits]\n" + LIMITS.rstrip()))
        keys_settled()  # keys as a deployment's are: read once, not at every use
        rate = await place(ws, profile, count)
        print(f"{name}: placed {count} packages ({rate:.0f}/s), draining ...", flush=True)
        drained = await drain(ws, count, kill_shares, root / f"{name}-dispatch.log")
        result = Result(name, rate, drained, await tally(ws, partner, drained), audit_verify(ws))
    finally:
        partner.stop()
    print(f"{name}: drained in {drained.seconds:.1f} s; {result.audit}", flush=True)
    return result


def report(results: list[Result], fault_rate: float) -> None:
    rows: list[tuple[str, Any]] = [
        ("placed", lambda r: r.tally.placed),
        ("delivered", lambda r: r.tally.delivered),
        ("dead", lambda r: r.tally.dead),
        ("still pending", lambda r: r.tally.pending),
        ("lost (not applied, pending or dead)", lambda r: r.tally.lost),
        ("applied twice, different bodies", lambda r: r.tally.different),
        ("repeats the partner absorbed", lambda r: r.tally.repeats),
        ("requests", lambda r: r.tally.requests),
        ("partner received traffic", lambda r: f"{r.tally.traffic:.0%}"),
        ("drain time (s)", lambda r: f"{r.drained.seconds:.1f}"),
        ("delivered at each SIGKILL", lambda r: "/".join(map(str, r.drained.kills)) or "-"),
        ("last SIGTERM to exit (s)", lambda r: f"{r.drained.stop_seconds:.1f}"),
        ("audit verify", lambda r: r.audit),
    ]
    print()
    print(f"{'':38}" + "".join(f"{r.name:>24}" for r in results))
    for label, value in rows:
        print(f"{label:38}" + "".join(f"{value(r)!s:>24}" for r in results))
    by_name = {r.name: r for r in results}
    flaky = by_name["flaky"].drained.seconds
    print(f"\ndrain flaky / healthy: {flaky / by_name['healthy'].drained.seconds:.2f}"
          f" (goal <= 3 with {fault_rate:.0%} faults; both with the same kills)")
    if calm := by_name.get("healthy, no kills"):
        print(f"drain flaky / healthy without kills: {flaky / calm.drained.seconds:.2f}")
    print("all checks passed" if all(r.ok for r in results) else "CHECKS FAILED")


async def run(args: argparse.Namespace) -> list[Result]:
    rng = random.Random(args.seed)
    kill_shares = sorted(rng.uniform(0.1, 0.9) for _ in range(args.kills))
    print(
        f"{args.packages} packages; faults {args.faults:.0%} ("
        + ", ".join(f"{k} {v * args.faults:.0%}" for k, v in KINDS.items())
        + f"); SIGKILL at {', '.join(f'{s:.0%}' for s in kill_shares)} delivered; seed {args.seed};"
        f" {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = ThrowawayCA(root / "ca")
        plans = [("healthy", 0.0, kill_shares), ("flaky", args.faults, kill_shares)]
        if args.calm:
            plans.insert(0, ("healthy, no kills", 0.0, []))
        for name, rate, kills in plans:
            results.append(await scenario(name, root, ca, args.packages, rate, kills, args.seed))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=10_000, help="packages per scenario")
    parser.add_argument("--faults", type=float, default=0.25, help="share of requests that fail")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the dispatcher per scenario")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--calm", action="store_true", help="also drain with a healthy partner and no kills, for scale"
    )
    args = parser.parse_args()
    for name in (DATABASE_ENV_VAR, ENV_VAR):  # the workspaces name their own databases
        os.environ.pop(name, None)
    results = asyncio.run(run(args))
    report(results, args.faults)
    if not all(r.ok for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
