"""Personal data lifecycle commands: ``retention run|show``, ``subject erase|status``,
``cases hold|release|holds`` and ``keys rotate-storage``."""

from __future__ import annotations

import click

from gateway.cli.common import actor, echo_json, echo_rows, read_id_number, table, with_gateway
from gateway.core import Gateway
from gateway.lifecycle import erasure
from gateway.lifecycle import retention as lifecycle
from gateway.supervision.retention import KINDS


@click.group()
def retention() -> None:
    """Personal data the gateway holds: purge what is due, show what is held."""


@retention.command("run")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@with_gateway
async def retention_run(gw: Gateway, as_json: bool) -> None:
    """Purge every kind of personal data that is due (one audit entry for the run) and
    move erasure requests on. `gateway serve` runs this every `retention_seconds`."""
    done = await lifecycle.run(gw, actor=actor())
    report = {
        "purged": done.counts.by_kind,
        "audit_entries": [entry.kind for entry in done.entries],
        "compacted": done.compacted,
    }
    if as_json:
        echo_json(report)
        return
    click.echo("purged: " + ", ".join(f"{kind} {done.counts.by_kind[kind]}" for kind in KINDS))
    for entry in done.entries:
        if entry.kind == "erasure_completed":
            click.echo(f"erasure {entry.erasure_id} complete")
    if not done.compacted:
        click.echo("note: the database's WAL could not be truncated now (a reader held it)", err=True)


@retention.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the holdings as JSON.")
@with_gateway
async def retention_show(gw: Gateway, as_json: bool) -> None:
    """What personal data is held, per kind and partner: how much, the rule, the next
    date something of it is due, and how much waits (not sent yet, deletion not attested)."""
    rows = await lifecycle.show(gw)
    held = await erasure.holds(gw)
    if as_json:
        echo_json({"held": rows, "legal_holds": held})
        return
    shown = [{k: ("-" if v is None else v) for k, v in row.items() if k != "what"} for row in rows]
    click.echo(table(shown) if shown else "no personal data held")
    if held:
        click.echo(f"{len(held)} cases under a legal hold: nothing of them is purged (gateway cases holds)")


@click.group()
def subject() -> None:
    """A data subject's requests: erasure, and where it stands."""


@subject.command("erase")
@click.option("--id-type", required=True, help="Identity document type, as in the case files.")
@click.option(
    "--id-number", required=True,
    help="Write '-' and give the number on standard input: it must not appear in the process list.",
)
@click.option("--reason", required=True, help="Why, in general terms (no personal data): recorded.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@with_gateway
async def subject_erase(gw: Gateway, id_type: str, id_number: str, reason: str, as_json: bool) -> None:
    """Erase what the gateway holds about one person and have every partner that
    received data about them delete it (a sealed deletion request each, tracked until
    they attest). Cases under a legal hold wait; the request says so."""
    if id_number != "-":
        raise click.BadParameter(
            "pass '-' and write the number to standard input (a number in the command line is "
            "visible in the process list and the shell history)",
            param_hint="--id-number",
        )
    done = await erasure.erase(gw, id_type, read_id_number(id_number), reason, actor=actor())
    _echo_status([done], as_json)


@subject.command("status")
@click.argument("erasure_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@with_gateway
async def subject_status(gw: Gateway, erasure_id: str | None, as_json: bool) -> None:
    """Erasure requests and, per partner and case, whether deletion is attested; with
    ERASURE-ID only that one."""
    _echo_status(await erasure.status(gw, erasure_id), as_json)


def _echo_status(found: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no erasure requests")
    for item in found:
        cases = item["cases"]
        assert isinstance(cases, list)
        state = "complete" if item["complete"] else "open"
        click.echo(
            f"erasure {item['erasure_id']} about {item['subject']} ({item['requested_at']}): {state}, "
            f"{item['attested']} of {len(cases)} deletions attested"
        )
        if cases:
            click.echo(table([{k: "-" if v is None else v for k, v in case.items()} for case in cases]))
        waiting = item["waiting_for"]
        assert isinstance(waiting, list)
        for reason in waiting:
            click.echo(f"  waiting for {reason}")


@click.command("hold")
@click.argument("case_id")
@click.option("--reason", required=True, help="Why (litigation, a regulator's request), no personal data.")
@with_gateway
async def case_hold(gw: Gateway, case_id: str, reason: str) -> None:
    """Put a case under a legal hold: nothing of it is purged or erased until released."""
    token = await erasure.hold(gw, case_id, reason, actor=actor())
    click.echo(f"case {case_id} ({token}) is under a legal hold")


@click.command("release")
@click.argument("case_id")
@click.option("--reason", required=True, help="Why the hold ends, no personal data.")
@with_gateway
async def case_release(gw: Gateway, case_id: str, reason: str) -> None:
    """Lift a case's legal hold; erasure requests that waited for it go on now."""
    resumed = await erasure.release(gw, case_id, reason, actor=actor())
    more = f"; erasures resumed: {', '.join(resumed)}" if resumed else ""
    click.echo(f"case {case_id}: legal hold released{more}")


@click.command("holds")
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def case_holds(gw: Gateway, as_json: bool) -> None:
    """Cases under a legal hold (by their audit token)."""
    rows = await erasure.holds(gw)
    echo_rows(rows, as_json)


@click.command("rotate-storage")
@with_gateway
async def keys_rotate_storage(gw: Gateway) -> None:
    """Replace the key-encryption key of the data at rest: every data key is re-wrapped
    with the new one (the rows are not touched), and the old one is retired."""
    new, count, retired = await gw.keyring.rewrap(gw.db)
    click.echo(
        f"key-encryption key {new} in use; {count} data keys re-wrapped"
        + (f"; retired {', '.join(retired)}" if retired else "; older keys kept (keys wrapped meanwhile)")
    )
