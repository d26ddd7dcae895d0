"""Recovery and control commands: ``deliveries requeue``, ``breaker``, ``tokens list |
revoke``, ``cases show``. Commands that change state are recorded in the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from gateway.cli.common import actor, echo_json, echo_rows, flatten, table, with_gateway
from gateway.clock import isotime
from gateway.core import Gateway
from gateway.delivery import control, requeue
from gateway.onboarding import tokens
from gateway.supervision.timeline import case_timeline


def _moment(text: str | None, name: str) -> str | None:
    """An RFC 3339 time or date (UTC when no offset is given), as stored."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write an RFC 3339 time or a date", param_hint=name) from None
    return isotime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _details(body: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in flatten(body) if k not in ("type", "case_ref", "occurred_at"))


@click.command("requeue")
@click.argument("package_ids", nargs=-1)
@click.option("--partner", "partner_id", default=None, help="A partner's dead packages.")
@click.option("--since", default=None, help="Only those that went dead at or after (RFC 3339, UTC).")
@click.option("--until", default=None, help="Only those that went dead before (RFC 3339, UTC).")
@click.option("--all-dead", is_flag=True, help="With --partner: every dead package of the partner.")
@click.option("--reason", default="", help="Why (recorded in the audit log; no personal data).")
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def requeue_cmd(
    gw: Gateway, package_ids: tuple[str, ...], partner_id: str | None, since: str | None,
    until: str | None, all_dead: bool, reason: str, as_json: bool,
) -> None:
    """Put dead packages back in the outbox: the same package (id, sealed bytes,
    Idempotency-Key) goes back to queued, recorded as a redelivery, not a new disclosure.

    Name package ids, or --partner ID with --all-dead or --since/--until. Refused (and
    named on stderr, exit status 1): packages not dead, expired ones (place the case
    anew), those of a suspended or offboarded partner or of a recalled case.
    """
    if partner_id and not (all_dead or since or until):
        raise click.UsageError("with --partner, say --all-dead or give --since/--until")
    if package_ids and (partner_id or all_dead or since or until):
        raise click.UsageError("name package ids, or a partner with a range; not both")
    selection = requeue.Selection(
        package_ids, partner_id, _moment(since, "--since"), _moment(until, "--until")
    )
    done = await requeue.requeue(gw, selection, actor=actor(), reason=reason)
    if as_json:
        echo_json({"requeued": done.requeued, "refused": done.refused})
    else:
        for package_id in done.requeued:
            click.echo(f"{package_id} queued")
        click.echo(f"requeued {len(done.requeued)}, refused {len(done.refused)}", err=True)
    for package_id, why in done.refused.items():
        click.echo(f"refused {package_id}: {why}", err=True)
    if done.refused:
        raise SystemExit(1)


@click.group("breaker")
def breaker() -> None:
    """Partners' circuit breakers (shared by every dispatcher through the database)."""


@breaker.command("show")
@click.argument("partner_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def breaker_show(gw: Gateway, partner_id: str | None, as_json: bool) -> None:
    """Each partner's breaker: state, failures in its window, open until when."""
    rows = await control.breakers(gw, partner_id)
    echo_rows(rows, as_json)


@breaker.command("reset")
@click.argument("partner_id")
@with_gateway
async def breaker_reset(gw: Gateway, partner_id: str) -> None:
    """Close the partner's breaker now and forget its failures; recorded in the audit log."""
    previous = await control.reset_breaker(gw, partner_id, actor=actor())
    click.echo(f"breaker of {partner_id} closed (was {previous})")


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def tokens_list(gw: Gateway, as_json: bool) -> None:
    """API tokens: id, role, label, created, expires, revoked, status (never the secret)."""
    rows = await tokens.list_tokens(gw)
    echo_rows(rows, as_json)


@click.command("revoke")
@click.argument("token_id")
@with_gateway
async def tokens_revoke(gw: Gateway, token_id: str) -> None:
    """Revoke a token (by its id, or the whole token): it gets 401 from now on."""
    at = await tokens.revoke(gw, token_id, actor=actor())
    click.echo(f"token {token_id.removeprefix('gwt_').partition('_')[0]} revoked at {at}")


@click.command("show")
@click.argument("case_id")
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def cases_show(gw: Gateway, case_id: str, as_json: bool) -> None:
    """A case's timeline across partners: assignments, reported events, violations."""
    data = await case_timeline(gw, case_id)
    if as_json:
        echo_json(data)
        return
    click.echo(f"case {case_id}")
    click.echo(table(data["assignments"]))
    click.echo("\ntimeline")
    shown = ("occurred_at", "partner_id", "type", "source")
    events = [
        {**{k: e[k] for k in shown}, "details": _details(e["body"])} for e in data["timeline"]
    ]
    click.echo(table(events) if events else "no events")
    click.echo("\nviolations")
    rows = [{k: v[k] for k in ("at", "partner_id", "rule", "message")} for v in data["violations"]]
    click.echo(table(rows) if rows else "none")
