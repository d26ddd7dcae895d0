"""Shared fixtures: a real workspace on disk, real keys, real SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import Settings, load_settings
from gateway.core import Gateway
from gateway.db import Database, open_database
from tests.helpers import EXAMPLES, SAMPLE_KEY_CURVES, invoke, write_partner_keys


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An initialised workspace with the sample partners' public keys in place."""
    ws = tmp_path / "ws"
    result = invoke("init", ws)
    assert result.exit_code == 0, result.output
    return ws


@pytest.fixture
def partner_keys(workspace: Path) -> dict[str, dict]:
    return {
        pid: write_partner_keys(workspace / "keys", pid, crv)
        for pid, crv in SAMPLE_KEY_CURVES.items()
    }


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
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """An empty, migrated SQLite database on disk (for the audit log's own tests)."""
    database = await open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    yield database
    await database.close()
