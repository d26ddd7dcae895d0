"""``gateway audit ...``: the auditor's commands over the tamper-evident data-sharing log.

``verify-bundle`` needs no workspace, database or secret, so an auditor runs it on an
exported bundle on their own machine; the other commands open the workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.audit import bundle, files, log, proofs, query, verifydb, witnessing
from gateway.audit.checkpoint import CheckpointError, parse_vkey
from gateway.audit.cosignature import Witness
from gateway.audit.errors import AuditError
from gateway.audit.signer import fingerprint, vkey_path
from gateway.audit.verify import Summary, WitnessPolicy, read_known
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


def _read_vkey(value: str, option: str = "--vkey") -> str:
    """A verifier key given inline or as the path of a file holding it, checked."""
    path = Path(value)
    if "+" not in value:
        try:
            value = files.read_text_capped(path, files.VKEY_MOST)
        except (OSError, AuditError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise click.BadParameter(
                f"{value!r} is neither a verifier key (name+id+key) nor a file holding one ({reason})",
                param_hint=option,
            ) from None
    try:
        if option == "--vkey":
            parse_vkey(value.strip())
        else:
            Witness.parse(value)
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    return value.strip()


def _witness_policy(keys: tuple[str, ...], required: int | None) -> WitnessPolicy | None:
    """`--witness` keys and `--witnesses-required` (default: 1 with a witness, else 0)."""
    witnesses = tuple(Witness.parse(_read_vkey(key, "--witness")) for key in keys)
    needed = (1 if witnesses else 0) if required is None else required
    if needed > len(witnesses):
        raise click.BadParameter(
            f"{needed} cosignatures required but {len(witnesses)} witness keys given (--witness)",
            param_hint="--witnesses-required",
        )
    return WitnessPolicy(witnesses, needed) if needed else None


def _warn_unpinned(key: str, source: str) -> None:
    """Say loudly, before anything else, which key is trusted when none was pinned."""
    click.echo(
        f"WARNING: no --vkey given: trusting {fingerprint(key)} from {source}, which whoever "
        "controls it could have replaced along with the log; pin the key you got from the bank "
        "out of band with --vkey",
        err=True,
    )


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
known_option = click.option(
    "--known",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A checkpoint (signed note) you kept from an earlier check: fails if the log was "
    "rolled back (now smaller) or forked (another root at that size) since.",
)
witness_option = click.option(
    "--witness",
    "witness_keys",
    multiple=True,
    help="A witness's verifier key (or a file holding it); repeatable.",
)
required_option = click.option(
    "--witnesses-required",
    type=click.IntRange(0),
    default=None,
    help="How many of the --witness keys must have cosigned the latest checkpoint "
    "[default: 1 with --witness, else 0].",
)

@audit.command("verify")
@vkey_option
@known_option
@witness_option
@required_option
@click.option(
    "--hashes-only",
    is_flag=True,
    help="Only the cryptographic checks (order, leaf hashes, tree, checkpoint signatures "
    "and consistency): several times faster on a large log; leaves out the per-entry "
    "canonical-form and schema lint and the check of the search columns.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@with_gateway
async def verify(
    gw: Gateway,
    vkey: str | None,
    known: Path | None,
    witness_keys: tuple[str, ...],
    witnesses_required: int | None,
    hashes_only: bool,
    as_json: bool,
) -> None:
    """Recompute the log from its entries and check every signed checkpoint.

    Exits 1 naming the first bad entry index and what is wrong, or the rollback or fork
    of a --known checkpoint, or the missing witness cosignatures.
    """
    policy = _witness_policy(witness_keys, witnesses_required)
    key = _read_vkey(vkey) if vkey else workspace_vkey(gw)
    if vkey is None:
        _warn_unpinned(key, f"the workspace ({vkey_path(gw.keys)})")
    kept = read_known(known.read_text(encoding="utf-8"), key) if known else None
    summary = await verifydb.verify_database(
        gw.db, key, _progress, deep=not hashes_only, known=kept, witnesses=policy
    )
    _echo_summary(summary, as_json)

@audit.command("verify-bundle")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@vkey_option
@known_option
@witness_option
@required_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def verify_bundle(
    directory: Path,
    vkey: str | None,
    known: Path | None,
    witness_keys: tuple[str, ...],
    witnesses_required: int | None,
    as_json: bool,
) -> None:
    """Verify an exported bundle: no workspace, database or secret needed.

    Without --vkey the bundle's own key is trusted, and a warning says so; compare its
    fingerprint with the one the bank gave you. With --known, the bundle's log must
    extend the checkpoint you kept; with --witness, its latest checkpoint must be
    cosigned by the witnesses.
    """
    policy = _witness_policy(witness_keys, witnesses_required)
    pinned = _read_vkey(vkey) if vkey else None
    kept = known.read_text(encoding="utf-8") if known else None

    async def main() -> Summary:
        if pinned is None:
            _warn_unpinned(bundle.bundle_vkey(directory), f"the bundle's own {bundle.VKEY}")
        return bundle.verify_bundle(directory, pinned, _progress, known=kept, witnesses=policy)

    summary = run(main())
    if pinned is not None:
        try:
            own = bundle.bundle_vkey(directory)
        except AuditError:
            own = ""
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
    """Verify the log, sign a checkpoint now (cosigned by the configured witnesses) and
    write a self-contained bundle into DIRECTORY (new or empty).

    A log that does not verify is not exported: the command exits 1 naming the problem.
    """

    async def witness(latest: log.CheckpointRecord) -> None:
        await _witness_now(gw)

    done = await bundle.export_bundle(
        gw.db, gw.custody.public_jwks(gw.now()), gw.audit_signer, directory, witness
    )
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
    """Sign a checkpoint of the log now (unless the latest covers it), have the witnesses
    of gateway.toml cosign it, and print the note with their cosignatures.

    Exits 1 when a witness did not cosign it, naming the witness and its reason (a
    refusal means the log is not the one the witness saw before: rolled back or forked).
    """
    await log.checkpoint_now(gw.db, gw.audit_signer)
    failed = await _witness_now(gw)
    latest = await query.latest_checkpoint(gw.db)
    assert latest is not None
    click.echo(latest.note, nl=False)
    if failed:
        raise click.ClickException(f"{failed} of {len(gw.witnesses)} witnesses did not cosign (see above)")


async def _witness_now(gw: Gateway) -> int:
    """Submit the latest checkpoint to every configured witness; each one that did not
    cosign it is named on stderr (the checkpoint stands without its cosignature).
    Returns how many did not."""
    failed = 0
    for outcome in await witnessing.submit_all(gw.db, gw.witnesses):
        if not outcome.ok:
            failed += 1
            click.echo(f"witness {outcome.witness}: {outcome.detail}", err=True)
    return failed


