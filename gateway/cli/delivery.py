"""Delivery commands: ``gateway dispatch``, ``gateway deliveries``, ``gateway package attempts``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import click

from gateway import logs
from gateway.cli.common import echo_rows, on_stop_signals, with_gateway, with_gateway_service
from gateway.delivery import control, outbox
from gateway.delivery.dispatch import Dispatcher, Options, Stats
from gateway.errors import NotFound
from gateway.http.metrics import listener

if TYPE_CHECKING:
    from gateway.core import Gateway

STATES = ("queued", "sending", "retry_wait", "delivered", "dead", "recalled")


async def progress(gw: Gateway, stats: Stats, every: float = 1.0) -> None:
    """A line on stderr each second while work moves, so a long drain shows its pace."""
    last: tuple[int, int, int] | None = None
    while True:
        await asyncio.sleep(every)
        now = (stats.delivered, stats.retry_wait, stats.dead)
        if now == last:
            continue
        last = now
        counts = await outbox.counts(gw)
        pending = sum(counts.get(s, 0) for s in outbox.PENDING_STATES)
        click.echo(
            f"delivered {stats.delivered}  failed {stats.retry_wait + stats.dead}"
            f" (retry {stats.retry_wait}, dead {stats.dead})  pending {pending}"
            f"  {stats.rate:.1f}/s",
            err=True,
        )


async def dispatch_main(gw: Gateway, options: Options, once: bool, quiet: bool) -> dict[str, Any]:
    dispatcher = Dispatcher(gw, options)
    undo_signals = on_stop_signals(dispatcher.stop)
    cutoff = outbox.isotime(gw.now())
    reporter = None if quiet else asyncio.create_task(progress(gw, dispatcher.stats))
    try:
        async with gw.audit_upkeep(final=True):
            stats = await (dispatcher.run_once() if once else dispatcher.run())
    finally:
        if reporter:
            reporter.cancel()
        undo_signals()
    counts = await outbox.counts(gw, cutoff)
    return {
        "delivered": stats.delivered,
        "retry_wait": stats.retry_wait,
        "dead": stats.dead,
        "skipped": counts["due"],
        "seconds": round(time.monotonic() - stats.started, 3),
    }


async def attempts(gw: Gateway, package_id: str) -> list[dict[str, Any]]:
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT number, started_at, latency_ms, outcome, status, error_class, retry_at, detail"
            " FROM attempts WHERE package_id = ? ORDER BY number",
            (package_id,),
        )
        if not rows and await tx.fetchone("SELECT 1 FROM packages WHERE id = ?", (package_id,)) is None:
            raise NotFound(f"no package {package_id!r} (see `gateway package list`)")
    return rows


@click.command()
@click.option("--once", is_flag=True, help="Send what is due now, print counts, exit (for cron).")
@click.option("--lease", type=float, default=None,
              help="Seconds a claim is held [default: dispatch.lease_seconds, 120].")
@click.option("--idle", type=float, default=None,
              help="Longest sleep when nothing is due [default: dispatch.idle_seconds, 2].")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or JSON (JSON: no progress lines) [default: log_format].")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics (no token) on metrics_host:PORT [default: metrics_port in gateway.toml].")
@with_gateway_service
async def dispatch(
    gw: Gateway, once: bool, lease: float | None, idle: float | None, quiet: bool,
    log_format: str | None, metrics_port: int | None,
) -> None:
    """Deliver queued packages to partners; run until SIGTERM, or with --once drain and exit.

    On SIGTERM or Ctrl-C it stops claiming, lets attempts in flight finish, gives
    back what it still holds and exits 0. Several dispatchers may share a workspace.
    Its settings are the workspace's ``[dispatch]`` and ``[breaker]`` (`gateway config show`).
    It runs on uvloop where that is installed (``event_loop`` in gateway.toml).
    """
    fmt = log_format or gw.settings.log_format
    logs.configure(fmt, logs.level(gw.settings.log_level))  # type: ignore[arg-type]
    flags = {"lease": lease, "idle": idle}
    options = Options.from_settings(gw.settings.dispatch, **{k: v for k, v in flags.items() if v is not None})
    port = gw.settings.metrics_port if metrics_port is None else metrics_port
    async with contextlib.AsyncExitStack() as stack:
        if port:
            await stack.enter_async_context(listener(gw, gw.settings.metrics_host, port))
        result = await dispatch_main(gw, options, once, quiet or fmt == "json")
    click.echo(" ".join(f"{k}={v}" for k, v in result.items()))

@click.group("deliveries", invoke_without_command=True)
@click.option("--partner", "partner_id", default=None, help="Only this partner.")
@click.option("--state", type=click.Choice(STATES), default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def deliveries_cmd(
    ctx: click.Context, partner_id: str | None, state: str | None, limit: int, as_json: bool
) -> None:
    """Packages with their delivery state, attempts, last error and why each waiting one
    waits (held by a rule, breaker open, rate limited, retrying), newest first.
    `gateway deliveries requeue` puts dead packages back in the outbox."""
    if ctx.invoked_subcommand is not None:
        return

    @with_gateway
    async def show(gw: Gateway) -> None:
        rows = await control.deliveries(gw, partner_id, state, limit)
        echo_rows(rows, as_json, "no packages")

    ctx.invoke(show)


@click.command("attempts")
@click.argument("package_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_gateway
async def package_attempts(gw: Gateway, package_id: str, as_json: bool) -> None:
    """Every delivery attempt of one package: when, answer, latency, error."""
    rows = await attempts(gw, package_id)
    echo_rows(rows, as_json, f"no attempts for {package_id} yet")
