"""Set-up as an operator does it: init, keys, schemas, plugins, help."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from gateway.cli.main import cli
from gateway.config import DATABASE_ENV_VAR, load_settings
from gateway.core import open_database
from gateway.onboarding.keys import KeyStore
from gateway.storage import redact
from gateway.storage.migrations import MIGRATIONS
from schemas import export
from tests.helpers import fail_audit_inserts, invoke, workspace_sql

PRIVATE_FILES = ("bank/signing.jwk", "bank/pseudonym.key", "bank/audit-log.pem")


def test_init_creates_a_working_workspace_with_private_keys_0600(workspace: Path) -> None:
    with workspace_sql(workspace) as sql:
        assert sql("SELECT MAX(version) AS v FROM schema_version")[0]["v"] == len(MIGRATIONS)
    for name in PRIVATE_FILES:
        mode = stat.S_IMODE((workspace / "keys" / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    assert stat.S_IMODE((workspace / "keys" / "bank").stat().st_mode) == 0o700
    assert not list((workspace / "keys").rglob("*.tmp"))


def test_a_secret_is_never_written_through_a_file_left_with_wider_permissions(workspace: Path) -> None:
    """A leftover temporary file (a crash, or planted) must not lend its mode to a key."""
    keys = KeyStore(workspace / "keys")
    leftover = keys.webhook_secret_path("acme-collect").with_name("acme-collect.whsec.tmp")
    leftover.write_text("")
    leftover.chmod(0o666)
    path = keys.add_webhook_secret("acme-collect")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert leftover.read_text() == "" and stat.S_IMODE(leftover.stat().st_mode) == 0o666
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".acme-collect.whsec.")]


def test_sqlite_path_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    ws = tmp_path / "ws"
    assert invoke("init", ws).exit_code == 0
    assert load_settings(ws).database_url == f"sqlite:///{ws / 'gateway.db'}"
    assert (ws / "gateway.db").exists()


def test_the_sqlite_database_and_its_wal_are_readable_by_the_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database holds signed packages, whose payload is personal data."""
    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    ws = tmp_path / "ws"
    assert invoke("init", ws).exit_code == 0

    async def write_and_look() -> dict[str, int]:
        db = await open_database(load_settings(ws).database_url)
        try:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO schema_version (version) VALUES (0)")
            return {p.name: stat.S_IMODE(p.stat().st_mode) for p in ws.glob("gateway.db*")}
        finally:
            await db.close()

    modes = asyncio.run(write_and_look())
    assert set(modes) == {"gateway.db", "gateway.db-wal", "gateway.db-shm"}
    assert all(mode == 0o600 for mode in modes.values()), modes


def test_init_makes_the_workspace_that_config_or_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert invoke("-c", tmp_path / "by-option", "init").exit_code == 0
    assert invoke("-c", tmp_path / "by-option", "partners", "list").exit_code == 0
    monkeypatch.setenv("GATEWAY_CONFIG", str(tmp_path / "by-env" / "gateway.toml"))
    assert invoke("init").exit_code == 0
    assert (tmp_path / "by-env" / "gateway.toml").exists() and (tmp_path / "by-env" / "keys").is_dir()
    assert not (tmp_path / "gateway.toml").exists()  # nothing landed in the current directory
    # An explicit DIRECTORY wins over the environment; against --config it is a usage error.
    assert invoke("init", tmp_path / "by-arg").exit_code == 0
    assert (tmp_path / "by-arg" / "gateway.toml").exists()
    result = invoke("-c", tmp_path / "by-option", "init", tmp_path / "other")
    assert result.exit_code == 2 and "name two workspaces" in result.output
    assert not (tmp_path / "other").exists()


def test_init_where_no_directory_can_be_made_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "a-file" / "ws"
    result = invoke("init", target)
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: cannot create the workspace: {target}: Not a directory"


