"""Helpers for tests: drive the real CLI, play a partner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from gateway.cli.main import cli
from gateway.config import load_settings
from gateway.core import Gateway, open_database
from gateway.lifecycle.columns import open_package
from gateway.onboarding import registry
from gateway.onboarding.jwk import generate_encryption_key
from gateway.storage import Row, Transaction
from schemas.audit import KeyRotated

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SAMPLE_KEY_CURVES = {"acme-collect": "P-256", "sz-arbitration": "X25519"}


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_partner_keys(keys_dir: Path, partner_id: str, crv: str) -> dict:
    """Play the partner: make its key pair, publish the public half, return the private JWK."""
    key = generate_encryption_key(crv)
    (keys_dir / "partners").mkdir(parents=True, exist_ok=True)
    (keys_dir / "partners" / f"{partner_id}.jwks.json").write_text(
        json.dumps({"keys": [key.as_dict(private=False)]})
    )
    return key.as_dict(private=True)


def copy_profile(name: str, dest: Path, replace: dict[str, str] | None = None) -> Path:
    """A sample profile, edited by plain text replacement, for refusal tests."""
    text = (EXAMPLES / "partners" / name).read_text()
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} not in {name}"
        text = text.replace(old, new)
    out = dest / name
    out.write_text(text)
    return out


async def dial_by_token(
    gw: Gateway, folder: Path, name: str, purpose: str, paths: tuple[str, ...] = ("debtor.phones[].number",)
) -> None:
    """Re-onboard the sample partner profile ``name`` so that it receives the numbers at
    ``paths`` as tokens, which it then reports as ``number_token``."""
    await receive_numbers(gw, folder, name, purpose, "token", paths)


async def receive_numbers(
    gw: Gateway,
    folder: Path,
    name: str,
    purpose: str,
    transform: str,
    paths: tuple[str, ...] = ("debtor.phones[].number",),
) -> None:
    """Re-onboard the sample partner profile ``name`` so that it receives the numbers at
    ``paths`` through ``transform`` (``keep``: in clear, with their tokens beside them)."""
    text = (EXAMPLES / "partners" / name).read_text()
    field = f"[policy.{purpose}.fields]\n"
    for path in paths:
        text = text.replace(f'"{path}" = "keep"\n', "")
        text = text.replace(field, field + f'"{path}" = "{transform}"\n')
    profile = folder / name
    profile.write_text(text)
    await registry.add(gw, profile, actor="test", update=True)


def sample_case(name: str = "case-1001.json") -> Path:
    return EXAMPLES / "cases" / name


def audit_entry(n: int) -> KeyRotated:
    """A small, valid audit entry; ``n`` makes each one different."""
    return KeyRotated(
        at="2026-01-01T00:00:00.000000Z", actor="test", key="bank-signing", old_kid=f"k{n}", new_kid="x"
    )


Sql = Callable[..., list[Row]]


@contextmanager
def workspace_sql(ws: Path) -> Iterator[Sql]:
    """Play someone with direct access to the workspace's database, whichever backend:
    ``sql(statement, params)`` runs one statement in a transaction of its own."""
    with asyncio.Runner() as runner:
        db = runner.run(open_database(load_settings(ws).database_url))

        async def one(statement: str, params: Sequence[Any]) -> list[Row]:
            async with db.transaction() as tx:
                if statement.lstrip().upper().startswith("SELECT"):
                    return await tx.fetchall(statement, params)
                await tx.execute(statement, params)
                return []

        try:
            yield lambda statement, params=(): runner.run(one(statement, params))
        finally:
            runner.run(db.close())


async def fail_audit_inserts(tx: Transaction, table: str = "audit_entries", after: int = 0) -> None:
    """A trigger that makes inserts into `table` (the audit log) fail with 'disk full'
    once it holds `after` rows."""
    full = f"(SELECT COUNT(*) FROM {table}) >= {int(after)}"
    if tx.dialect == "sqlite":
        await tx.execute(
            f"CREATE TRIGGER no_space BEFORE INSERT ON {table} WHEN {full}"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        return
    await tx.execute(
        "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql"
        f" AS $$ BEGIN IF {full} THEN RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$"
    )
    await tx.execute(
        f"CREATE TRIGGER no_space BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION disk_full()"
    )


def audit_tree_row(sql: Sql) -> tuple[int, bytes]:
    """The writer's tree state (size, nodes): what `roll_back_audit_log` restores."""
    [row] = sql("SELECT size, nodes FROM audit_tree WHERE id = 1")
    return row["size"], bytes(row["nodes"])


def roll_back_audit_log(sql: Sql, state: tuple[int, bytes]) -> None:
    """Play someone with database access who puts the log back as it was at an earlier
    tree state: every later entry, stored subtree, checkpoint and cosignature removed,
    and the tree state restored, so that the gateway goes on appending from there."""
    size, nodes = state
    sql("DELETE FROM audit_cosignatures WHERE size > ?", (size,))
    sql("DELETE FROM audit_checkpoints WHERE size > ?", (size,))
    sql("DELETE FROM audit_entries WHERE idx >= ?", (size,))
    for row in sql("SELECT height, idx FROM audit_nodes"):
        if (row["idx"] + 1) << row["height"] > size:
            sql("DELETE FROM audit_nodes WHERE height = ? AND idx = ?", (row["height"], row["idx"]))
    sql("UPDATE audit_tree SET size = ?, nodes = ? WHERE id = 1", (size, nodes))
async def stored_package(gw: Gateway, package_id: str) -> Row:
    """A package's row with its signed and sealed forms decrypted (they are stored
    encrypted at rest, `gateway.storage.atrest`)."""
    async with gw.db.transaction() as tx:
        row = await tx.fetchone(
            "SELECT p.*, b.sealed, b.signed FROM packages p JOIN package_bodies b ON b.package_id = p.id"
            " WHERE p.id = ?",
            (package_id,),
        )
        assert row is not None, package_id
        return await open_package(gw.keyring, tx, row)


async def reap(proc: asyncio.subprocess.Process) -> None:
    """Kill ``proc`` and wait for it if it is still running: in a test's ``finally``, so
    no `serve` or `dispatch` process outlives a failed test."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
