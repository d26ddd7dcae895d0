"""Every bench script starts as the docs say to run it (`.venv/bin/python bench/X.py`),
where its own folder comes first on the path: bench/email.py would then hide the
standard library's email package from any script that did not put the checkout in
that folder's place (bench/fuzz.py did not, and failed before its first request)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "bench").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def test_the_bench_scripts_are_found() -> None:
    assert {p.name for p in SCRIPTS} >= {"audit.py", "email.py", "fuzz.py", "inbound.py", "outbound.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_bench_script_starts_and_shows_its_help(script: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage:" in result.stdout
