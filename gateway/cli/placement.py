"""Placement commands: ``place``, ``package show|list``, ``recall``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click
from pydantic import ValidationError

from gateway.cli.common import actor, echo_json, flatten, table, with_gateway
from gateway.config import first_error
from gateway.core import Gateway
from gateway.errors import GatewayError, InvalidInput
from gateway.placement import recall as recalls
from gateway.placement import service as placement
from schemas.case import Case


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


@click.command()
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
    While it runs, the audit log gets a checkpoint every audit_checkpoint_seconds.
    """
    async with gw.audit_upkeep(final=False):
        await _place(gw, paths, partner_id, purpose, batch, quiet)


async def _place(
    gw: Gateway, paths: tuple[Path, ...], partner_id: str, purpose: str, batch: int, quiet: bool
) -> None:
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


@click.group()
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
    if info["claims"] is None:
        click.echo(
            f"its content was deleted ({info['purged_at'] or 'erasure'}): retention or an erasure request; "
            f"digest {info['payload_digest']}; fields sent:"
        )
        for field in info["fields"]:
            click.echo(f"  {field['path']:<40} {field['transform']}")
        return
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


@click.command()
@click.argument("case_id")
@click.option("--partner", "partner_id", required=True)
@click.option("--reason", required=True,
              help="Why, in general terms; sent to the partner and recorded in the audit log "
              "(no personal data).")
@with_gateway
async def recall(gw: Gateway, case_id: str, partner_id: str, reason: str) -> None:
    """Take a case back from a partner and demand a deletion attestation."""
    done = await recalls.recall(gw, case_id, partner_id, reason, actor=actor())
    notice = (
        f"notice {done.notice_package_id} queued" if done.notice_package_id else "no notice (tls-only)"
    )
    click.echo(
        f"{case_id} recalled from {partner_id}; deletion attestation due {done.deletion_due}; {notice}"
    )