def test_database_url_from_the_environment_wins_and_its_password_is_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_ENV_VAR, "postgresql://gateway:s3cret@127.0.0.1:1/gateway")
    result = invoke("init", tmp_path / "ws")
    assert result.exit_code == 1
    assert "cannot open database postgresql://gateway:***@127.0.0.1:1/gateway" in result.output
    assert "s3cret" not in result.output
    monkeypatch.setenv(DATABASE_ENV_VAR, "mysql://gateway@127.0.0.1/gateway")
    result = invoke("-c", tmp_path / "ws", "partners", "list")
    assert result.exit_code == 1 and "unsupported database URL" in result.output


#: Database URLs whose password (Xyzzy, Plugh) must never be printed, however written.
SECRET_URLS = {
    "slash and at": "postgresql://gateway:Xyzzy/Pl@ugh@127.0.0.1:1/gateway",
    "question mark": "postgresql://gateway:Xyzzy?Plugh@127.0.0.1:1/gateway",
    "percent-encoded": "postgresql://gateway:Xyzzy%2FPlugh@127.0.0.1:1/gateway",
    "query password": "postgresql://gateway@127.0.0.1:1/gateway?password=Xyzzy",
    "query, any case": "postgresql://gateway@127.0.0.1:1/gateway?sslmode=disable&PassWord=Xyzzy",
    "sslpassword and passfile": (
        "postgresql://gateway@127.0.0.1:1/gateway?sslpassword=Xyzzy&passfile=/home/Plugh/.pgpass"
    ),
}


