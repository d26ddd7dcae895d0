"""What every command module shares: the workspace opener, the one-line error, output."""

from __future__ import annotations

import asyncio
import functools
import getpass
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import click

from gateway import eventloop, heap, jsontext
from gateway.config import Settings, load_settings
from gateway.controls import CONTROLS
from gateway.core import Gateway
from gateway.errors import GatewayError

T = TypeVar("T")
MAX_SPAN_DAYS = 36500


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """Call ``stop`` on SIGINT (Ctrl-C) and SIGTERM, in the running loop; returns what
    takes the handlers off again."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)

    def undo() -> None:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)

    return undo


async def until_stop_signal() -> None:
    """Wait for SIGINT (Ctrl-C) or SIGTERM."""
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    await stop.wait()


def actor() -> str:
    return os.environ.get("GATEWAY_ACTOR") or f"cli:{getpass.getuser()}"


def run(coro: Coroutine[Any, Any, T], event_loop: str = "asyncio") -> T:
    """Run a coroutine on the loop ``event_loop`` names (`gateway.eventloop`: the
    long-running commands pass the ``event_loop`` setting), turning gateway errors into
    one clean CLI line."""
    try:
        return eventloop.run(coro, event_loop)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None


def with_gateway(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Open the workspace named by --config for the command, and close it after."""
    return _with_gateway(fn, service=False)


def with_gateway_service(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """`with_gateway` for a long-running command: on the loop of the ``event_loop`` setting."""
    return _with_gateway(fn, service=True)


def _with_gateway(fn: Callable[..., Awaitable[Any]], service: bool) -> Callable[..., Any]:
    @click.pass_obj
    @functools.wraps(fn)
    def wrapper(obj: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        settings = settings_of(obj) if service else None

        async def main() -> Any:
            async with await Gateway.open(settings or load_settings(obj["config"])) as gw:
                if service:
                    heap.settle()  # a long-running process: its start-up objects stay
                return await fn(gw, *args, **kwargs)

        return run(main(), settings.event_loop if settings else "asyncio")

    return wrapper


def read_id_number(value: str) -> str:
    """An identity document number given as ``-``: read from standard input (a prompt
    that does not echo on a terminal), so it stays out of the process list and the
    shell history. Any other value is taken as it is."""
    if value != "-":
        return value.strip()
    if sys.stdin.isatty():
        value = click.prompt("Identity document number", hide_input=True, err=True)
    else:
        value = sys.stdin.readline()
    if not value.strip():
        raise click.BadParameter("no number on standard input", param_hint="--id-number")
    return value.strip()


def echo_json(data: Any) -> None:
    click.echo(jsontext.dumps(data, indent=2, ensure_ascii=False, default=str))


def settings_of(obj: dict[str, Any]) -> Settings:
    try:
        return load_settings(obj["config"])
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None


def parse_span(text: str, param_hint: str = "--within") -> timedelta:
    match = re.fullmatch(r"(\d+)([dw])", text.strip())
    if not match:
        raise click.BadParameter(
            f"{text!r}: write a number of days or weeks, e.g. 90d or 12w", param_hint=param_hint
        )
    days = int(match[1]) * (7 if match[2] == "w" else 1)
    if days > MAX_SPAN_DAYS:
        raise click.BadParameter(f"{text!r}: at most {MAX_SPAN_DAYS}d (100 years)", param_hint=param_hint)
    return timedelta(days=days)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        return [item for k, v in data.items() for item in flatten(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(data, list):
        return [item for i, v in enumerate(data) for item in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, data)]


def echo_rows(rows: list[dict[str, Any]], as_json: bool, empty: str = "none") -> None:
    """Rows as JSON, or as a table (a missing value shown as ``-``), or ``empty`` if none."""
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo(empty)
    else:
        click.echo(table([{k: "-" if v is None else v for k, v in r.items()} for r in rows]))


def printable(value: Any) -> str:
    """``value`` as one line of text a terminal shows as it is: control characters
    (CR, LF, ESC, ...) escaped, so a stored text cannot fake a row or move the cursor."""
    return CONTROLS.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), str(value))


def table(rows: list[dict[str, Any]]) -> str:
    headers = list(rows[0])
    cells = [[printable(r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


