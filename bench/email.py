"""Email reminders: the gateway's dispatch against Apprise, same messages, same relay.

    python bench/email.py                   # 2000 messages each
    python bench/email.py --messages 500 --loop uvloop

One local relay (aiosmtpd in a process of its own, STARTTLS required, a self-signed
certificate that both clients verify) takes the same reminders from both:

- **Apprise** (installed for the bench only: ``pip install -e '.[bench]'``), in a
  process of its own, unthrottled, one ``notify`` per message to the debtor's address:
  what a script sending reminders with the usual library costs. The URL objects are
  made before the timing.
- **the gateway**: the same messages placed with the sample email partner beforehand
  (not timed), then ``Dispatcher.run_once``: claims under lease with the rule pack's
  check of each message, SMTP over STARTTLS, every attempt, acknowledgement and the
  debtor's contact stored.

The figure is client CPU per message (user + system, all threads; the relay counts for
neither): Apprise's ÷ the gateway's. Wall-clock rates are printed beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on the path, where this file would hide the
# standard library's email package: the checkout takes the folder's place.
REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
else:  # imported (by the tests, another bench)
    sys.path.insert(0, str(REPO))

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import Goal, add_goals_option, keys_settled, run_loop, write_goals
from gateway.config import CONFIG_NAME, load_settings, render_config
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher, Options
from gateway.onboarding import registry
from gateway.onboarding.keys import KeyStore
from gateway.placement import service as placement
from schemas.case import Case

CASE = REPO / "examples" / "cases" / "case-1001.json"
PROFILE = REPO / "examples" / "partners" / "notify-mail.toml"
SENDER = "reminders@bank.example"
SUBJECT = "Payment reminder"
CONCURRENCY = 4


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (cert, key) PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench relay")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )  # fmt: skip
    return cert_path, key_path


def relay_process(cert: str, key: str, ready: Any, counts: Any) -> None:
    """An aiosmtpd relay requiring STARTTLS; ``counts[0]`` messages, ``counts[1]`` connections."""
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            counts[0] += 1
            return "250 OK queued"

    class Counted(SMTP):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            if self._original_transport is None:  # not the same connection after STARTTLS
                counts[1] += 1
            super().connection_made(transport)

    async def main() -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        server = await asyncio.get_running_loop().create_server(
            lambda: Counted(Handler(), hostname="relay.bench", tls_context=tls, require_starttls=True),
            "127.0.0.1", 0,
        )  # fmt: skip
        ready.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def message_text(template: str, case: Case) -> str:
    """The reminder's body as the gateway renders it from the sample profile's template."""
    account = case.loan.account_number
    return (template.replace("{loan.account_number}", "*" * (len(account) - 4) + account[-4:])
            .replace("{loan.outstanding}", str(case.loan.outstanding))
            .replace("{loan.currency}", case.loan.currency))  # fmt: skip


def cases(count: int) -> Iterator[Case]:
    """``count`` debtors, each with a reminder of their own (the rule pack caps messages
    per debtor, so the same one cannot take 2000)."""
    base = json.loads(CASE.read_text())
    for i in range(count):
        base["case_id"] = f"C-BENCH-{i:06d}"
        base["debtor"]["email"] = f"debtor{i}@example.com"
        base["debtor"]["id_number"] = f"1101011990030{i:05d}"
        yield Case.model_validate(base)


def apprise_client(port: int, count: int, cert: str) -> dict[str, float]:
    """Run in a child: Apprise sends ``count`` messages; its CPU and wall seconds."""
    os.environ["SSL_CERT_FILE"] = cert  # Apprise verifies with the default trust store
    import apprise

    template = message_text(_template(), next(cases(1)))
    notifiers = []
    for i in range(count):
        url = f"mailtos://127.0.0.1:{port}?mode=starttls&from={SENDER}&to=debtor{i}@example.com&format=text"
        notifier = apprise.Apprise.instantiate(url)
        assert notifier is not None, url
        notifier.request_rate_per_sec = 0  # unthrottled
        notifiers.append(notifier)
    cpu, wall = time.process_time(), time.perf_counter()
    failed = sum(1 for n in notifiers if not n.notify(body=template, title=SUBJECT))
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "failed": failed}


def _template() -> str:
    import tomllib

    return str(tomllib.loads(PROFILE.read_text())["adapter_config"]["templates"]["reminder"]["text"])


class ContactHours:
    """The gateway's clock, running from 10:00 in the debtors' time zone (Shanghai), so
    the rule pack's contact hours let the reminders go whenever the bench runs."""

    def __init__(self) -> None:
        real = dt.datetime.now(dt.UTC)
        local = real.astimezone(ZoneInfo("Asia/Shanghai"))
        self.shift = local.replace(hour=10, minute=0, second=0, microsecond=0) - local

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.shift