@pytest.mark.parametrize("url", SECRET_URLS.values(), ids=list(SECRET_URLS))
def test_no_form_of_database_password_is_printed(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_ENV_VAR, url)
    result = invoke("init", tmp_path / "ws")
    assert result.exit_code == 1
    assert "cannot open database postgresql://gateway" in result.output and "***" in result.output
    assert "Xyzzy" not in result.output and "Plugh" not in result.output, result.output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p/w@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p@w@h/db?search_path=g", "postgresql://u:***@h/db?search_path=g"),
        ("postgresql://u@h/db?password=x&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgres://h/db?passfile=/p&sslpassword=y", "postgres://h/db?passfile=***&sslpassword=***"),
        ("postgresql://u@h/db?application_name=gw", "postgresql://u@h/db?application_name=gw"),
        ("sqlite:////srv/gateway/gateway.db", "sqlite:////srv/gateway/gateway.db"),
    ],
)
def test_redact_keeps_all_but_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_database_newer_than_the_gateway_is_refused(workspace: Path) -> None:
    with workspace_sql(workspace) as sql:
        sql("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS) + 1,))
    result = invoke("-c", workspace, "partners", "list")
    assert result.exit_code == 1
    assert f"schema version {len(MIGRATIONS) + 1}, newer than this gateway knows" in result.output


def test_init_twice_keeps_config_and_keys(workspace: Path) -> None:
    before = {name: (workspace / "keys" / name).read_bytes() for name in PRIVATE_FILES}
    (workspace / "gateway.toml").write_text(
        (workspace / "gateway.toml").read_text().replace("example-bank", "other-bank")
    )
    result = invoke("init", workspace)
    assert result.exit_code == 0
    assert "kept" in result.output
    assert {name: (workspace / "keys" / name).read_bytes() for name in PRIVATE_FILES} == before
    assert load_settings(workspace).bank_id == "other-bank"


def test_private_keys_are_never_printed(workspace: Path) -> None:
    secrets = [json.loads((workspace / "keys/bank/signing.jwk").read_text())["d"]]
    secrets.append((workspace / "keys/bank/pseudonym.key").read_text().strip())
    outputs = [
        invoke("init", workspace).output,
        invoke("-c", workspace, "keys", "generate").output,
        invoke("-c", workspace, "keys", "jwks").output,
        invoke("-c", workspace, "keys", "rotate").output,
    ]
    for out in outputs:
        for secret in secrets:
            assert secret not in out
    published = json.loads(invoke("-c", workspace, "keys", "jwks").output)
    assert all("d" not in key for key in published["keys"])


def test_rotation_keeps_old_public_key_published(workspace: Path) -> None:
    store = KeyStore(workspace / "keys")
    old = store.signing_key().kid
    result = invoke("-c", workspace, "keys", "rotate", "--alg", "EdDSA")
    assert result.exit_code == 0, result.output
    new = store.signing_key()
    assert new.kid != old and new.alg == "EdDSA"
    kids = [k["kid"] for k in store.public_jwks()["keys"]]
    assert kids == [new.kid, old]


def test_pseudonyms_differ_between_partners_and_are_stable(workspace: Path) -> None:
    store = KeyStore(workspace / "keys")
    a, b = store.pseudonymizer("partner:a"), store.pseudonymizer("partner:b")
    assert a.token("13812341999") == store.pseudonymizer("partner:a").token("13812341999")
    assert a.token("13812341999") != b.token("13812341999")


def test_missing_config_is_one_clear_line(tmp_path: Path) -> None:
    result = invoke("-c", tmp_path / "nowhere", "partners", "list")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "gateway init" in result.output and "Traceback" not in result.output


def test_invalid_config_names_the_field(workspace: Path) -> None:
    (workspace / "gateway.toml").write_text('bank_id = "bank-x"\ncolour = "blue"\n')
    result = invoke("-c", workspace, "partners", "list")
    assert result.exit_code == 1
    assert "gateway.toml" in result.output and "colour" in result.output


def test_checked_in_json_schemas_match_the_models() -> None:
    assert export.stale() == [], "run `gateway schemas export` and commit schemas/json/"


def test_schemas_export_check_reports_drift(tmp_path: Path) -> None:
    result = invoke("schemas", "export", "--dir", tmp_path)
    assert result.exit_code == 0
    (tmp_path / "case.schema.json").write_text("{}\n")
    result = invoke("schemas", "export", "--check", "--dir", tmp_path)
    assert result.exit_code == 1 and "case.schema.json" in result.output


def test_plugins_lists_builtin_adapters_as_json() -> None:
    result = invoke("plugins")
    plugins = json.loads(result.output)
    adapters = sorted(a for p in plugins for a in p["adapters"])
    assert adapters == ["agency_http", "arbitration_http", "email_smtp", "sftp_batch", "sms_http"]
    assert all(p["builtin"] for p in plugins)
    hooks = {p["name"]: p["hooks"] for p in plugins}
    assert hooks.pop("gateway.onboarding.file_custody") == ["gateway_key_custody"]
    assert hooks.pop("gateway.onboarding.hsm") == ["gateway_key_custody"]
    assert hooks.pop("plugins.sms_http") == ["gateway_register_adapters", "gateway_register_callback_formats"]
    assert all(h == ["gateway_register_adapters"] for h in hooks.values())


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    command = dict(_commands(cli))[path]
    assert command.help, f"`gateway {' '.join(path)}` has no help text"


def test_rotation_that_cannot_be_recorded_does_not_happen(workspace: Path) -> None:
    store = KeyStore(workspace / "keys")
    before = store.signing_key().kid

    async def sabotage() -> None:
        async with await open_database(load_settings(workspace).database_url) as db, db.transaction() as tx:
            await fail_audit_inserts(tx)

    asyncio.run(sabotage())
    result = invoke("-c", workspace, "keys", "rotate")
    assert result.exit_code == 1 and "disk full" in result.output
    assert store.signing_key().kid == before
    assert [k["kid"] for k in store.public_jwks()["keys"]] == [before]


def test_a_database_file_that_cannot_be_created_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    assert invoke("init", ws).exit_code == 0
    unmakeable = tmp_path / ("x" * 300 + ".db")  # longer than a file name may be
    monkeypatch.setenv(DATABASE_ENV_VAR, f"sqlite:///{unmakeable}")
    result = invoke("-c", ws, "partners", "list")
    assert result.exit_code == 1
    assert result.output == f"Error: cannot create database {unmakeable}: File name too long\n"


def test_stored_times_have_one_width_whatever_the_year() -> None:
    from datetime import UTC, datetime

    from gateway.clock import isotime

    assert isotime(datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "0999-01-02T03:04:05.000006Z"
    assert isotime(datetime(2026, 11, 23, 18, 0, tzinfo=UTC)) == "2026-11-23T18:00:00.000000Z"
