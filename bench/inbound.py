"""Inbound throughput: signed partner callbacks taken in, against a raw aiohttp handler.

    .venv/bin/python bench/inbound.py [--requests 4000] [--concurrency 16] [--cases 400]
    .venv/bin/python bench/inbound.py --profile /tmp/inbound.pstats   # cProfile the gateway
    .venv/bin/python bench/inbound.py --loop both   # the gateway server on asyncio's loop and on uvloop's
    .venv/bin/python bench/inbound.py --history 1000   # each debtor with 1,000 earlier reports

Gateway: ``POST /v1/partners/acme-collect/callbacks`` of ``create_app``: Standard
Webhooks verification (v1, HMAC-SHA256), schema validation, dedupe by webhook-id,
event stored, case lifecycle, compliance check of every contact attempt against the
rule pack with the debtor's contacts of the last 8 days as history, audit log append.

Raw: an aiohttp handler that reads the body and answers 202 with a small JSON body.

Floor: for scale, what the least a signed callback costs with this stack: the gateway's
own signature check, schema validation and dedupe insert, committed, and nothing else
(no case, lifecycle, compliance, event row or audit entry). The goal's figure is the
floor server's CPU per callback divided by the gateway server's: >= 0.6, moonshot 0.8.

Both servers run the same way: alone in a child process of their own (aiohttp
``AppRunner`` + ``TCPSite`` on 127.0.0.1, port 0, no access log), one after the other.
The client is this process, with one ``aiohttp.ClientSession`` configuration, the same
concurrency and the same pre-signed bodies and headers for both; the raw server ignores
the signatures. So the client's CPU is charged to neither server, and on a 2-core
machine each server competes with the same client for the same cores.

The workload is realistic rather than best-case: ``--cases`` cases (two per debtor, so
the compliance history spans cases) are placed through the real placement; every case
first reports ``accepted``, then a mix of contact attempts inside the debtor's contact
hours over the last week (about 3 in 4) and promises to pay or payments. All requests
must come back 202; the script fails otherwise.

As wall rates on a shared machine swing with load, the script also prints CPU seconds
(user+sys, all threads) per request of each server's child process (/proc/PID/stat) and
of the client (this process, ``time.process_time``), taken around the timed runs and
their client sessions only (not the server's start or the warm-up); raw and floor count
all RAW_ROUNDS rounds, divided by all their requests. Floor server CPU / gateway server
CPU is the goal's figure, in a form load moves little (both servers run the same way).
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
import json
import multiprocessing
import shutil
import tempfile
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from bench.callbacks_load import PARTNER, WARMUP, add_history, bodies, build_workspace, place_cases, sign
from bench.common import Cpu, Goal, add_goals_option, cpu_used, keys_settled, run_loop, write_goals
from gateway import heap
from gateway.clock import isotime
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.inbound import pipeline as inbound
from gateway.inbound import webhooks

PATH = f"/v1/partners/{PARTNER}/callbacks"
RAW_ROUNDS = 3


# -- the servers -----------------------------------------------------------------------------


async def raw_handler(request: web.Request) -> web.Response:
    """The raw server: read the body, answer 202."""
    await request.read()
    return web.json_response({"ok": True}, status=202)


def serve(kind: str, ws: str, profile: str | None, conn: Any, loop: str = "asyncio") -> None:
    """Child process: run one server until the parent says stop."""
    gw: Gateway | None = None

    async def floor(request: web.Request) -> web.Response:
        """The least a callback takes with this stack: the gateway's own signature check,
        schema validation and dedupe insert, committed; no case, rules or audit."""
        assert gw is not None
        body = await request.read()
        signed = webhooks.read(request.headers, now=time.time())
        webhook_id = webhooks.verify(signed, body, secrets=gw.keys.webhook_secrets(PARTNER), public_keys=())
        inbound.parse_event(body, gw.now())
        async with gw.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO callbacks (partner_id, webhook_id, received_at) VALUES (?, ?, ?)"
                " ON CONFLICT (partner_id, webhook_id) DO NOTHING",
                (PARTNER, webhook_id, isotime(gw.now())),
            )
        return web.json_response({"ok": True}, status=202)

    async def main() -> None:
        nonlocal gw
        if kind == "gateway":
            from gateway.http import create_app

            gw = await Gateway.open(load_settings(Path(ws)))
            app = create_app(gw.settings, gateway=gw)
        elif kind == "floor":
            gw = await Gateway.open(load_settings(Path(ws)))
            app = web.Application(client_max_size=1024 * 1024 + 1024)
            app.router.add_post(PATH, floor)
        else:
            app = web.Application(client_max_size=1024 * 1024 + 1024)
            app.router.add_post(PATH, raw_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        heap.settle()  # every server, as `gateway serve` does once started
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        conn.send(runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        profiler = None
        if profile and await loop.run_in_executor(None, conn.recv) == "profile":
            import cProfile

            # Timed by the loop thread's CPU, not the wall clock: on a shared machine the
            # wall clock charges whatever ran when another process had the core.
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
        while await loop.run_in_executor(None, conn.recv) == "compact":
            if gw is not None:  # the run's pages copied back now, not after the timing
                await gw.db.compact()
            conn.send("compacted")
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        await runner.cleanup()
        if gw is not None:
            await gw.close()
        conn.send("stopped")

    run_loop(main(), loop)


class Server:
    def __init__(self, kind: str, ws: Path, profile: str | None = None, loop: str = "asyncio") -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.profile = profile
        self.proc = ctx.Process(target=serve, args=(kind, str(ws), profile, child, loop), daemon=True)

    def __enter__(self) -> Server:
        self.proc.start()
        self.port = self.conn.recv()
        return self

    def timed(self) -> None:
        """Called after warm-up, before the timed run."""
        if self.profile:
            self.conn.send("profile")

    def compact(self) -> None:
        """Called at the end of the timed runs: the server copies the pages its commits
        wrote back into the database file, which its checkpointer would do a moment
        later, so that that work counts as well."""
        self.conn.send("compact")
        assert self.conn.recv() == "compacted"

    def __exit__(self, *exc: object) -> None:
        self.conn.send("stop")
        self.conn.recv()
        self.proc.join(30)


# -- the client --------------------------------------------------------------------------------


async def post_all(port: int, requests: list[tuple[bytes, dict[str, str]]], concurrency: int
                   ) -> tuple[float, Counter[int], int]:
    """Seconds to POST every request with ``concurrency`` in flight; statuses; violations."""
    url = f"http://127.0.0.1:{port}{PATH}"
    statuses: Counter[int] = Counter()
    violations = 0
    it = iter(requests)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal violations
            for body, headers in it:
                async with session.post(url, data=body, headers=headers) as answer:
                    reply = await answer.read()
                statuses[answer.status] += 1
                if answer.status == 202 and json.loads(reply).get("violations"):
                    violations += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, statuses, violations


def run(kind: str, ws: Path, warm: list[Any], timed: list[Any], concurrency: int,
        profile: str | None = None, rounds: int = 1, loop: str = "asyncio"
        ) -> tuple[float, Counter[int], int, Cpu]:
    """Warm up, then time ``rounds`` runs of the same requests: the median run's seconds,
    statuses and violations, and the CPU (client and server) of all ``rounds`` runs; the
    server on ``loop``."""
    with Server(kind, ws, profile, loop) as server:
        assert server.proc.pid is not None  # started
        asyncio.run(post_all(server.port, warm, concurrency))
        server.timed()
        with cpu_used(server.proc.pid) as cpu:
            runs = sorted(asyncio.run(post_all(server.port, timed, concurrency)) for _ in range(rounds))
            server.compact()
        return (*runs[rounds // 2], cpu)


def print_cpu(n: int, raw: Cpu, floor: Cpu, gw: Cpu, profiled: bool) -> tuple[float, float]:
    """CPU µs per request of each server and of the client (raw and floor: all RAW_ROUNDS
    rounds), and the ratios of the servers' CPU; returns the floor's and the gateway's µs."""
    us = 1e6 / n
    raw_us, floor_us = raw.server * us / RAW_ROUNDS, floor.server * us / RAW_ROUNDS
    gw_us = gw.server * us
    print(f"CPU per request (user+sys; raw and floor: all {RAW_ROUNDS} rounds, {n * RAW_ROUNDS}"
          f" requests; gateway: its one run, {n} requests):")
    print(f"  raw server     {raw_us:6.0f} µs, client {raw.here * us / RAW_ROUNDS:6.0f} µs")
    print(f"  floor server   {floor_us:6.0f} µs, client {floor.here * us / RAW_ROUNDS:6.0f} µs")
    print(f"  gateway server {gw_us:6.0f} µs, client {gw.here * us:6.0f} µs"
          + (" (server under cProfile)" if profiled else ""))
    print(f"CPU ratio raw server / gateway server: {raw_us / gw_us:.2f} (load-independent form of"
          f" the wall-clock ratio, the server being the bottleneck)")
    print(f"CPU ratio raw server / floor server: {raw_us / floor_us:.2f} (load-independent form of"
          f" the floor / raw ratio, the server being the bottleneck)")
    print(f"FLOOR / GATEWAY (the goal's figure): floor server {floor_us:.0f} µs / gateway server"
          f" {gw_us:.0f} µs = {floor_us / gw_us:.2f} (goal >= 0.6, moonshot 0.8)")
    return floor_us, gw_us


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="timed callbacks (default 4000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--cases", type=int, default=400, help="cases placed (default 400)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help="reports each debtor already has from before the timed week (default 0)")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile stats of the gateway server")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="asyncio",
                        help="the servers' event loop; both: raw and floor on asyncio's, the gateway on each")
    add_goals_option(parser)
    args = parser.parse_args()
    if args.cases <= WARMUP + 4 * args.concurrency:
        parser.error(f"--cases must exceed {WARMUP + 4 * args.concurrency}")
    if args.requests < args.cases - WARMUP:
        parser.error(f"--requests must be at least --cases - {WARMUP} (one acceptance per case)")
    return args


