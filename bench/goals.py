"""Every speed goal of issue 26 from one command: the goal scripts one after the other,
then one table of each goal's figure, its floor, the gateway's side and whether it is met.

    .venv/bin/python bench/goals.py [--quick] [--only outbound,inbound,email,audit]

Runs bench/outbound.py (3,000 packages), bench/inbound.py, bench/email.py and
bench/audit.py with their defaults (`make bench` installs what email.py needs and runs
this), each in a process of its own as the docs run it, their output shown as it comes;
each hands its goal figures over in a JSON file (`--goals-json`). ``--quick`` runs them
small, to check that every script works (a smoke run: its figures are noisier and say
little). The exit status is 1 when a goal is not met or a script failed, 0 otherwise.
Takes about a minute on a 2-core machine (20 seconds with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Each goal script with its arguments: as the docs' figures were taken, and small.
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "outbound": (["--packages", "3000"], ["--packages", "300"]),
    "inbound": ([], ["--requests", "400", "--cases", "200"]),
    "email": ([], ["--messages", "100"]),
    "audit": ([], ["--entries", "100000"]),
}


def run(name: str, quick: bool, folder: Path) -> tuple[list[dict[str, object]], str | None]:
    """Run one script; its goals, and why it gave none (None if it did)."""
    arguments = SCRIPTS[name][1 if quick else 0]
    out = folder / f"{name}.json"
    script = f"bench/{name}.py"
    print(f"== {script} {' '.join(arguments)}".rstrip(), flush=True)
    start = time.perf_counter()
    command = [sys.executable, str(REPO / script), *arguments, "--goals-json", str(out)]
    result = subprocess.run(command, cwd=folder)
    print(f"== {script}: {time.perf_counter() - start:.0f} s, exit status {result.returncode}", flush=True)
    if result.returncode != 0:
        return [], f"{script} failed (exit status {result.returncode})"
    if not out.exists():
        return [], f"{script} wrote no goals"
    return json.loads(out.read_text()), None


def table(goals: list[dict[str, object]], failures: list[str]) -> list[str]:
    lines = ["| figure | floor | gateway | goal | |", "| --- | --- | --- | --- | --- |"]
    for goal in goals:
        cells = [goal["figure"], goal["floor"], goal["gateway"], goal["goal"]]
        lines.append("| " + " | ".join(map(str, cells)) + f" | {'met' if goal['met'] else 'NOT met'} |")
    lines += [f"| {failure} | | | | did not run |" for failure in failures]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: every script, small")
    parser.add_argument("--only", metavar="NAMES", default=",".join(SCRIPTS),
                        help=f"comma-separated, of {', '.join(SCRIPTS)} (default: all)")
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCRIPTS]
    if unknown or not names:
        parser.error(f"--only takes names of {', '.join(SCRIPTS)}, not {', '.join(unknown) or 'nothing'}")
    goals: list[dict[str, object]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-goals-") as tmp:
        try:
            for name in names:
                found, failure = run(name, args.quick, Path(tmp))
                goals += found
                if failure:
                    failures.append(failure)
        except KeyboardInterrupt:  # Ctrl-C reaches the running script too; it stops
            print("interrupted: the goals measured so far follow", file=sys.stderr)
            failures.append("interrupted")
    print()
    print("\n".join(table(goals, failures)))
    met = sum(1 for goal in goals if goal["met"])
    unfinished = f"; scripts that did not finish: {len(failures)}" if failures else ""
    print(f"\ngoals met: {met} of {len(goals)}{unfinished}")
    return 1 if failures or met < len(goals) else 0


if __name__ == "__main__":
    sys.exit(main())
