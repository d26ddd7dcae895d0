"""Placement commands: ``place``, ``package show|list``, ``recall``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
from pydantic import ValidationError

from gateway import heap
from gateway.cli.common import actor, echo_json, flatten, table, with_gateway
from gateway.config import first_error
from gateway.core import Gateway
from gateway.errors import GatewayError, InvalidInput
from gateway.placement import recall as recalls
from gateway.placement import service as placement
from gateway.placement import tabular
from gateway.placement.mapping import load_mapping
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
@click.argument("paths", metavar="CASES...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--partner", "partner_id", required=True, help="Partner id (see `gateway partners list`).")
@click.option("--purpose", required=True, help="Purpose the contract covers, e.g. collection.")
@click.option("--mapping", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Column mapping (TOML) of a CSV or XLSX file of cases; see docs/channels.md.")
@click.option("--skip-invalid", is_flag=True,
              help="CSV/XLSX: place the valid rows and write the invalid ones to the rejects file.")
@click.option("--rejects", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CSV/XLSX with --skip-invalid: where the invalid rows go (default FILE.rejects.csv).")
@click.option("--batch", type=click.IntRange(1, placement.MAX_BATCH), default=placement.BATCH,
              show_default=True, help=f"Cases placed per transaction, at most {placement.MAX_BATCH}"
              " (a transaction holds the database's write lock while its cases are sealed).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@with_gateway
async def place(
    gw: Gateway, paths: tuple[Path, ...], partner_id: str, purpose: str, mapping: Path | None,
    skip_invalid: bool, rejects: Path | None, batch: int, quiet: bool,
) -> None:
    """Check policy, minimize, seal and queue case packages; print their ids.

    CASES is a case file (JSON) or a directory of them (``*.json``), one or many; or one
    CSV or XLSX file with --mapping, a case per row. A single case file prints its package
    id. Otherwise each case prints ``CASE-ID PACKAGE-ID`` as its batch commits; a case a
    rule refuses (limitation, an open recall) is named on stderr, the others go on, and
    the exit status is 1. Everything is read and checked before anything is placed: an
    invalid file or row, or a case given twice, places nothing (CSV/XLSX: unless
    --skip-invalid, which writes the invalid rows to a rejects file). While it runs, the
    audit log gets a checkpoint every audit_checkpoint_seconds.
    """
    async with gw.audit_upkeep(final=False):
        await _place(gw, paths, partner_id, purpose, mapping, skip_invalid, rejects, batch, quiet)


async def _place(
    gw: Gateway, paths: tuple[Path, ...], partner_id: str, purpose: str, mapping: Path | None,
    skip_invalid: bool, rejects: Path | None, batch: int, quiet: bool,
) -> None:
    if any(tabular.is_table(p) for p in paths):
        await place_table(gw, paths, mapping, skip_invalid, rejects, Run(partner_id, purpose, batch, quiet))
        return
    if mapping is not None or skip_invalid or rejects is not None:
        raise InvalidInput("--mapping, --skip-invalid and --rejects are for one CSV or XLSX file of cases")
    files = case_files(paths)
    if len(paths) == 1 and not paths[0].is_dir():
        result = await placement.place(gw, read_case(files[0]), partner_id, purpose, actor=actor())
        click.echo(result.package_id)
        return
    check_cases(files)
    cases = (read_case(file) for file in files)
    await place_all(gw, cases, len(files), lambda i: f"{files[i]} and the files after it",
                    Run(partner_id, purpose, batch, quiet))


@dataclass(frozen=True)
class Run:
    partner_id: str
    purpose: str
    batch: int
    quiet: bool


async def place_table(
    gw: Gateway, paths: tuple[Path, ...], mapping_file: Path | None, skip_invalid: bool,
    rejects: Path | None, run: Run,
) -> None:
    """`place FILE.csv|FILE.xlsx --mapping M.toml`: the mapping checked, then every row,
    then the valid cases placed (all rows valid, or --skip-invalid)."""
    if len(paths) != 1 or mapping_file is None:
        raise InvalidInput("a CSV or XLSX file of cases is placed alone, with --mapping MAPPING.toml")
    path = paths[0]
    mapping = load_mapping(mapping_file)
    report = tabular.check_table(path, mapping)
    if report.invalid and not skip_invalid:
        raise tabular.refusal(path, report)
    if report.invalid:
        target = rejects or path.with_name(path.stem + ".rejects.csv")
        tabular.write_rejects(path, mapping, report, target)
        click.echo(f"{len(report.invalid)} of {report.rows} rows are invalid, not placed: see {target}",
                   err=True)
    numbers: list[int] = []

    def rows() -> Iterator[Case]:
        for number, case in tabular.cases(path, mapping, report):
            numbers.append(number)
            yield case

    def rest_from(i: int) -> str:
        return f"row {numbers[i]} of {path} and the rows after it" if i < len(numbers) else "the rows after"

    await place_all(gw, rows(), report.valid, rest_from, run)


async def place_all(
    gw: Gateway, cases: Iterator[Case], total: int, rest_from: Callable[[int], str], run: Run
) -> None:
    """Place ``cases`` batch by batch, each printed as it commits, progress on stderr."""
    heap.settle()  # placing in bulk: what start-up made stays for the run
    placed = refused = 0
    start = last = time.monotonic()
    batches = placement.place_many(gw, cases, run.partner_id, run.purpose, actor=actor(), batch=run.batch)
    try:
        async for case, outcome in batches:
            if isinstance(outcome, placement.Placement):
                placed += 1
                click.echo(f"{case.case_id} {outcome.package_id}")
            else:
                refused += 1
                click.echo(f"{case.case_id}: {outcome}", err=True)
            if not run.quiet and time.monotonic() - last >= 1.0:
                last = time.monotonic()
                click.echo(f"placed {placed} of {total}, refused {refused}  "
                           f"{(placed + refused) / (last - start):.0f}/s", err=True)
    except GatewayError as exc:
        raise click.ClickException(
            f"stopped after {placed + refused} of {total} cases ({placed} placed, {refused} refused):"
            f" {exc}; not placed: {rest_from(placed + refused)}"
        ) from None
    except asyncio.CancelledError:
        done = placed + refused
        click.echo(f"interrupted after {done} of {total} cases ({placed} placed, "
                   f"{refused} refused, each printed above)"
                   + (f"; not placed: {rest_from(done)}" if done < total else ""), err=True)
        raise
    click.echo(f"placed {placed} of {total} cases with {run.partner_id}"
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
