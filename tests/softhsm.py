"""A throwaway SoftHSM2 token for the tests of the PKCS#11 key custody.

Finds Debian's ``softhsm2`` (installing it with apt-get when missing, as root, as
``tests/pgcluster.py`` does for PostgreSQL), points ``SOFTHSM2_CONF`` at a configuration
whose token directory is a new temporary directory, and initialises one token there.
The library reads that configuration once per process, so the tests share one token
and keep apart by the labels of their keys.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.toolchains import apt_install

LABEL = "gateway-test"
PIN = "246810"
SO_PIN = "13579"


def find_module() -> Path | None:
    for candidate in ("/usr/lib/softhsm/libsofthsm2.so", *glob.glob("/usr/lib/*/softhsm/libsofthsm2.so")):
        if Path(candidate).exists() and shutil.which("softhsm2-util"):
            return Path(candidate)
    return None


def install() -> Path:
    """Debian's softhsm2 package, when it is not on the machine yet."""
    found = find_module()
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("SoftHSM2 not found and not root: install Debian's 'softhsm2' package")
    print("[softhsm] installing Debian's softhsm2 package", file=sys.stderr, flush=True)
    apt_install("softhsm2")
    found = find_module()
    if not found:
        raise RuntimeError("the softhsm2 package installed no PKCS#11 library")
    return found


class SoftToken:
    """A token initialised in a temporary directory; `SOFTHSM2_CONF` set while it lives."""

    def __init__(self) -> None:
        self.module = install()
        self.dir = Path(tempfile.mkdtemp(prefix="gateway-softhsm-"))
        (self.dir / "tokens").mkdir()
        self.conf = self.dir / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.dir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        self._previous = os.environ.get("SOFTHSM2_CONF")
        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--so-pin", SO_PIN, "--pin", PIN],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def close(self) -> None:
        if self._previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = self._previous
        shutil.rmtree(self.dir, ignore_errors=True)