async def gateway_workspace(root: Path, port: int, cert: Path) -> Gateway:
    ws = root / "ws"
    ws.mkdir()
    (ws / CONFIG_NAME).write_text(render_config("bench-bank", "Bench Bank"))
    settings = load_settings(ws)
    KeyStore(settings.keys_dir).generate()
    profile = ws / "mail.toml"
    profile.write_text(
        PROFILE.read_text()
        .replace("smtp://127.0.0.1:18025", f"smtp://127.0.0.1:{port}")
        .replace('tls = "starttls"', f'tls = "starttls"\nca_file = "{cert}"')
        .replace("[adapter_config]",
                 f"[limits]\nconcurrency = {CONCURRENCY}\nrate_per_second = 100000\n\n[adapter_config]")
    )  # fmt: skip
    gw = await Gateway.open(settings, clock=ContactHours())
    await registry.add(gw, profile, actor="bench")
    keys_settled()
    return gw


async def gateway_run(root: Path, port: int, cert: Path, count: int) -> dict[str, float]:
    gw = await gateway_workspace(root, port, cert)
    try:
        placing = placement.place_many(gw, cases(count), "notify-mail", "reminder", actor="bench")
        async for _, placed in placing:
            assert isinstance(placed, placement.Placement), placed
        cpu, wall = time.process_time(), time.perf_counter()
        stats = await Dispatcher(gw, Options(batch=100)).run_once()
        result = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
                  "failed": count - stats.delivered}  # fmt: skip
    finally:
        await gw.close()
    return result


def report(
    count: int, apprise: dict[str, float], gateway: dict[str, float], connections: tuple[int, int]
) -> tuple[float, float]:
    """Print both clients' figures; returns their CPU milliseconds a message."""
    a_ms, g_ms = apprise["cpu"] * 1000 / count, gateway["cpu"] * 1000 / count
    print(f"Apprise: {a_ms:6.2f} ms CPU/msg, {count / apprise['wall']:6.0f} msg/s wall,"
          f" {connections[0]} connections, {apprise['failed']:.0f} failed")
    print(f"gateway: {g_ms:6.2f} ms CPU/msg, {count / gateway['wall']:6.0f} msg/s wall,"
          f" {connections[1]} connections, {gateway['failed']:.0f} failed")
    print(f"ratio Apprise / gateway CPU per message: {a_ms / g_ms:.2f} (goal 4, moonshot 10)")
    return a_ms, g_ms


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cert, key = self_signed(root)
        spawn = multiprocessing.get_context("spawn")
        ready = spawn.Queue()
        counts = spawn.Array("q", 2, lock=False)
        relay = spawn.Process(target=relay_process, args=(str(cert), str(key), ready, counts), daemon=True)
        relay.start()
        try:
            port = ready.get(timeout=30)
            out = subprocess.run(
                [sys.executable, __file__, "--apprise-child", str(port), "--messages", str(args.messages),
                 "--cert", str(cert)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            apprise = json.loads(out.stdout.splitlines()[-1])
            after_apprise = (counts[0], counts[1])
            gateway = run_loop(gateway_run(root, port, cert, args.messages), args.loop)
            received = counts[0] - after_apprise[0]
            assert after_apprise[0] == args.messages and received == args.messages, (after_apprise, received)
            connections = (after_apprise[1], counts[1] - after_apprise[1])
            a_ms, g_ms = report(args.messages, apprise, gateway, connections)
            write_goals(args.goals_json, [Goal(
                f"email reminders, client CPU a message ({args.messages:,} messages, {args.loop})",
                f"{a_ms:.2f} ms: Apprise", f"{g_ms:.2f} ms: {a_ms / g_ms:.2f}x less",
                ">= 4x (moonshot 10x)", a_ms / g_ms >= 4,
            )])
        finally:
            relay.terminate()
            relay.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages each client sends")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the gateway's event loop")
    parser.add_argument("--apprise-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    add_goals_option(parser)
    arguments = parser.parse_args()
    if arguments.apprise_child:
        print(json.dumps(apprise_client(arguments.apprise_child, arguments.messages, arguments.cert)))
    else:
        main(arguments)
