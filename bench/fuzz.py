"""Fuzz a real `gateway serve`: N requests (default 100,000) at every route of its
/openapi.json and of the dashboard, from several connections at once.

    .venv/bin/python bench/fuzz.py [--requests 100000] [--concurrency 16] [--seed 1]
    GATEWAY_DATABASE_URL=postgresql://... .venv/bin/python bench/fuzz.py   # on PostgreSQL

What is sent (bench/fuzzgen.py, bench/fuzzraw.py, values drawn by hypothesis from the
document's own schemas in bench/fuzzvalues.py) comes in windows of one kind at a time:

- refused: what must store nothing: every secured route without a valid token (or
  with a role that may not call it), forged callbacks and provider receipts, garbage
  methods, paths, bodies and media types, the dashboard signed out, public routes with
  fuzzed parameters, malformed HTTP over raw sockets (bad request lines, huge headers,
  invalid chunking, non-UTF-8, short bodies, trickled and cut-off requests);
- open: authenticated and maybe taken in: callbacks signed with the partner's secret
  holding hostile values, receipts with a valid JWT, operator writes and reads with
  fuzzed bodies, paths and queries, the dashboard signed in.

Before and after each refused window the rows of every table are counted: any
difference is a row stored from refused input. For open windows, every authentic
report that was refused must not be found in the callbacks table under its message
id (except a 409: a replay, or a report the case's state does not allow, which the
gateway refuses and flags for review by design). Ten connections that send one byte
and stop run throughout: each must be closed by the server within the header timeout
(10 s) plus 5 s.

Status classes besides 1xx-5xx: "hung up" (a raw request the client closes on purpose
once sent, as a slowloris that gives up), "held" (a raw request left incomplete on
purpose, such as a chunked body without its last chunk, that the server rightly waits
on: the client hangs up after 1.5 s), "closed" (the server closed the connection
without an answer, as it does with some malformed HTTP), "timeout" (no answer within
30 s: a goal missed).

Goals, checked at the end (exit status 1 if one is missed): 0 answers 5xx, 0 rows
stored from refused input, 0 requests without an answer in 30 s, every slow connection
cut, serve's RSS growth (peak minus start) within --rss-growth-mb, no traceback or
ERROR line in serve's log, and serve stops within 30 s of SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, this folder comes first on the path, where bench/email.py would hide
# the standard library's email package: the checkout takes the folder's place.
REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
else:  # imported (by the tests, another bench)
    sys.path.insert(0, str(REPO))

from bench.common import Cpu, cpu_used
from bench.fuzzgen import Fuzzer
from bench.fuzzprobe import Probe, RssSampler, rss_kb, send_http, send_raw, slow_connections
from bench.fuzzsite import build_workspace, prepare, serving, target
from bench.fuzztarget import Pools
from gateway.config import load_settings


@dataclass
class Result:
    sent: int = 0
    seconds: float = 0.0
    classes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    refused_rows: Counter[str] = field(default_factory=Counter)
    """Per table: rows added during refused windows."""
    leaked_reports: int = 0
    slow_not_cut: int = 0
    rss_kb: tuple[int, int, int] = (0, 0, 0)
    rss_quarters: list[int] = field(default_factory=list)
    """serve's RSS (kB) after a quarter, half, three quarters and all of the requests."""
    cpu: Cpu = field(default_factory=Cpu)
    log_problems: list[str] = field(default_factory=list)

    def failures(self, rss_growth_mb: float) -> list[str]:
        start, peak, _ = self.rss_kb
        checks = [
            (self.classes["5xx"] == 0, f"{self.classes['5xx']} answers 5xx"),
            (not self.refused_rows, f"rows stored from refused input: {dict(self.refused_rows)}"),
            (self.leaked_reports == 0, f"{self.leaked_reports} refused reports stored"),
            (self.classes["timeout"] == 0, f"{self.classes['timeout']} requests unanswered in 30 s"),
            (self.slow_not_cut == 0, f"{self.slow_not_cut} slow connections not cut"),
            ((peak - start) / 1024 <= rss_growth_mb, f"RSS grew {(peak - start) / 1024:.0f} MB"),
            (not self.log_problems, f"{len(self.log_problems)} tracebacks or ERROR lines in serve's log"),
        ]
        return [why for ok, why in checks if not ok]


def status_class(status: int | str) -> str:
    return f"{status // 100}xx" if isinstance(status, int) else status


