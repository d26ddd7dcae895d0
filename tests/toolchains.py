"""The tools the partner kit's interop tests run: Node with the npm packages of
tests/node/package.json, and the Debian packages that check the Java, Go and C# code.

Node packages are installed with ``npm ci`` from tests/node/package-lock.json into
tests/node/node_modules, with npm's cache in tests/node/.npm-cache (both gitignored),
once and again whenever the lock file changes. Debian packages are installed with
apt-get when missing, as the PostgreSQL tests install theirs (root only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"


def _log(message: str) -> None:
    print(f"[toolchains] {message}", file=sys.stderr, flush=True)


def node_modules() -> Path:
    """tests/node/node_modules, installed as the lock file says."""
    modules = NODE_DIR / "node_modules"
    installed = modules / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found: install Node.js 20 or later with npm")
        _log("npm ci in tests/node")
        cache = str(NODE_DIR / ".npm-cache")
        subprocess.run(
            [npm, "ci", "--cache", cache, "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR, check=True, stdout=subprocess.DEVNULL,
        )
    return modules


def apt_install(package: str) -> None:
    """Install Debian's ``package`` with apt-get (as root), updating the package lists
    first only if the install fails without it."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)


def debian_tool(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` first if it is missing."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(f"{command} not found and not root: install Debian's {package!r} package")
    _log(f"installing Debian's {package} package")
    apt_install(package)
    found = shutil.which(command)
    if found is None:
        raise RuntimeError(f"Debian's {package} package installed no {command}")
    return found
