"""Shared fixtures: a real workspace on disk, real keys, a real database.

The suite runs against SQLite by default and against PostgreSQL with ``--db postgresql``
(``make test`` runs both): a throwaway cluster is started for the session and every test
gets an empty schema of its own, handed to the gateway through ``GATEWAY_DATABASE_URL``
so that CLI commands and subprocesses use it too.
"""

from __future__ import annotations

import itertools
import os
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.config import DATABASE_ENV_VAR, Settings, load_settings
from gateway.core import Gateway, open_database
from gateway.storage import Database
from tests.gnupg import Gpg, partner_gnupg
from tests.helpers import EXAMPLES, SAMPLE_KEY_CURVES, invoke, write_partner_keys
from tests.pgcluster import Cluster

_schemas = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="storage backend to run the suite against (postgresql starts a throwaway cluster)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"database backend: {config.getoption('--db')}"


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster | None]:
    if request.config.getoption("--db") != "postgresql":
        yield None
        return
    with Cluster() as cluster:
        yield cluster


def _schema_name() -> str:
    return f"t{next(_schemas)}_{os.getpid()}"


@pytest.fixture(autouse=True)
def database_url(pg_cluster: Cluster | None, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The test's own PostgreSQL schema, or None for SQLite (a file in the workspace)."""
    if pg_cluster is None:
        monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
        return None
    url = pg_cluster.new_schema(_schema_name())
    monkeypatch.setenv(DATABASE_ENV_VAR, url)
    return url


class Templates:
    """Workspaces built once per module and copied for each test, database included."""

    def __init__(self, cluster: Cluster | None) -> None:
        self.cluster = cluster
        self._schemas: dict[Path, str] = {}

    @contextmanager
    def building(self, ws: Path) -> Iterator[None]:
        """Set-up of the template ``ws`` runs against a database of its own."""
        with pytest.MonkeyPatch.context() as mp:
            if self.cluster is None:
                mp.delenv(DATABASE_ENV_VAR, raising=False)
            else:
                self._schemas[ws] = name = _schema_name()
                mp.setenv(DATABASE_ENV_VAR, self.cluster.new_schema(name))
            yield

    def copy(self, template: Path, dest: Path) -> Path:
        """The template's files, and its database into the current test's own."""
        shutil.copytree(template, dest)
        if self.cluster is not None:
            target = urllib.parse.parse_qs(os.environ[DATABASE_ENV_VAR].split("?", 1)[1])["search_path"][0]
            self.cluster.clone_schema(self._schemas[template], target)
        return dest


@pytest.fixture(scope="session")
def templates(pg_cluster: Cluster | None) -> Templates:
    return Templates(pg_cluster)


@pytest.fixture(scope="session")
def gpg() -> Iterator[Gpg]:
    """A partner's GnuPG with its keys (tests/gnupg.py), for the OpenPGP tests."""
    with partner_gnupg() as keys:
        yield keys


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An initialised workspace with the sample partners' public keys in place."""
    ws = tmp_path / "ws"
    result = invoke("init", ws)
    assert result.exit_code == 0, result.output
    return ws


@pytest.fixture
def partner_keys(workspace: Path) -> dict[str, dict]:
    return {pid: write_partner_keys(workspace / "keys", pid, crv) for pid, crv in SAMPLE_KEY_CURVES.items()}


@pytest.fixture
def onboarded(workspace: Path, partner_keys: dict[str, dict]) -> Path:
    for profile in sorted((EXAMPLES / "partners").glob("*.toml")):
        result = invoke("-c", workspace, "partners", "add", profile)
        assert result.exit_code == 0, result.output
    return workspace


@pytest.fixture
def settings(workspace: Path) -> Settings:
    return load_settings(workspace)


@pytest.fixture
async def gw(onboarded: Path) -> AsyncIterator[Gateway]:
    async with await Gateway.open(load_settings(onboarded)) as gateway:
        yield gateway


@pytest.fixture
async def db(tmp_path: Path, database_url: str | None) -> AsyncIterator[Database]:
    """An empty, migrated database (for the audit log's own tests)."""
    database = await open_database(database_url or f"sqlite:///{tmp_path / 'audit.db'}")
    yield database
    await database.close()
