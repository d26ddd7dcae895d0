"""The ``gateway`` command line.

Every failure prints one line (what went wrong, where, how to fix it) and exits with
status 1; usage errors exit with 2. Nothing is half-written: each command's changes are
one database transaction.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from gateway.config import CONFIG_NAME, ENV_VAR, Settings, first_error, load_settings, render_config
from gateway.core import Gateway, open_database
from gateway.errors import ConfigError, GatewayError, InvalidInput
from gateway.onboarding import registry
from gateway.onboarding.keys import KeyStore, generate_signing_key
from gateway.placement import service as placement
from gateway.plugin.manager import describe, get_plugin_manager
from gateway.storage import redact
from schemas import export as schema_export
from schemas.case import Case

T = TypeVar("T")


def actor() -> str:
    return os.environ.get("GATEWAY_ACTOR") or f"cli:{getpass.getuser()}"


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine, turning gateway errors into one clean CLI line."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None


def with_gateway(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Open the workspace named by --config for the command, and close it after."""

    @click.pass_obj
    @functools.wraps(fn)
    def wrapper(obj: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        async def main() -> Any:
            settings = load_settings(obj["config"])
            async with await Gateway.open(settings) as gw:
                return await fn(gw, *args, **kwargs)

        return run(main())

    return wrapper


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@click.group()
@click.option(
    "-c",
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Workspace config file or directory [default: ${ENV_VAR} or ./{CONFIG_NAME}]",
)
@click.version_option(package_name="agency-gateway")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Agency Gateway: minimized, encrypted case packages to collection partners."""
    ctx.obj = {"config": config}


# -- workspace -------------------------------------------------------------------------


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


@cli.command()
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
    config_path.parent.mkdir(parents=True, exist_ok=True)
    if config_path.exists():
        click.echo(f"kept existing {config_path}")
    else:
        try:
            Settings(bank_id=bank_id, bank_name=bank_name, signing_alg=signing_alg)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise click.BadParameter(first_error(exc)) from None
        config_path.write_text(render_config(bank_id, bank_name, signing_alg), encoding="utf-8")
        click.echo(f"wrote {config_path}")
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    made = KeyStore(settings.keys_dir).generate(settings.signing_alg)
    click.echo(
        f"keys in {settings.keys_dir}: " + (", ".join(made) + " generated" if made else "all present, kept")
    )
    settings.partners_dir.mkdir(parents=True, exist_ok=True)

    async def create_db() -> None:
        db = await open_database(settings.database_url)
        await db.close()

    run(create_db())
    click.echo(f"database ready: {redact(settings.database_url)}")


# -- keys ------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """The bank's keys: generate, rotate, publish."""


@keys.command("generate")
@click.pass_obj
def keys_generate(obj: dict[str, Any]) -> None:
    """Create any missing bank key (signing, pseudonymization, audit log); keep existing ones."""
    settings = _settings(obj)
    made = KeyStore(settings.keys_dir).generate(settings.signing_alg)
    click.echo(", ".join(made) + " generated" if made else "all keys present; nothing changed")


@keys.command("rotate")
@click.option(
    "--alg",
    type=click.Choice(["ES256", "EdDSA"]),
    default=None,
    help="Algorithm of the new key [default: same as now].",
)
@with_gateway
async def keys_rotate(gw: Gateway, alg: str | None) -> None:
    """Replace the signing key; the old public key stays in the published JWKS."""
    from gateway.audit import log as audit_log
    from gateway.clock import isotime
    from schemas.audit import KeyRotated

    current = gw.keys.signing_key()
    old = current.kid
    new = generate_signing_key(alg or str(current.alg))
    async with gw.db.transaction() as tx:
        # The entry first and the key files last: if the entry cannot be written, the
        # key is not rotated; the rotation never goes unrecorded.
        await audit_log.append(
            tx,
            [
                KeyRotated(
                    at=isotime(gw.now()),
                    actor=actor(),
                    key="bank-signing",
                    old_kid=str(old),
                    new_kid=str(new.kid),
                )
            ],
            signer=gw.audit_signer,
        )
        gw.keys.rotate(key=new)
    click.echo(
        f"signing key rotated: {old} -> {new.kid} ({new.alg}); old public key kept in jwks.json "
        f"until `gateway keys retire {'-- ' if str(old).startswith('-') else ''}{old}`"
    )


@keys.command("retire")
@click.argument("kid")
@click.option(
    "--compromised", is_flag=True, help="Take the key out of the published set at once, not later."
)
@with_gateway
async def keys_retire(gw: Gateway, kid: str, compromised: bool) -> None:
    """Retire an old signing key: published only until the packages it signed expire.

    A KID that begins with '-' goes after '--': `gateway keys retire -- -Xy...`.
    """
    until = await registry.retire_signing_key(gw, kid, compromised=compromised, actor=actor())
    click.echo(
        f"{kid} retired as compromised: no longer published"
        if until is None
        else f"{kid} retired: published until {until}, then left out"
    )


@keys.command("jwks")
@click.pass_obj
def keys_jwks(obj: dict[str, Any]) -> None:
    """Print the bank's public key set (what /.well-known/jwks.json serves)."""
    try:
        echo_json(KeyStore(_settings(obj).keys_dir).public_jwks())
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None


def _settings(obj: dict[str, Any]) -> Settings:
    try:
        return load_settings(obj["config"])
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None


# -- schemas and plugins ---------------------------------------------------------------


@cli.group()
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


@cli.command()
def plugins() -> None:
    """List loaded plugins and the adapters they provide, as JSON."""
    echo_json(describe(get_plugin_manager()))


# -- partners --------------------------------------------------------------------------


@cli.group()
def partners() -> None:
    """Onboard partners from profile files, list them, suspend and reinstate them."""


@partners.command("add")
@click.argument("profile", type=click.Path(path_type=Path))
@click.option("--update", is_flag=True, help="Replace the profile of an existing partner.")
@with_gateway
async def partners_add(gw: Gateway, profile: Path, update: bool) -> None:
    """Validate PROFILE (TOML) and onboard the partner it describes."""
    record, what = await registry.add(gw, profile, actor=actor(), update=update)
    click.echo(
        f"{record.id}: {what} ({record.profile.kind}, adapter {record.profile.adapter}, "
        f"profile {record.profile_digest[:19]}...)"
    )


@partners.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_gateway
async def partners_list(gw: Gateway, as_json: bool) -> None:
    """All partners with their status and contract."""
    records = await registry.list_all(gw)
    rows = [
        {
            "id": r.id,
            "kind": r.profile.kind,
            "status": r.status,
            "adapter": r.profile.adapter,
            "contract": r.profile.contract.number,
            "valid_to": str(r.profile.contract.valid_to),
            "purposes": ",".join(r.profile.policy),
        }
        for r in records
    ]
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo("no partners yet; onboard one with `gateway partners add PROFILE.toml`")
    else:
        click.echo(table(rows))


@partners.command("show")
@click.argument("partner_id")
@with_gateway
async def partners_show(gw: Gateway, partner_id: str) -> None:
    """The stored profile and status of one partner, as JSON."""
    r = await registry.get(gw, partner_id)
    echo_json(
        {
            "status": r.status,
            "status_reason": r.status_reason,
            "profile_digest": r.profile_digest,
            "source": r.source,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
            "profile": r.profile.model_dump(mode="json"),
        }
    )


@partners.command("suspend")
@click.argument("partner_id")
@click.option("--reason", required=True, help="Why; recorded in the audit log (no personal data).")
@with_gateway
async def partners_suspend(gw: Gateway, partner_id: str, reason: str) -> None:
    """Stop all placements to a partner until it is reinstated."""
    await registry.set_status(gw, partner_id, "suspended", reason=reason, actor=actor())
    click.echo(f"{partner_id}: suspended")


@partners.command("reinstate")
@click.argument("partner_id")
@click.option("--reason", default="", help="Why; recorded in the audit log (no personal data).")
@with_gateway
async def partners_reinstate(gw: Gateway, partner_id: str, reason: str) -> None:
    """Allow placements to a suspended partner again."""
    await registry.set_status(gw, partner_id, "active", reason=reason, actor=actor())
    click.echo(f"{partner_id}: active")


# -- placement -------------------------------------------------------------------------


def read_case(path: Path) -> Case:
    try:
        return Case.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {first_error(exc)}") from None


def case_files(paths: tuple[Path, ...]) -> list[Path]:
    """The case files named: files as given, a directory's ``*.json`` in name order;
    a file named twice counts once."""
    files: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise InvalidInput(f"{path}: no *.json case files in this directory")
        else:
            found = [path]
        for file in found:
            files.setdefault(file.resolve(), file)
    return list(files.values())


def check_cases(files: list[Path]) -> None:
    """Read every case file before anything is placed: one bad file places nothing, and
    nor does a case in two files (it would be disclosed twice)."""
    problems = []
    seen: dict[str, Path] = {}
    for file in files:
        try:
            case_id = read_case(file).case_id
        except InvalidInput as exc:
            problems.append(str(exc))
            continue
        if case_id in seen:
            problems.append(f"{file}: case {case_id} is in {seen[case_id]} too")
        seen.setdefault(case_id, file)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise InvalidInput(f"{len(problems)} of {len(files)} case files are invalid, nothing placed: {shown}")


@cli.command()
@click.argument("paths", metavar="CASE.json...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--partner", "partner_id", required=True, help="Partner id (see `gateway partners list`).")
@click.option("--purpose", required=True, help="Purpose the contract covers, e.g. collection.")
@click.option("--batch", type=click.IntRange(1, placement.MAX_BATCH), default=placement.BATCH,
              show_default=True, help=f"Cases placed per transaction, at most {placement.MAX_BATCH}"
              " (a transaction holds the database's write lock while its cases are sealed).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@with_gateway
async def place(
    gw: Gateway, paths: tuple[Path, ...], partner_id: str, purpose: str, batch: int, quiet: bool
) -> None:
    """Check policy, minimize, seal and queue case packages; print their ids.

    CASE.json is a case file or a directory of them (``*.json``), one or many. A single
    case file prints its package id. Otherwise each case prints ``CASE-ID PACKAGE-ID``
    as its batch commits; a case a rule refuses (limitation, an open recall) is named on
    stderr, the others go on, and the exit status is 1. Every file is read and checked
    before anything is placed: an invalid file, or a case in two files, places nothing.
    """
    files = case_files(paths)
    if len(paths) == 1 and not paths[0].is_dir():
        result = await placement.place(gw, read_case(files[0]), partner_id, purpose, actor=actor())
        click.echo(result.package_id)
        return
    check_cases(files)
    placed = refused = 0
    start = last = time.monotonic()
    cases = (read_case(file) for file in files)
    batches = placement.place_many(gw, cases, partner_id, purpose, actor=actor(), batch=batch)
    try:
        async for case, outcome in batches:
            if isinstance(outcome, placement.Placement):
                placed += 1
                click.echo(f"{case.case_id} {outcome.package_id}")
            else:
                refused += 1
                click.echo(f"{case.case_id}: {outcome}", err=True)
            if not quiet and time.monotonic() - last >= 1.0:
                last = time.monotonic()
                click.echo(f"placed {placed} of {len(files)}, refused {refused}  "
                           f"{(placed + refused) / (last - start):.0f}/s", err=True)
    except GatewayError as exc:
        raise click.ClickException(
            f"stopped after {placed + refused} of {len(files)} cases ({placed} placed, {refused} refused):"
            f" {exc}; not placed: {files[placed + refused]} and the files after it"
        ) from None
    except asyncio.CancelledError:
        rest = files[placed + refused :]
        click.echo(f"interrupted after {placed + refused} of {len(files)} cases ({placed} placed, "
                   f"{refused} refused, each printed above)"
                   + (f"; not placed: {rest[0]} and the files after it" if rest else ""), err=True)
        raise
    click.echo(f"placed {placed} of {len(files)} cases with {partner_id}"
               + (f"; {refused} refused" if refused else ""), err=True)
    if refused:
        raise SystemExit(1)


@cli.group()
def package() -> None:
    """Inspect packages in the outbox."""


@package.command("show")
@click.argument("package_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_gateway
async def package_show(gw: Gateway, package_id: str, as_json: bool) -> None:
    """Exactly what the partner will receive, in clear text, from the signed package."""
    info = await placement.show(gw, package_id)
    if as_json:
        echo_json(info)
        return
    click.echo(
        f"package {info['package_id']} -> {info['partner']} ({info['purpose']}), "
        f"{info['state']}, sealed {info['sealing']}"
    )
    click.echo(f"case {info['case_id']} appears to the partner as {info['claims']['case_ref']}")
    for path, value in flatten(info["claims"]["data"]):
        click.echo(f"  {path:<40} {value}")


@package.command("list")
@click.option("--partner", "partner_id", default=None)
@click.option("--limit", default=50, show_default=True)
@with_gateway
async def package_list(gw: Gateway, partner_id: str | None, limit: int) -> None:
    """Newest packages first."""
    rows = await placement.list_packages(gw, partner_id, limit)
    click.echo(table(rows) if rows else "no packages")


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        return [item for k, v in data.items() for item in flatten(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(data, list):
        return [item for i, v in enumerate(data) for item in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, data)]


def table(rows: list[dict[str, Any]]) -> str:
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(r[h]).ljust(w) for h, w in zip(headers, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def main() -> None:
    try:
        cli(prog_name="gateway")
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`gateway place DIR | head`): what was committed stays,
        # `gateway package list` shows it. No traceback, and none at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _register_subcommands() -> None:
    # Later command groups live in their own modules to keep this one readable.
    from gateway.cli import audit, delivery, supervision

    delivery.register(cli)
    supervision.register(cli)
    audit.register(cli)


_register_subcommands()
