"""`bench/phases.py` times each step of a placement and of a callback by wrapping the
function that performs it. A step whose function moved, was renamed or is no longer
called would crash the script or time nothing (it did once, after sealing moved), so a
short run must time every step it lists. The script measures the SQLite backend (its
steps include SQLite's BEGIN and COMMIT), whichever database the suite runs on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench import phases
from gateway.config import DATABASE_ENV_VAR

REPO = Path(__file__).resolve().parents[1]


def _figures(section: str) -> dict[str, float]:
    return {
        m.group(1).strip(): float(m.group(2))
        for m in re.finditer(r"^  +(\S.*?)\s+(-?[\d.]+) µs$", section, re.M)
    }


def test_every_step_bench_phases_lists_is_timed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != DATABASE_ENV_VAR}
    # 800 callbacks: the 300 cases' acceptances first, then reports the rules judge.
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "phases.py"), "--placements", "20", "--callbacks", "800"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    placing, _, taking = result.stdout.partition("callbacks (client in this process)")
    for steps, section in ((phases.PLACEMENT, placing), (phases.CALLBACK, taking)):
        figures = _figures(section)
        for _, label, _, _ in steps:
            assert label in figures, f"{label!r} is not in the output:\n{section}"
            assert figures[label] > 0, f"{label!r}: its function was never called"
