"""``gateway audit ...``: the auditor's commands over the tamper-evident data-sharing log.

``verify-bundle`` needs no workspace, database or secret, so an auditor runs it on an
exported bundle on their own machine; the other commands open the workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.audit import bundle, log, proofs, query
from gateway.audit.checkpoint import CheckpointError, parse_vkey
from gateway.audit.signer import fingerprint, vkey_path
from gateway.audit.verify import Summary
from gateway.cli.common import echo_json, read_id_number, run, table, with_gateway
from gateway.placement.service import case_token, person_token

if TYPE_CHECKING:
    from gateway.core import Gateway

_PROGRESS_EVERY = 100_000


def _progress(count: int, state: dict[str, int] = {"shown": 0}) -> None:  # noqa: B006
    # Called once per batch; a line per 100k entries shows a long verify is moving.
    if count // _PROGRESS_EVERY > state["shown"] // _PROGRESS_EVERY:
        click.echo(f"verified {count} entries...", err=True)
    state["shown"] = count


def workspace_vkey(gw: Gateway) -> str:
    """The published verifier key; published from the private key on first need."""
    path = vkey_path(gw.keys)
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    return gw.audit_signer.vkey


def _read_vkey(value: str) -> str:
    """A verifier key given inline or as the path of a file holding it, checked."""
    path = Path(value)
    if "+" not in value:
        if not path.is_file():
            raise click.BadParameter(
                f"{value!r} is neither a verifier key (name+id+key) nor a file holding one",
                param_hint="--vkey",
            )
        value = path.read_text(encoding="utf-8")
    try:
        parse_vkey(value.strip())
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint="--vkey") from None
    return value.strip()


def _detail(entry: dict[str, Any]) -> str:
    for key in ("purpose", "reason", "event_type", "rule", "new_kid", "role", "trigger"):
        if entry.get(key):
            return str(entry[key])
    return ""


def _echo_summary(summary: Summary, as_json: bool) -> None:

    if as_json:
        echo_json(summary.as_dict())
    else:
        click.echo(summary.line())


@click.group()
def audit() -> None:
    """The data-sharing log: verify, query, prove, export for auditors."""

vkey_option = click.option(
    "--vkey",
    default=None,
    help="Verifier key (or a file holding it) obtained out of band; "
    "checkpoints must be signed by it.",
)

@audit.command("verify")
@vkey_option
@click.option(
    "--hashes-only",
    is_flag=True,
    help="Only the cryptographic checks (order, leaf hashes, tree, checkpoint signatures "
    "and consistency): several times faster on a large log; leaves out the per-entry "
    "canonical-form and schema lint and the check of the search columns.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@with_gateway
async def verify(gw: Gateway, vkey: str | None, hashes_only: bool, as_json: bool) -> None:
    """Recompute the log from its entries and check every signed checkpoint.

    Exits 1 naming the first bad entry index and what is wrong.
    """
    key = _read_vkey(vkey) if vkey else workspace_vkey(gw)
    summary = await query.verify_database(gw.db, key, _progress, deep=not hashes_only)
    _echo_summary(summary, as_json)

@audit.command("verify-bundle")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@vkey_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def verify_bundle(directory: Path, vkey: str | None, as_json: bool) -> None:
    """Verify an exported bundle: no workspace, database or secret needed.

    Without --vkey the bundle's own key is trusted; compare its fingerprint, printed
    here, with the one the bank gave you.
    """

    pinned = _read_vkey(vkey) if vkey else None

    async def main() -> Summary:
        return bundle.verify_bundle(directory, pinned, _progress)

    summary = run(main())
    if pinned is None:
        click.echo(
            f"note: trusted the bundle's own key {summary.key}; pin it with --vkey", err=True
        )
    else:
        shipped = directory / bundle.VKEY
        own = shipped.read_text(encoding="utf-8").strip() if shipped.is_file() else ""
        if own != pinned:
            # The entries are signed by the pinned key; the copy that came with them is
            # not it: whoever prepared the bundle sent a wrong or changed key file.
            click.echo(
                f"warning: the bundle's {bundle.VKEY} is not the pinned key; the log was "
                "checked against the pinned key only",
                err=True,
            )
    _echo_summary(summary, as_json)

@audit.command("export")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@with_gateway
async def export(gw: Gateway, directory: Path) -> None:
    """Sign a checkpoint now and write a self-contained bundle into DIRECTORY (new or empty)."""
    done = await bundle.export_bundle(gw.db, gw.custody.public_jwks(), gw.audit_signer, directory)
    click.echo(
        f"exported {done.size} entries and {done.checkpoints} checkpoints to {directory} "
        f"(key {fingerprint(done.vkey)})"
    )

@audit.command("log")
@click.option("--partner", default=None, help="Only entries about this partner id.")
@click.option("--case", "case_id", default=None, help="Only entries about this case id.")
@click.option("--event", "kind", default=None, help="Only this kind, e.g. disclosure, recall.")
@click.option("--since", default=None, help="From this UTC time or date (RFC 3339), inclusive.")
@click.option("--until", default=None, help="Up to this UTC time or date, exclusive.")
@click.option("--limit", type=int, default=None, help="At most this many entries.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@with_gateway
async def log_cmd(
    gw: Gateway,
    partner: str | None,
    case_id: str | None,
    kind: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List log entries in order, filtered; cases are matched by their audit token."""
    where = query.EntryFilter(
        partner=partner,
        case_token=case_token(gw, case_id) if case_id else None,
        kind=kind,
        since=since,
        until=until,
        limit=limit,
    )
    found = await query.entries(gw.db, where)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no matching entries")
        return
    rows = [
        {
            "idx": item["idx"],
            "at": item["entry"]["at"],
            "kind": item["entry"]["kind"],
            "partner": item["entry"].get("partner", ""),
            "actor": item["entry"]["actor"],
            "detail": _detail(item["entry"]),
        }
        for item in found
    ]
    click.echo(table(rows))

