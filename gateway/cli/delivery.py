"""Delivery commands: ``gateway dispatch``, ``gateway deliveries``, ``gateway package attempts``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from gateway.cli.common import echo_json, table, with_gateway
from gateway.delivery import outbox
from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.dispatch import LEASE_ENV, Dispatcher, Options, Stats
from gateway.errors import NotFound

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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, dispatcher.stop)
    cutoff = outbox.isotime(gw.now())
    reporter = None if quiet else asyncio.create_task(progress(gw, dispatcher.stats))
    try:
        async with gw.audit_upkeep(final=True):
            stats = await (dispatcher.run_once() if once else dispatcher.run())
    finally:
        if reporter:
            reporter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    counts = await outbox.counts(gw, cutoff)
    return {
        "delivered": stats.delivered,
        "retry_wait": stats.retry_wait,
        "dead": stats.dead,
        "skipped": counts["due"],
        "seconds": round(time.monotonic() - stats.started, 3),
    }


async def deliveries(
    gw: Gateway, partner_id: str | None, state: str | None, limit: int
) -> list[dict[str, Any]]:
    where, params = [], []
    if partner_id:
        where.append("partner_id = ?")
        params.append(partner_id)
    if state:
        where.append("state = ?")
        params.append(state)
    sql = (
        "SELECT id, partner_id, state, attempts, next_attempt_at, partner_ref, last_error"
        " FROM packages" + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY created_at DESC, id LIMIT ?"
    )
    async with gw.db.transaction() as tx:
        return await tx.fetchall(sql, (*params, limit))


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
              help=f"Seconds a claim is held [default: ${LEASE_ENV} or 120].")
@click.option("--idle", type=float, default=2.0, show_default=True,
              help="Longest sleep when nothing is due.")
@click.option("--breaker-threshold", type=int, default=5, show_default=True,
              help="Consecutive failures that pause a partner.")
@click.option("--breaker-cooldown", type=float, default=30.0, show_default=True,
              help="Seconds a paused partner waits before one probe.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@with_gateway
async def dispatch(
    gw: Gateway, once: bool, lease: float | None, idle: float,
    breaker_threshold: int, breaker_cooldown: float, quiet: bool,
) -> None:
    """Deliver queued packages to partners; run until SIGTERM, or with --once drain and exit.

    On SIGTERM or Ctrl-C it stops claiming, lets attempts in flight finish, gives
    back what it still holds and exits 0. Several dispatchers may share a workspace.
    """
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s")
    overrides: dict[str, Any] = {"idle": idle}
    if lease is not None:
        overrides["lease"] = lease
    overrides["breaker"] = BreakerPolicy(breaker_threshold, breaker_cooldown)
    options = Options.from_env(**overrides)
    result = await dispatch_main(gw, options, once, quiet)
    click.echo(" ".join(f"{k}={v}" for k, v in result.items()))

@click.command("deliveries")
@click.option("--partner", "partner_id", default=None, help="Only this partner.")
@click.option("--state", type=click.Choice(STATES), default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_gateway
async def deliveries_cmd(
    gw: Gateway, partner_id: str | None, state: str | None, limit: int, as_json: bool
) -> None:
    """Packages with their delivery state, attempts and last error, newest first."""
    rows = await deliveries(gw, partner_id, state, limit)
    if as_json:
        echo_json(rows)
    else:
        click.echo(table(rows) if rows else "no packages")


@click.command("attempts")
@click.argument("package_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_gateway
async def package_attempts(gw: Gateway, package_id: str, as_json: bool) -> None:
    """Every delivery attempt of one package: when, answer, latency, error."""
    rows = await attempts(gw, package_id)
    if as_json:
        echo_json(rows)
    else:
        click.echo(table(rows) if rows else f"no attempts for {package_id} yet")
