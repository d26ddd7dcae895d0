"""Service commands: ``serve``, ``poll``, ``tokens``."""

from __future__ import annotations

import os
import socket
from typing import Any

import click
from aiohttp import web

from gateway import eventloop, heap, logs
from gateway.cli.common import actor, echo_rows, parse_span, run, settings_of, until_stop_signal, with_gateway
from gateway.core import Gateway
from gateway.http import create_app
from gateway.inbound import poller
from gateway.onboarding import tokens


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-workers", is_flag=True, help="Serve HTTP only; run dispatch and poll elsewhere.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or JSON, one per event [default: log_format in gateway.toml].")
@click.pass_obj
def serve(obj: dict[str, Any], host: str, port: int, no_workers: bool, log_format: str | None) -> None:
    """Run the HTTP service (callbacks, operator API, JWKS, health, readiness, metrics,
    OpenAPI) with the dispatcher, the poller and the operations watch in the same process.

    Always (with --no-workers too) the audit log gets a checkpoint every
    audit_checkpoint_seconds while it grows and one as serve stops, each submitted to
    the witnesses of gateway.toml. It runs on uvloop where that is installed
    (``event_loop`` in gateway.toml)."""
    settings = settings_of(obj)
    logs.configure(log_format or settings.log_format, logs.level(settings.log_level))  # type: ignore[arg-type]
    sock = listen(host, port)  # before anything starts: a taken port sends nothing

    async def main() -> None:
        app = create_app(settings, workers=not no_workers, upkeep=True)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        heap.settle()  # the app and its gateway are open: what start-up made stays
        try:
            await web.SockSite(runner, sock).start()
            bound = sock.getsockname()[1]
            click.echo(f"serving on http://{host}:{bound} (event loop: {loop_name};"
                       " Ctrl-C or SIGTERM to stop)", err=True)
            await until_stop_signal()
        finally:
            await runner.cleanup()

    loop_name = eventloop.name(settings.event_loop)
    with sock:
        run(main(), settings.event_loop)


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

@click.command()
@click.option("--json", "as_json", is_flag=True)
@with_gateway
async def poll(gw: Gateway, as_json: bool) -> None:
    """Fetch status feeds of partners that cannot push, once (for cron)."""
    rows = poller.summary(await poller.poll_once(gw))
    echo_rows(rows, as_json, "no pollable partners")

@click.group("tokens")
def tokens_group() -> None:
    """API bearer tokens (roles operator, auditor, admin)."""

@tokens_group.command("create")
@click.option("--role", type=click.Choice(tokens.ROLES), required=True)
@click.option("--label", default="", help="Who or what uses it.")
@click.option("--expires", default=None, help="Refused after this long, e.g. 90d or 12w [default: never].")
@with_gateway
async def tokens_create(gw: Gateway, role: str, label: str, expires: str | None) -> None:
    """Create a token and print it once; only its hash is stored."""
    span = parse_span(expires, "--expires") if expires else None
    click.echo(await tokens.create(gw, role, label, actor=actor(), expires_in=span))
