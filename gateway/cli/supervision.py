"""Supervision commands: ``scorecard``, ``violations``, ``attestations``, ``cases``."""

from __future__ import annotations

import click

from gateway.cli.common import echo_json, echo_rows, parse_span, table, with_gateway
from gateway.core import Gateway
from gateway.supervision import scorecards as supervision


@click.command()
@click.argument("partner_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def scorecard(gw: Gateway, partner_id: str | None, as_json: bool) -> None:
    """Partner scorecards: acknowledgement, contact, promises, recovery, violations."""
    cards = (
        [await supervision.scorecard(gw, partner_id)] if partner_id else await supervision.scorecards(gw)
    )
    rows = [c.model_dump() for c in cards]
    if as_json:
        echo_json(rows)
        return
    click.echo(
        table([{k: "-" if v is None else v for k, v in r.items()} for r in rows])
        if rows
        else "no partners"
    )

@click.command("violations")
@click.option("--partner", "partner_id", default=None)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def violations_cmd(gw: Gateway, partner_id: str | None, limit: int, as_json: bool) -> None:
    """Rule breaches found in partners' reports, newest first, with the rule and why."""
    rows = await supervision.violations(gw, partner_id, limit)
    echo_rows(rows, as_json)

@click.command()
@click.option("--overdue", is_flag=True, help="Only those past their deadline.")
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def attestations(gw: Gateway, overdue: bool, as_json: bool) -> None:
    """Recalled cases still waiting for the partner's deletion attestation."""
    rows = await supervision.overdue_attestations(gw, overdue_only=overdue)
    echo_rows(rows, as_json)

@click.group()
def cases() -> None:
    """Cases across partners."""

@cases.command("expiring")
@click.option("--within", default="90d", show_default=True, help="Window, e.g. 90d or 12w.")
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def cases_expiring(gw: Gateway, within: str, as_json: bool) -> None:
    """Cases whose limitation period ends within the window (or has ended)."""
    rows = await supervision.expiring(gw, parse_span(within))
    echo_rows(rows, as_json)
