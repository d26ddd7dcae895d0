"""Inbound and supervision commands: serve, tokens, recall, scorecards, attestations."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sys
from datetime import timedelta
from typing import Any

import click

from gateway.core import Gateway
from gateway.inbound import poller
from gateway.onboarding import tokens
from gateway.placement import recall as recalls
from gateway.supervision import scorecards as supervision

MAX_SPAN_DAYS = 36500


def parse_span(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([dw])", text.strip())
    if not match:
        raise click.BadParameter(
            f"{text!r}: write a number of days or weeks, e.g. 90d or 12w", param_hint="--within"
        )
    days = int(match[1]) * (7 if match[2] == "w" else 1)
    if days > MAX_SPAN_DAYS:
        raise click.BadParameter(f"{text!r}: at most {MAX_SPAN_DAYS}d (100 years)", param_hint="--within")
    return timedelta(days=days)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or the one line saying why not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:  # port taken, address not on this machine, ...
        # Resolver errors (socket.gaierror) have negative numbers of their own.
        number = exc.errno or 0
        reason = os.strerror(number) if number > 0 else exc.strerror or str(exc)
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from None


def register(cli: click.Group) -> None:
    from gateway.cli.main import _settings, actor, echo_json, run, table, with_gateway

    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
    @click.option("--no-workers", is_flag=True, help="Serve HTTP only; run dispatch and poll elsewhere.")
    @click.pass_obj
    def serve(obj: dict[str, Any], host: str, port: int, no_workers: bool) -> None:
        """Run the HTTP service (callbacks, operator API, JWKS, health, OpenAPI) with the
        dispatcher and the poller in the same process."""
        from aiohttp import web

        from gateway.http import create_app

        logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s")
        settings = _settings(obj)
        sock = listen(host, port)  # before anything starts: a taken port sends nothing

        async def main() -> None:
            runner = web.AppRunner(create_app(settings, workers=not no_workers), handle_signals=False)
            await runner.setup()
            try:
                await web.SockSite(runner, sock).start()
                bound = sock.getsockname()[1]
                click.echo(f"serving on http://{host}:{bound} (Ctrl-C or SIGTERM to stop)", err=True)
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()
            finally:
                await runner.cleanup()

        with sock:
            run(main())

    @cli.command()
    @click.option("--json", "as_json", is_flag=True)
    @with_gateway
    async def poll(gw: Gateway, as_json: bool) -> None:
        """Fetch status feeds of partners that cannot push, once (for cron)."""
        rows = poller.summary(await poller.poll_once(gw))
        if as_json:
            echo_json(rows)
        else:
            click.echo(
                table([{k: "-" if v is None else v for k, v in r.items()} for r in rows])
                if rows
                else "no pollable partners"
            )

    @cli.group("tokens")
    def tokens_group() -> None:
        """API bearer tokens (roles operator, auditor, admin)."""

    @tokens_group.command("create")
    @click.option("--role", type=click.Choice(tokens.ROLES), required=True)
    @click.option("--label", default="", help="Who or what uses it.")
    @with_gateway
    async def tokens_create(gw: Gateway, role: str, label: str) -> None:
        """Create a token and print it once; only its hash is stored."""
        click.echo(await tokens.create(gw, role, label, actor=actor()))

    @cli.command()
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

    partners = cli.commands["partners"]
    assert isinstance(partners, click.Group)

    @partners.command("offboard")
    @click.argument("partner_id")
    @click.option("--reason", required=True,
                  help="Why, in general terms; sent with each recall notice and recorded in the audit log "
                  "(no personal data).")
    @with_gateway
    async def partners_offboard(gw: Gateway, partner_id: str, reason: str) -> None:
        """Recall every open case of a partner and end the relationship."""
        done = await recalls.offboard(gw, partner_id, reason, actor=actor())
        click.echo(f"{partner_id}: offboarded; {len(done)} case(s) recalled, deletion attestations due")

    @partners.command("webhook-secret")
    @click.argument("partner_id")
    @with_gateway
    async def partners_webhook_secret(gw: Gateway, partner_id: str) -> None:
        """Add a whsec_ secret for v1 callback signatures (older ones stay valid).

        The secret is written to a 0600 file for handover to the partner, never printed.
        """
        from gateway.onboarding import registry

        await registry.get(gw, partner_id)
        path = gw.keys.add_webhook_secret(partner_id)
        click.echo(f"new secret appended to {path} (hand the last line to the partner securely)")

    @cli.command()
    @click.argument("partner_id", required=False)
    @click.option("--json", "as_json", is_flag=True)
    @with_gateway
    async def scorecard(gw: Gateway, partner_id: str | None, as_json: bool) -> None:
        """Partner scorecards: acknowledgement, contact, promises, recovery, violations."""
        cards = (
            [await supervision.scorecard(gw, partner_id)] if partner_id else await supervision.scorecards(gw)
        )
        rows = [c.as_dict() for c in cards]
        if as_json:
            echo_json(rows)
            return
        click.echo(
            table([{k: "-" if v is None else v for k, v in r.items()} for r in rows])
            if rows
            else "no partners"
        )

    @cli.command("violations")
    @click.option("--partner", "partner_id", default=None)
    @click.option("--limit", default=100, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @with_gateway
    async def violations_cmd(gw: Gateway, partner_id: str | None, limit: int, as_json: bool) -> None:
        """Rule breaches found in partners' reports, newest first, with the rule and why."""
        rows = await supervision.violations(gw, partner_id, limit)
        if as_json:
            echo_json(rows)
        else:
            click.echo(table(rows) if rows else "none")

    @cli.command()
    @click.option("--overdue", is_flag=True, help="Only those past their deadline.")
    @click.option("--json", "as_json", is_flag=True)
    @with_gateway
    async def attestations(gw: Gateway, overdue: bool, as_json: bool) -> None:
        """Recalled cases still waiting for the partner's deletion attestation."""
        rows = await supervision.overdue_attestations(gw, overdue_only=overdue)
        if as_json:
            echo_json(rows)
        else:
            click.echo(table(rows) if rows else "none")

    @cli.group()
    def cases() -> None:
        """Cases across partners."""

    @cases.command("expiring")
    @click.option("--within", default="90d", show_default=True, help="Window, e.g. 90d or 12w.")
    @click.option("--json", "as_json", is_flag=True)
    @with_gateway
    async def cases_expiring(gw: Gateway, within: str, as_json: bool) -> None:
        """Cases whose limitation period ends within the window (or has ended)."""
        rows = await supervision.expiring(gw, parse_span(within))
        if as_json:
            echo_json(rows)
        else:
            click.echo(table(rows) if rows else "none")
