"""Where a placement's and a callback's time goes, step by step.

    .venv/bin/python bench/phases.py [--placements 1000] [--callbacks 3000]

Placements are made as `bench/outbound.py` makes them (one at a time, in one
workspace), callbacks are sent as `bench/inbound.py` sends them (signed, 16 in flight,
over HTTP on 127.0.0.1 to `create_app`), except that the client runs in this process
too: the rates printed here are not the benchmarks' figures. Each named step is timed
by a `time.perf_counter` wrapper put around the function that performs it, for the
duration of the run; the table gives microseconds per placement or per callback.
Indented steps run inside the step above them, so an outer figure includes the inner
ones, and what an outer step spends outside its listed children is the rest of its
own code. A wrapper adds about a microsecond per call.
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
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bench import callbacks_load
from bench import inbound as inbound_bench
from bench.common import keys_settled
from bench.outbound import workspace
from gateway.audit import log as audit_log
from gateway.cli.placement import read_case
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.demo.partners import ThrowawayCA
from gateway.http import create_app
from gateway.inbound import pipeline as inbound
from gateway.inbound import webhooks
from gateway.placement import package
from gateway.placement import service as placement
from gateway.placement.minimize import Minimizer
from gateway.placement.rows import PlacementRows
from gateway.storage.groups import GroupWriter
from gateway.storage.sqlite import SQLiteDatabase
from gateway.supervision.rules import RulePack

#: (depth, label, owner, attribute): the steps, in the order printed.
Step = tuple[int, str, Any, str]
PLACEMENT: list[Step] = [
    (0, "place", placement, "place"),
    (1, "begin (BEGIN IMMEDIATE)", SQLiteDatabase, "_begin"),
    (1, "partner row (FOR SHARE)", placement.registry, "fetch"),
    (1, "minimize", Minimizer, "__call__"),
    (1, "seal_package", placement, "seal_package"),
    (2, "sign (JWS, ES256)", package, "sign"),
    (2, "encrypt (JWE, ECDH-ES+A256KW)", package, "encrypt"),
    (1, "subject token", placement, "subject_token"),
    (1, "case token", placement, "case_token"),
    (1, "outbox row (sealed at rest)", placement, "package_row"),
    (1, "assignment row", PlacementRows, "assign"),
    (1, "contact points and tokens", PlacementRows, "contacts"),
    (1, "rows (a statement a table)", PlacementRows, "write"),
    (1, "audit append", audit_log, "append"),
    (1, "commit", SQLiteDatabase, "_commit"),
]
CALLBACK: list[Step] = [
    (0, "signature headers", webhooks, "read"),
    (0, "signature (Standard Webhooks)", webhooks, "verify"),
    (0, "schema (pydantic)", inbound, "parse_event"),
    (0, "group transactions (the pipeline)", GroupWriter, "_write"),
    (1, "begin (BEGIN IMMEDIATE)", SQLiteDatabase, "_begin"),
    (1, "partner row", inbound.registry, "fetch"),
    (1, "take in", inbound, "_take_in"),
    (2, "event row", inbound, "_store_event"),
    (2, "compliance check", inbound, "_check"),
    (3, "contact history query", inbound, "contact_history"),
    (3, "rule pack", RulePack, "check_contact"),
    (1, "audit append (one per group)", audit_log, "append"),
    (1, "commit", SQLiteDatabase, "_commit"),
]


class Timers:
    """perf_counter wrappers around each step's function, removed on exit."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Timers:
        for _, label, owner, name in self.steps:
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._timed(label, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)

    def _timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        seconds = self.seconds
        if asyncio.iscoroutinefunction(fn):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    seconds[label] += time.perf_counter() - start

            return timed_async

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - start

        return timed

    def report(self, title: str, count: int, elapsed: float) -> None:
        print(f"{title}: {count} in {elapsed:.2f} s, {elapsed / count * 1e6:.0f} µs each")
        for depth, label, _, _ in self.steps:
            print(f"  {'  ' * depth}{label:<{34 - 2 * depth}} {self.seconds[label] / count * 1e6:8.1f} µs")


async def placements(root: Path, count: int) -> None:
    gw = await workspace(root, 1, ThrowawayCA(root / "ca"))  # nothing is delivered here
    try:
        case = read_case(REPO / "examples" / "cases" / "case-1001.json")
        for _ in range(100):  # warm-up: caches, the tree state, the page cache
            await placement.place(gw, case, "bench", "collection", actor="bench")
        with Timers(PLACEMENT) as timers:
            start = time.perf_counter()
            for _ in range(count):
                await placement.place(gw, case, "bench", "collection", actor="bench")
            timers.report("placements", count, time.perf_counter() - start)
    finally:
        await gw.close()


async def callbacks(ws: Path, count: int) -> None:
    refs, secret = await callbacks_load.place_cases(ws, max(400, count // 8))
    keys_settled()
    warm_bodies, timed_bodies = callbacks_load.bodies(refs, count, seed=7)
    warm = [(b, callbacks_load.sign(secret, b)) for b in warm_bodies]
    timed = [(b, callbacks_load.sign(secret, b)) for b in timed_bodies]
    async with await Gateway.open(load_settings(ws)) as gw:
        runner = web.AppRunner(create_app(gw.settings, gateway=gw), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            await inbound_bench.post_all(port, warm, 16)
            with Timers(CALLBACK) as timers:
                elapsed, statuses, _ = await inbound_bench.post_all(port, timed, 16)
                if statuses != Counter({202: len(timed)}):
                    sys.exit(f"not every callback was answered 202: {dict(statuses)}")
                timers.report("callbacks (client in this process)", len(timed), elapsed)
                print(f"  {gw.writer.jobs / gw.writer.groups:.1f} callbacks per group transaction")
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--placements", type=int, default=1000,
                        help="timed placements (default 1000; 0 leaves them out)")
    parser.add_argument("--callbacks", type=int, default=3000,
                        help="timed callbacks (default 3000; 0 leaves them out)")
    args = parser.parse_args()
    if args.placements < 0 or args.callbacks < 0:
        parser.error("--placements and --callbacks take 0 or more")
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp:
        root = Path(tmp)
        if args.placements:
            asyncio.run(placements(root / "out", args.placements))
        if args.callbacks:
            ws = callbacks_load.build_workspace(root / "in")  # runs the CLI: outside the loop
            asyncio.run(callbacks(ws, args.callbacks))


if __name__ == "__main__":
    main()