def main() -> None:
    args = parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-inbound-") as tmp:
        start = time.perf_counter()
        ws = build_workspace(Path(tmp))
        refs, secret = asyncio.run(place_cases(ws, args.cases))
        if args.history:
            asyncio.run(add_history(ws, args.history, args.seed))
        keys_settled()  # the webhook secret was just written
        warm_bodies, timed_bodies = bodies(refs, args.requests, args.seed)
        warm = [(b, sign(secret, b)) for b in warm_bodies]
        timed = [(b, sign(secret, b)) for b in timed_bodies]
        setup = time.perf_counter() - start
        kinds = Counter(json.loads(b)["type"] for b in timed_bodies)
        sizes = sorted(len(b) for b in timed_bodies)

        # The raw run is short and so noisier: the median of RAW_ROUNDS runs. The gateway
        # gets one run, as a second would only meet 409s (every webhook-id is taken).
        loop = "asyncio" if args.loop == "both" else args.loop
        # Each gateway run gets the workspace as placed: the second must not find the
        # first's callbacks in the history it judges against.
        if args.loop == "both":
            shutil.copytree(ws, ws.with_name("ws-uvloop"))
        raw_s, raw_status, _, raw_cpu = run("raw", ws, warm, timed, args.concurrency, rounds=RAW_ROUNDS,
                                            loop=loop)
        # The floor stores only webhook ids, in the same table the gateway dedupes by:
        # the gateway's run must find them new, so the floor gets other ids.
        floor_s, floor_status, _, floor_cpu = run("floor", ws, [(b, sign(secret, b)) for b in warm_bodies],
                                                  [(b, sign(secret, b)) for b in timed_bodies],
                                                  args.concurrency, rounds=RAW_ROUNDS, loop=loop)
        gw_s, gw_status, violations, gw_cpu = run("gateway", ws, warm, timed, args.concurrency,
                                                  args.profile, loop=loop)
        if args.loop == "both":
            uv_s, uv_status, _, uv_cpu = run("gateway", ws.with_name("ws-uvloop"), warm, timed,
                                             args.concurrency, loop="uvloop")

    n = len(timed)
    print(f"requests {n} (+{len(warm)} warm-up), concurrency {args.concurrency}, cases {args.cases} "
          f"({args.cases // 2} debtors, {args.history} earlier reports each), setup {setup:.1f} s")
    print("mix: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
          + f"; body bytes min {sizes[0]} median {sizes[n // 2]} max {sizes[-1]}")
    print(f"raw aiohttp (read body, 202):  {n / raw_s:8.0f} requests/s  ({raw_s:.2f} s, median of "
          f"{RAW_ROUNDS}) {dict(raw_status)}")
    print(f"gateway callbacks accepted:    {n / gw_s:8.0f} requests/s  ({gw_s:.2f} s) {dict(gw_status)}"
          f", {violations} with violations")
    print(f"floor (signature, schema, dedupe insert, commit; no case, rules or audit): "
          f"{n / floor_s:8.0f} requests/s  ({floor_s:.2f} s, median of {RAW_ROUNDS})")
    ratio = raw_s / gw_s
    print(f"ratio gateway / raw: {ratio:.2f}; the floor / raw: {raw_s / floor_s:.2f}")
    floor_us, gw_us = print_cpu(n, raw_cpu, floor_cpu, gw_cpu, profiled=bool(args.profile))
    if args.loop == "both":
        print(f"gateway server on uvloop: {n / uv_s:8.0f} requests/s ({uv_s:.2f} s) {dict(uv_status)};"
              f" CPU per callback {gw_cpu.server * 1e6 / n:.0f} µs on asyncio,"
              f" {uv_cpu.server * 1e6 / n:.0f} µs on uvloop: {gw_cpu.server / uv_cpu.server:.2f}x less;"
              f" raw / gateway on uvloop {raw_cpu.server / RAW_ROUNDS / uv_cpu.server:.2f}")
        if uv_status != Counter({202: n}):
            sys.exit("not every request was answered 202 on uvloop")
    if gw_status != Counter({202: n}) or raw_status != Counter({202: n}) or floor_status != Counter({202: n}):
        sys.exit("not every request was answered 202")
    history = f", {args.history} earlier reports each" if args.history else ""
    write_goals(args.goals_json, [Goal(
        f"callbacks, server CPU each ({n:,} callbacks{history}, {loop})",
        f"{floor_us:.0f} µs: signature, schema, dedupe insert, commit",
        f"{gw_us:.0f} µs: {floor_us / gw_us:.2f}", ">= 0.6 (moonshot 0.8)", floor_us / gw_us >= 0.6,
    )])


if __name__ == "__main__":
    main()
