"""A gateway command starts without loading what only a few commands use: the SSH stack
(asyncssh, and the PKCS#11 bindings it pulls in) for SFTP partners, the XLSX reader for
`gateway place` of a workbook. Loaded at start-up they cost every command about 0.15 s
(`python -X importtime -m gateway --help`), `gateway --help` included."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import runpy, sys
sys.argv = ["gateway", "--help"]
try:
    runpy.run_module("gateway", run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print(sorted(name for name in ("asyncssh", "openpyxl", "pkcs11") if name in sys.modules))
"""


def test_a_command_starts_without_the_ssh_stack_or_the_xlsx_reader() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: gateway" in done.stdout  # the command ran, its plugins registered
    assert done.stdout.splitlines()[-1] == "[]"
