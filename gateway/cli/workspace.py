"""Workspace commands: ``init``, ``schemas export``, ``plugins``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from gateway.cli.common import echo_json, run, table
from gateway.config import (
    CONFIG_NAME,
    ENV_VAR,
    Settings,
    effective,
    first_error,
    load_settings,
    render_config,
)
from gateway.controls import check_text
from gateway.core import open_database, storage_keyring
from gateway.errors import ConfigError, GatewayError, InvalidInput
from gateway.onboarding.files import CONFIG_MODE, DIR_MODE, make_dir, write_file
from gateway.plugin.manager import describe, get_plugin_manager, key_custody
from gateway.storage import redact
from schemas import export as schema_export


def init_config_path(directory: Path | None, config: Path | None) -> Path:
    """The config file `init` writes: in DIRECTORY; else where --config or $GATEWAY_CONFIG
    points (a directory, or a .toml file); else in the current directory."""
    if directory is not None:
        if config is not None and config != directory and config != directory / CONFIG_NAME:
            raise click.UsageError(
                f"DIRECTORY {directory} and --config {config} name two workspaces; give one of them"
            )
        return directory / CONFIG_NAME
    named = config or (Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None)
    if named is None:
        return Path(CONFIG_NAME)
    return named if named.suffix == ".toml" else named / CONFIG_NAME


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), required=False)
@click.option("--bank-id", default="example-bank", show_default=True, help="Issuer of packages (JWT iss).")
@click.option("--bank-name", default="Example Bank", show_default=True)
@click.option("--signing-alg", type=click.Choice(["ES256", "EdDSA"]), default="ES256", show_default=True)
@click.pass_obj
def init(obj: dict[str, Any], directory: Path | None, bank_id: str, bank_name: str, signing_alg: str) -> None:
    """Create a workspace in DIRECTORY: config, bank keys, database.

    Without DIRECTORY, the workspace is made where --config or $GATEWAY_CONFIG points,
    else in the current directory. Safe to run again: an existing config and existing
    keys are kept.
    """
    config_path = init_config_path(directory, obj["config"])
    try:
        _init(config_path, bank_id, bank_name, signing_alg)
    except OSError as exc:  # a directory that cannot be made, a file that cannot be written
        where = exc.filename or config_path.parent
        raise click.ClickException(f"cannot create the workspace: {where}: {exc.strerror}") from None


def _init(config_path: Path, bank_id: str, bank_name: str, signing_alg: str) -> None:
    make_dir(config_path.parent, DIR_MODE)
    if config_path.exists():
        click.echo(f"kept existing {config_path}")
    else:
        try:
            check_text(bank_name, "bank name")
            Settings(bank_id=bank_id, bank_name=bank_name, signing_alg=signing_alg)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise click.BadParameter(first_error(exc)) from None
        except InvalidInput as exc:
            raise click.BadParameter(str(exc)) from None
        write_file(config_path, render_config(bank_id, bank_name, signing_alg).encode(), CONFIG_MODE)
        click.echo(f"wrote {config_path}")
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        made = key_custody(get_plugin_manager(), settings).generate(settings.signing_alg)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"keys in {settings.keys_dir}: " + (", ".join(made) + " generated" if made else "all present, kept")
    )
    make_dir(settings.partners_dir, DIR_MODE)

    async def create_db() -> None:
        keyring = storage_keyring(key_custody(get_plugin_manager(), settings), settings)
        db = await open_database(settings.database_url, keyring)
        try:
            async with db.transaction() as tx:
                await keyring.ready(tx)  # the key-encryption key of the data at rest
        finally:
            await db.close()

    run(create_db())
    click.echo(f"database ready: {redact(settings.database_url)}")


@click.group()
def schemas() -> None:
    """JSON Schema files generated from the models, for partners."""


@schemas.command("export")
@click.option("--check", is_flag=True, help="Only report files that differ; exit 1 if any.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=schema_export.JSON_DIR,
    show_default=True,
)
def schemas_export(check: bool, directory: Path) -> None:
    """Write schemas/json/*.json from the pydantic models."""
    if check:
        stale = schema_export.stale(directory)
        if stale:
            raise click.ClickException(f"out of date: {', '.join(stale)}; run `gateway schemas export`")
        click.echo("schemas up to date")
        return
    for path in schema_export.write(directory):
        click.echo(f"wrote {path}")


@click.command()
def plugins() -> None:
    """List loaded plugins and the adapters they provide, as JSON."""
    echo_json(describe(get_plugin_manager()))


@click.group("config")
def config_group() -> None:
    """The workspace's settings: gateway.toml and the environment over it."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def config_show(obj: dict[str, Any], as_json: bool) -> None:
    """Every setting in effect, and where it came from (an environment variable,
    gateway.toml, or the default); passwords are shown as ***."""
    try:
        rows = effective(obj["config"])
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(rows)
    else:
        click.echo(table(rows))
