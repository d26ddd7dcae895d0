"""A throwaway PostgreSQL cluster for the tests and the benchmarks.

``Cluster.start()`` uses the server named by ``GATEWAY_TEST_PG`` (a ``postgresql://`` URL
to a database the tests may fill) when it is set. Otherwise it makes one of its own:

1. finds Debian's server binaries (``/usr/lib/postgresql/<version>/bin``), installing
   the ``postgresql`` package with apt-get when they are missing (root only);
2. ``initdb`` into a new temporary directory, as the ``postgres`` system user when we
   are root (the server refuses to run as root), trust authentication, 127.0.0.1 only;
3. starts it on a free local port with its socket inside that directory;

and ``stop()`` shuts it down and removes the directory. Every test gets a schema of its
own in the one database (``new_schema``), which is much cheaper than a database each.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg

from tests.toolchains import apt_install

ENV_VAR = "GATEWAY_TEST_PG"
# Durability off for the throwaway test cluster only: the tests kill processes, never
# the machine. Benchmarks start the cluster with PostgreSQL's defaults.
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _run(coro: Any) -> Any:
    """``asyncio.run``, in a thread of its own when this one already runs a loop (a
    browser driver's, in the dashboard's tests)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log(message: str) -> None:
    print(f"[postgres] {message}", file=sys.stderr, flush=True)


def find_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    return None


def install() -> Path:
    """Debian's server package, when it is not on the machine yet."""
    found = find_bindir()
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(
            "PostgreSQL server binaries not found and not root: install Debian's "
            f"'postgresql' package, or set {ENV_VAR} to a postgresql:// URL"
        )
    _log("installing Debian's postgresql package")
    apt_install("postgresql")
    found = find_bindir()
    if not found:
        raise RuntimeError("the postgresql package installed no server binaries")
    return found


class Cluster:
    def __init__(self, *, fast: bool = True) -> None:
        self.fast = fast
        self.url = ""
        self._dir: Path | None = None
        self._bindir: Path | None = None
        self._as: list[str] = []

    def start(self) -> Cluster:
        if os.environ.get(ENV_VAR):
            self.url = os.environ[ENV_VAR]
            return self
        self._bindir = install()
        self._dir = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        data = self._dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self._dir, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        user = "postgres" if self._as else (os.environ.get("USER") or "postgres")
        self._run("initdb", "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
        port = _free_port()
        options = [f"-p {port}", "-c listen_addresses=127.0.0.1", f"-k {self._dir}", "-c max_connections=200"]
        options += [f"-c {setting}" for setting in FAST] if self.fast else []
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(self._dir / "server.log"),
            "-w",
            "-o",
            " ".join(options),
            "start",
        )
        self.url = f"postgresql://{user}@127.0.0.1:{port}/postgres"
        _log(f"throwaway cluster on 127.0.0.1:{port} ({self._dir})")
        return self

    def _run(self, tool: str, *args: str) -> None:
        assert self._bindir is not None
        subprocess.run([*self._as, str(self._bindir / tool), *args], check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        if self._dir is None or self._bindir is None:
            return
        subprocess.run(
            [
                *self._as,
                str(self._bindir / "pg_ctl"),
                "-D",
                str(self._dir / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def new_schema(self, name: str) -> str:
        """A fresh, empty schema; the URL that makes it the gateway's ``search_path``."""

        async def create() -> None:
            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE; CREATE SCHEMA "{name}"')
            finally:
                await conn.close()

        _run(create())
        return f"{self.url}{'&' if '?' in self.url else '?'}search_path={name}"

    def clone_schema(self, source: str, target: str) -> None:
        """Copy every table of ``source`` (structure and rows) into the empty ``target``."""

        async def clone() -> None:
            conn = await asyncpg.connect(self.url)
            try:
                tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", source)
                async with conn.transaction():
                    for (table,) in tables:
                        await conn.execute(
                            f'CREATE TABLE "{target}"."{table}" (LIKE "{source}"."{table}" INCLUDING ALL);'
                            f'INSERT INTO "{target}"."{table}" SELECT * FROM "{source}"."{table}"'
                        )
            finally:
                await conn.close()

        _run(clone())

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
