"""A populated workspace served by a real ``gateway serve``, for the dashboard's browser
tests; and Debian's Chromium, installed when missing, for Playwright to drive.

The workspace holds two agencies over real TLS: packages delivered and dead, reports
back (one at night, breaking the contact-hours rule), a recall whose deletion
attestation is overdue, a signed checkpoint, and an operator and an auditor token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.audit.log import checkpoint_now
from gateway.cli.placement import read_case
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.inbound.pipeline import ingest
from gateway.onboarding import registry, tokens
from gateway.placement import recall
from gateway.placement import service as placement
from tests.partners import CASE, PARTNER, Clock, agency_profile, agency_workspace, rows
from tests.toolchains import apt_install

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
LIMITS = "max_attempts = 1\nrate_per_second = 1000\ntimeout = 2"
OTHER = "beta-collect"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def install_chromium() -> Path:
    """Debian's chromium package, when it is not on the machine yet (root only)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        raise RuntimeError("Chromium not found at /usr/bin/chromium and not root: install Debian's chromium")
    apt_install("chromium")
    return CHROMIUM


@dataclass
class Site:
    url: str
    workspace: Path
    operator: str
    auditor: str
    case_id: str
    dead: list[str]

    def api(self, path: str, token: str) -> object:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())


def _case(n: int):  # type: ignore[no-untyped-def]
    return read_case(CASE).model_copy(update={"case_id": f"C-UI-{n}"})


async def _place(gw: Gateway, n: int, partner: str = PARTNER) -> str:
    return (await placement.place(gw, _case(n), partner, "collection", actor="test")).package_id


async def _report(gw: Gateway, partner: str, ref: str, kind: str, at: datetime, **fields: object) -> None:
    body = json.dumps({"type": kind, "case_ref": ref, "occurred_at": at.isoformat(), **fields})
    await ingest(gw, partner, body.encode(), channel="callback", webhook_id=f"msg_{ref}{kind}{at}")


async def _reports(gw: Gateway, case_ref: str, now: datetime) -> None:
    day = (now.astimezone(SHANGHAI) - timedelta(days=1)).replace(second=0, microsecond=0)
    call = {"channel": "voice", "target": "debtor"}
    await _report(gw, PARTNER, case_ref, "accepted", day.replace(hour=9, minute=0))
    await _report(gw, PARTNER, case_ref, "contact_attempt", day.replace(hour=10, minute=5), **call,
                  outcome="connected")  # fmt: skip
    due = str(day.date() + timedelta(days=7))
    await _report(gw, PARTNER, case_ref, "promise_to_pay", day.replace(hour=10, minute=9), amount="500.00",
                  due=due)  # fmt: skip
    await _report(gw, PARTNER, case_ref, "payment_reported", day.replace(hour=16, minute=0), amount="500.00")
    # Breaks the contact-hours rule (08:00-22:00 on the debtor's clock).
    await _report(gw, PARTNER, case_ref, "contact_attempt", day.replace(hour=23, minute=10), **call,
                  outcome="no_answer")  # fmt: skip


async def populate(tmp: Path) -> Site:
    clock = Clock()
    real = datetime.now(UTC)
    clock.now = real - timedelta(days=20)
    async with agency_workspace(tmp, limits=LIMITS, clock=clock) as (gw, agency, ca):
        ws = Path(gw.settings.base_dir)
        agency.decrypt = False  # one endpoint plays both agencies
        other, _ = agency_profile(ws, agency.port, ca, limits=LIMITS, partner_id=OTHER)
        await registry.add(gw, other, actor="test")
        await _place(gw, 90)
        await recall.recall(gw, "C-UI-90", PARTNER, "placed in error", actor="test")  # now overdue
        clock.now = real - timedelta(days=2)
        delivered = [await _place(gw, n) for n in (1, 2)] + [await _place(gw, 3, OTHER)]
        await Dispatcher(gw).run_once()
        agency.default = "500"
        dead = [await _place(gw, n) for n in (4, 5)]
        await Dispatcher(gw).run_once()
        clock.now = datetime.now(UTC)
        refs = await rows(gw, "SELECT case_ref FROM packages WHERE id = ?", (delivered[0],))
        await _reports(gw, refs[0]["case_ref"], clock.now)
        agency.default = "ok"
        await _place(gw, 6)
        await Dispatcher(gw).run_once()  # delivered today
        await checkpoint_now(gw.db, gw.audit_signer)
        operator = await tokens.create(gw, "operator", "dashboard test", actor="test")
        auditor = await tokens.create(gw, "auditor", "dashboard test", actor="test")
    return Site("", ws, operator, auditor, "C-UI-1", dead)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(site: Site, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``gateway serve`` on a free port (no workers: the test partners are gone)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "-c", str(site.workspace), "serve", "--port", str(port),
         "--no-workers"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    site.url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(site.url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
        if server.poll() is not None:
            break
    server.kill()
    raise RuntimeError(f"gateway serve did not come up: {server.communicate()[1].decode()[-2000:]}")
