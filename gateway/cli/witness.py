"""``gateway witness ...``: a witness that cosigns another party's audit log checkpoints.

It needs no workspace: run it where the bank's operators have no hand, give its
verifier key to the bank (gateway.toml) and to the auditors (``--witness``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from aiohttp import web

from gateway.audit import witness as witness_service
from gateway.audit.cosignature import Witness
from gateway.cli.common import run, until_stop_signal
from gateway.errors import GatewayError

dir_option = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The witness's directory: its key, the logs it trusts, its small store.",
)


@click.group("witness")
def witness() -> None:
    """Witness another log's checkpoints (C2SP tlog-witness): cosign growth, refuse forks."""


@witness.command("init")
@dir_option
@click.option("--name", required=True, help="The witness's key name, e.g. witness.example.org/w1.")
@click.option("--log", "logs", multiple=True, help="A log's verifier key to witness; repeatable.")
def init(directory: Path, name: str, logs: tuple[str, ...]) -> None:
    """Make the witness's key (first time) and add the logs it witnesses; print its key."""
    try:
        vkey = witness_service.init(directory, name, tuple(log.strip() for log in logs))
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(vkey)


@witness.command("serve")
@dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7380, show_default=True, type=click.IntRange(0, 65535))
def serve(directory: Path, host: str, port: int) -> None:
    """Answer POST /add-checkpoint until SIGTERM or Ctrl-C."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s")

    async def main() -> None:
        service = witness_service.WitnessService.open(directory)
        runner = web.AppRunner(witness_service.create_app(service), handle_signals=False)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            name = Witness.parse(service.vkey).fingerprint
            where = f"http://{host}:{port}"
            click.echo(f"witness {name} serving on {where} (Ctrl-C or SIGTERM to stop)", err=True)
            await until_stop_signal()
        finally:
            await runner.cleanup()

    run(main())
