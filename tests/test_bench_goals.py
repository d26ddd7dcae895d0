"""`bench/goals.py` runs every goal script of issue 26 and tabulates what they hand over:
a smoke run (`--quick`) must come back with a row for every goal, each with its floor,
the gateway's figure and a verdict. A script that stops handing its goals over, or
crashes, shows here. The scripts measure the SQLite backend whichever database the
suite runs on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.config import DATABASE_ENV_VAR

REPO = Path(__file__).resolve().parents[1]
GOALS = ["outbound, CPU a package", "callbacks, server CPU each", "email reminders, client CPU a message",
         "appends, durable", "verify 100,000 --hashes-only", "inclusion proof"]


def goals(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != DATABASE_ENV_VAR}
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "goals.py"), *arguments],
        capture_output=True, text=True, timeout=600, cwd=cwd, env=env,
    )  # fmt: skip


def test_a_quick_run_gives_every_goal_its_figures_and_verdict(tmp_path: Path) -> None:
    result = goals("--quick", cwd=tmp_path)
    lines = result.stdout.splitlines()
    # The last table (bench/audit.py prints one of its own before).
    header = "| figure | floor | gateway | goal | |"
    assert header in lines, result.stdout[-3000:] + result.stderr[-3000:]
    start = len(lines) - lines[::-1].index(header)
    table = lines[start + 1 : lines.index("", start)]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert [row[0].split(" (")[0] for row in rows] == GOALS, table
    for figure, floor, gateway, goal, verdict in rows:
        assert any(c.isdigit() for c in floor) and any(c.isdigit() for c in gateway), figure
        assert goal and verdict in ("met", "NOT met"), figure
    met = sum(row[4] == "met" for row in rows)
    assert lines[-1] == f"goals met: {met} of {len(GOALS)}"
    # Its status says whether every goal was met (a smoke run's small figures may not be).
    assert result.returncode == (0 if met == len(GOALS) else 1), result.stderr[-3000:]


def test_only_names_the_goal_scripts(tmp_path: Path) -> None:
    result = goals("--only", "outbound,speed", cwd=tmp_path)
    assert result.returncode == 2
    assert "--only takes names of outbound, inbound, email, audit, not speed" in result.stderr
