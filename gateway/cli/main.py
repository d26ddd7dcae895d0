"""The ``gateway`` command line: one module per command group, gathered here.

Every failure prints one line (what went wrong, where, how to fix it) and exits with
status 1; usage errors exit with 2. Nothing is half-written: each command's changes are
one database transaction. Plugins add commands through ``gateway_register_commands``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from gateway import logs
from gateway.cli import (
    audit,
    delivery,
    keys,
    lifecycle,
    operations,
    partners,
    placement,
    serve,
    supervision,
    witness,
    workspace,
)
from gateway.config import CONFIG_NAME, ENV_VAR
from gateway.plugin.manager import get_plugin_manager


class GatewayCli(click.Group):
    """The ``gateway`` group: the built-in commands, and the plugins' once first asked for
    (so that importing the CLI loads no plugin)."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self._plugins_added:
            self._plugins_added = True
            get_plugin_manager().hook.gateway_register_commands(cli=self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)


@click.group(cls=GatewayCli)
@click.option(
    "-c",
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Workspace config file or directory [default: ${ENV_VAR} or ./{CONFIG_NAME}]",
)
@click.version_option(package_name="agency-gateway")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Agency Gateway: minimized, encrypted case packages to collection partners."""
    ctx.obj = {"config": config}
    fmt = os.environ.get(logs.FORMAT_ENV, "text")
    logs.configure("json" if fmt == "json" else "text", logging.WARNING)


COMMANDS: tuple[click.Command, ...] = (
    workspace.init,
    keys.keys,
    workspace.schemas,
    workspace.plugins,
    workspace.config_group,
    partners.partners,
    placement.place,
    placement.package,
    placement.recall,
    delivery.dispatch,
    delivery.deliveries_cmd,
    serve.serve,
    serve.poll,
    serve.tokens_group,
    supervision.scorecard,
    supervision.violations_cmd,
    supervision.attestations,
    supervision.cases,
    audit.audit,
    operations.breaker,
    witness.witness,
    lifecycle.retention,
    lifecycle.subject,
)
for command in COMMANDS:
    cli.add_command(command)
placement.package.add_command(delivery.package_attempts)
delivery.deliveries_cmd.add_command(operations.requeue_cmd)
serve.tokens_group.add_command(operations.tokens_list)
serve.tokens_group.add_command(operations.tokens_revoke)
supervision.cases.add_command(operations.cases_show)
for command in (lifecycle.case_hold, lifecycle.case_release, lifecycle.case_holds):
    supervision.cases.add_command(command)
keys.keys.add_command(lifecycle.keys_rotate_storage)



def main() -> None:
    try:
        cli(prog_name="gateway")
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`gateway place DIR | head`): what was committed stays,
        # `gateway package list` shows it. No traceback, and none at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
