"""`gateway init` sets every mode itself: under umask 000 nothing is left writable by
others, and secrets stay the owner's (keys directories 0700, private files 0600,
public ones 0644, the workspace and partners/ 0750, the config 0640)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import CONFIG_NAME


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_init_sets_explicit_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    ws = tmp_path / "new" / "ws"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "init", str(ws)],
        preexec_fn=lambda: os.umask(umask),  # noqa: PLW1509 - the test is about the umask
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    keys = ws / "keys"
    expected = {
        ws: 0o750,
        ws / CONFIG_NAME: 0o640,
        ws / "partners": 0o750,
        keys: 0o700,
        keys / "bank": 0o700,
        keys / "partners": 0o700,
        keys / "bank" / "signing.jwk": 0o600,
        keys / "bank" / "pseudonym.key": 0o600,
        keys / "bank" / "audit-log.pem": 0o600,
        keys / "bank" / "jwks.json": 0o644,
    }
    found = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in expected}
    assert found == {str(p.relative_to(tmp_path)): oct(m) for p, m in expected.items()}
    for path in ws.rglob("*"):
        assert not mode(path) & stat.S_IWOTH, f"{path} is writable by others: {oct(mode(path))}"
    database = ws / "gateway.db"
    if database.exists():
        assert mode(database) == 0o600