@audit.command("subject")
@click.option("--id-type", required=True, help="Identity document type, as in the case file.")
@click.option(
    "--id-number",
    required=True,
    help="Identity document number, as written in the case files; '-' reads it from "
    "standard input (kept out of the process list and the shell history).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@with_gateway
async def subject(gw: Gateway, id_type: str, id_number: str, as_json: bool) -> None:
    """Every disclosure about one person: to whom, when, why, which fields (PIPL art. 45)."""
    token = person_token(gw, id_type, read_id_number(id_number))
    report = await query.subject_disclosures(gw.db, token)
    if as_json:
        echo_json({"subject": token, "disclosures": report})
        return
    if not report:
        click.echo(f"no disclosures about {token} (type and number must be as in the case files)")
        return
    click.echo(f"{len(report)} disclosures about {token}")
    rows = [
        {
            "idx": r["idx"],
            "at": r["at"],
            "partner": r["partner"],
            "purpose": r["purpose"],
            "legal_basis": r["legal_basis"],
            "fields": ", ".join(r["fields"]),
        }
        for r in report
    ]
    click.echo(table(rows))

@audit.command("prove")
@click.argument("index", type=int)
@click.option("--size", type=int, default=None, help="Tree size [default: latest checkpoint].")
@with_gateway
async def prove(gw: Gateway, index: int, size: int | None) -> None:
    """Inclusion proof of entry INDEX, as JSON (hashes base64, with the checkpoint note)."""
    echo_json((await proofs.inclusion_proof(gw.db, index, size)).as_dict())

@audit.command("consistency")
@click.argument("old", type=int)
@click.argument("new", type=int, required=False)
@with_gateway
async def consistency(gw: Gateway, old: int, new: int | None) -> None:
    """Consistency proof from tree size OLD to NEW [default: latest checkpoint], as JSON."""
    echo_json((await proofs.consistency_proof(gw.db, old, new)).as_dict())

@audit.command("checkpoint")
@with_gateway
async def checkpoint(gw: Gateway) -> None:
    """Sign a checkpoint of the log now (unless the latest covers it) and print the note."""
    click.echo((await log.checkpoint_now(gw.db, gw.audit_signer)).note, nl=False)