async def run_window(probe: Probe, fuzzer: Fuzzer, count: int, refused: bool, result: Result) -> None:
    requests = [fuzzer.refused() if refused else fuzzer.open() for _ in range(count)]
    pending = iter(requests)

    async def worker() -> None:
        for request in pending:
            status = await (send_raw(probe.port, request) if request.raw is not None
                            else send_http(probe.session, probe.base, request))  # fmt: skip
            cls = status_class(status)
            result.classes[cls] += 1
            result.kinds[(request.kind, cls)] += 1
            if cls == "5xx" and len(result.server_errors) < 20:
                shown = request.raw[:120] if request.raw is not None else request.path[:120]
                result.server_errors.append(f"{status} {request.kind} {request.method} {shown!r}")
            if request.message and isinstance(status, int):
                probe.note_report(request.message, status)

    before = await probe.row_counts() if refused else None
    await asyncio.gather(*(worker() for _ in range(probe.concurrency)))
    result.sent += count
    if before is not None:
        after = await probe.row_counts()
        for table, rows in after.items():
            if rows != before.get(table, 0):
                result.refused_rows[table] += rows - before.get(table, 0)


async def attack(ws: Path, port: int, pid: int, requests: int, concurrency: int, seed: int,
                 found: dict, window: int) -> Result:  # type: ignore[type-arg]  # fmt: skip
    result = Result()
    async with Probe(load_settings(ws).database_url, port, concurrency) as probe:
        tgt = await target(port, found)
        fuzzer = Fuzzer(tgt, Pools.draw(tgt.document, 300, seed), seed)
        sampler = RssSampler(pid)
        slow = asyncio.create_task(slow_connections(port, 10))
        started = time.perf_counter()
        with cpu_used(pid) as result.cpu:
            async with sampler:
                done = 0
                while done < requests:
                    count = min(window, requests - done)
                    await run_window(probe, fuzzer, count, refused=(done // window) % 2 == 0, result=result)
                    done += count
                    while len(result.rss_quarters) < 4 * done // requests:
                        result.rss_quarters.append(rss_kb(pid))
        result.seconds = time.perf_counter() - started
        result.slow_not_cut = await slow
        result.leaked_reports = await probe.leaked_reports()
        result.rss_kb = sampler.start, sampler.peak, sampler.end
    return result


def log_problems(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if "Traceback" in line or line.startswith(("ERROR", "CRITICAL"))]


def fuzz(root: Path, requests: int, concurrency: int = 16, seed: int = 1, window: int = 1000,
         cases: int = 4) -> Result:  # fmt: skip
    """Build a workspace under ``root``, serve it and fuzz it; the figures."""
    ws = build_workspace(root)
    found = asyncio.run(prepare(ws, cases))
    with serving(ws, root / "serve.log") as served:
        result = asyncio.run(attack(ws, served.port, served.pid, requests, concurrency, seed, found, window))
    result.log_problems = log_problems(served.log)
    return result


def report(result: Result, rss_growth_mb: float) -> list[str]:
    start, peak, end = result.rss_kb
    print(f"requests sent:        {result.sent} in {result.seconds:.1f} s "
          f"({result.sent / max(result.seconds, 1e-9):.0f} requests/s)")  # fmt: skip
    print("by status class:      " + ", ".join(f"{k} {v}" for k, v in sorted(result.classes.items())))
    print(f"answers 5xx:          {result.classes['5xx']}")
    print(f"rows stored from refused input: {sum(result.refused_rows.values())} "
          f"(+ {result.leaked_reports} refused reports found stored)")  # fmt: skip
    print(f"serve RSS (MB):       start {start / 1024:.1f}, peak {peak / 1024:.1f}, end {end / 1024:.1f}; "
          "after each quarter " + " ".join(f"{kb / 1024:.1f}" for kb in result.rss_quarters))  # fmt: skip
    print(f"CPU s per 1000 requests: serve {1000 * result.cpu.server / max(result.sent, 1):.2f}, "
          f"this client {1000 * result.cpu.here / max(result.sent, 1):.2f}")  # fmt: skip
    print(f"slow connections not cut: {result.slow_not_cut}; serve log problems: {len(result.log_problems)}")
    print("by kind:")
    for kind in sorted({k for k, _ in result.kinds}):
        counts = {c: n for (k, c), n in result.kinds.items() if k == kind}
        print(f"  {kind:32} " + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())))
    for line in result.server_errors + result.log_problems[:20]:
        print(f"  ! {line}")
    failures = result.failures(rss_growth_mb)
    print("goals: " + ("all met" if not failures else "MISSED: " + "; ".join(failures)))
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100_000, help="requests to send (default 100000)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections at once (default 16)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request generator (default 1)")
    parser.add_argument(
        "--window",
        type=int,
        default=1000,
        help="requests per window of one kind, refused or open (default 1000)",
    )
    parser.add_argument(
        "--rss-growth-mb",
        type=float,
        default=150.0,
        help="most serve's RSS may grow over the run, in MB (default 150)",
    )
    parser.add_argument(
        "--cases", type=int, default=25, help="cases placed with each partner before the run (default 25)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="build the workspace here and keep it")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True)
        result = fuzz(args.keep, args.requests, args.concurrency, args.seed, args.window, args.cases)
    else:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            result = fuzz(Path(tmp), args.requests, args.concurrency, args.seed, args.window, args.cases)
    return 1 if report(result, args.rss_growth_mb) else 0


if __name__ == "__main__":
    sys.exit(main())
