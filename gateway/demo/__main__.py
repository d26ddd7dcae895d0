"""``make demo``: a throwaway workspace, from onboarding to audit, on local partners.

It drives the real ``gateway`` command, printing each command as a newcomer would type
it: onboarding, placement (with what every partner receives next to the full case, so
the minimization is visible at a glance), delivery to local partner servers, signed
callbacks (one breaking the contact-hours rule), scorecards, and the audit log verified.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import unicodedata
import uuid
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from gateway.cli.common import flatten
from gateway.demo.partners import DemoPartners
from gateway.onboarding.jwk import generate_encryption_key

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
WORKSPACE = REPO / "demo-workspace"
#: Which sample case goes to which partner for which purpose.
PLACEMENTS = [
    ("case-1001.json", "acme-collect", "collection"),
    ("case-1001.json", "sz-arbitration", "arbitration"),
    ("case-1001.json", "notify-sms", "reminder"),
    ("case-1001.json", "notify-mail", "reminder"),
    ("case-1002.json", "acme-collect", "collection"),
    ("case-1002.json", "notify-sms", "reminder"),
]
#: Partner key types: one of each, so both sealing paths are shown.
PARTNER_CURVES = {"acme-collect": "P-256", "sz-arbitration": "X25519"}
SHANGHAI = ZoneInfo("Asia/Shanghai")


async def gateway(*args: str | Path) -> str:
    """Run one ``gateway`` command as a user would, without blocking the local partners."""
    shown = " ".join(str(a) for a in args)
    print(f"$ gateway {shown}", flush=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "-c",
        str(WORKSPACE),
        *map(str, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"demo failed at `gateway {shown}`:\n{err.decode()}")
    return out.decode()


def play_partners() -> dict[str, dict[str, Any]]:
    """What each partner does before onboarding: make a key pair, send the bank its JWKS.
    Returns the private halves, which stay on the partner's side."""
    private: dict[str, dict[str, Any]] = {}
    for partner, crv in PARTNER_CURVES.items():
        key = generate_encryption_key(crv)
        jwks = WORKSPACE / "keys" / "partners" / f"{partner}.jwks.json"
        jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}, indent=2))
        print(f"  partner {partner} published a {crv} key: {jwks.relative_to(REPO)}")
        private[partner] = key.as_dict(private=True)
    return private


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def cell(value: Any, size: int) -> str:
    """``value`` fitted to ``size`` terminal columns (CJK counts double), one space kept."""
    text = "·" if value is None else str(value)
    while width(text) > size - 1:
        text = text[:-2] + "…"
    return text + " " * (size - width(text))


def matrix(case_file: str, sent: dict[str, dict[str, Any]]) -> str:
    full = json.loads((EXAMPLES / "cases" / case_file).read_text())
    partners = list(sent)
    flat = {p: dict(flatten(data)) for p, data in sent.items()}
    cols = [22] + [18] * len(partners)
    lines = [
        cell("field", 32)
        + cell(f"full case {full['case_id']}", cols[0])
        + "".join(cell(p, 18) for p in partners)
    ]
    for path, value in flatten(full):
        lines.append(
            cell(path, 32) + cell(value, cols[0]) + "".join(cell(flat[p].get(path), 18) for p in partners)
        )
    return "\n".join(line.rstrip() for line in lines)


def sign_callback(secret: str, body: str) -> dict[str, str]:
    """What a partner's Standard Webhooks library does (scheme v1)."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def report_back(port: int, partners: DemoPartners) -> None:
    """The agency and the arbitration body report on the cases they received."""
    yesterday = (datetime.now(SHANGHAI) - timedelta(days=1)).date()

    def at(hour: int, minute: int) -> str:
        return datetime.combine(yesterday, dtime(hour, minute), SHANGHAI).isoformat()

    agency_refs = [r["claims"]["case_ref"] for r in partners.received["agency"]]
    if not agency_refs or not partners.received["arbitration"]:
        sys.exit("demo failed: the agency and the arbitration body received no package")
    arbitration_ref = partners.received["arbitration"][0]["claims"]["case_ref"]
    reports = [
        ("acme-collect", {"type": "accepted", "case_ref": ref, "occurred_at": at(9, 0)})
        for ref in agency_refs
    ]
    # The agency dials the mobile number it received in clear and reports the token beside it.
    mobile = partners.received["agency"][0]["claims"]["data"]["debtor"]["phones"][0]["number_token"]
    call = {"type": "contact_attempt", "channel": "voice", "target": "debtor", "number_token": mobile}
    reports += [
        (
            "acme-collect",
            {**call, "case_ref": agency_refs[0], "occurred_at": at(10, 5), "outcome": "connected"},
        ),
        (
            "acme-collect",
            {
                "type": "promise_to_pay",
                "case_ref": agency_refs[0],
                "occurred_at": at(10, 9),
                "amount": "5000.00",
                "due": str(yesterday + timedelta(days=7)),
            },
        ),
        # Breaks the contact-hours rule (08:00-22:00 in the debtor's time zone).
        (
            "acme-collect",
            {**call, "case_ref": agency_refs[0], "occurred_at": at(23, 10), "outcome": "no_answer"},
        ),
        ("sz-arbitration", {"type": "accepted", "case_ref": arbitration_ref, "occurred_at": at(11, 0)}),
        (
            "sz-arbitration",
            {
                "type": "arbitration_filed",
                "case_ref": arbitration_ref,
                "occurred_at": at(15, 0),
                "filing_number": "ARB-2026-1187",
            },
        ),
    ]
    await post_reports(port, reports)

async def post_reports(port: int, reports: list[tuple[str, dict[str, Any]]]) -> None:
    """Sign each report with its partner's webhook secret, post it, and print the answer."""
    async with aiohttp.ClientSession() as session:
        for partner, event in reports:
            body = json.dumps(event)
            secret = (WORKSPACE / "keys" / "partners" / f"{partner}.whsec").read_text().split()[-1]
            url = f"http://127.0.0.1:{port}/v1/partners/{partner}/callbacks"
            async with session.post(url, data=body, headers=sign_callback(secret, body)) as resp:
                answer = await resp.json()
            flagged = f"  VIOLATION {', '.join(answer['violations'])}" if answer.get("violations") else ""
            print(
                f"  {partner} -> {event['type']:<18} {event['occurred_at'][11:16]} local: {resp.status} "
                f"{answer.get('state', answer.get('detail'))}{flagged}"
            )


async def serve_and_report(partners: DemoPartners) -> None:
    port = free_port()
    print(f"$ gateway serve --port {port} --no-workers &")
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "-c", str(WORKSPACE), "serve", "--port", str(port), "--no-workers"],
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                sys.exit("demo failed: gateway serve did not come up")
        await report_back(port, partners)
    finally:
        server.terminate()
        server.wait(10)


async def amain() -> None:
    shutil.rmtree(WORKSPACE, ignore_errors=True)
    print("== 1. A fresh workspace: config, the bank's keys, the database")
    await gateway("init", WORKSPACE, "--bank-id", "example-bank", "--bank-name", "Example Bank")
    print("== 2. Partners send their public keys; the integration team onboards their profiles")
    private = play_partners()
    partners = DemoPartners(
        WORKSPACE / "partner-side",
        bank_jwks=WORKSPACE / "keys" / "bank" / "jwks.json",
        private_keys={"agency": private["acme-collect"], "arbitration": private["sz-arbitration"]},
    )
    async with partners:
        for example in sorted((EXAMPLES / "partners").glob("*.toml")):
            # The sample profile, aimed at the local stand-in and its throwaway CA.
            profile = partners.profile_for(example, WORKSPACE / "partners")
            print("  " + (await gateway("partners", "add", profile.relative_to(REPO))).strip())
        for partner in PARTNER_CURVES:
            print("  " + (await gateway("partners", "webhook-secret", partner)).strip())
        print(await gateway("partners", "list"))
        print("== 3. Bank systems place cases: policy check, minimize, seal, outbox")
        sent: dict[str, dict[str, dict[str, Any]]] = {}
        for case_file, partner, purpose in PLACEMENTS:
            package_id = (
                await gateway(
                    "place", Path("examples/cases") / case_file, "--partner", partner, "--purpose", purpose
                )
            ).strip()
            shown = json.loads(await gateway("package", "show", package_id, "--json"))
            sent.setdefault(case_file, {})[partner] = shown["claims"]["data"]
            print(f"  -> {package_id}")
        print("\n== 4. What each partner receives (· = never leaves the bank)")
        for case_file, by_partner in sent.items():
            print()
            print(matrix(case_file, by_partner))
        print("\n== 5. Delivery to the local partners (TLS; agency and arbitration decrypt with JOSE)")
        print("  " + (await gateway("dispatch", "--once", "--quiet")).strip())
        print(await gateway("deliveries"))
        print("  what the partners acted on:")
        for kind, records in partners.received.items():
            print(f"    {kind:<12} {len(records)} package(s)")
        print("\n== 6. Partners report back with signed callbacks; the gateway checks the rules")
        await serve_and_report(partners)
    print("\n== 7. Supervision")
    print(await gateway("scorecard"))
    print(await gateway("violations"))
    print("== 8. The audit log: sign a checkpoint, verify everything from scratch")
    print((await gateway("audit", "checkpoint")).strip())
    print((await gateway("audit", "verify")).strip())
    print(f"\nworkspace kept in {WORKSPACE.relative_to(REPO)}/ ; try: gateway -c {WORKSPACE.name} audit log")


async def dashboard(port: int, keep_serving: bool) -> None:
    """A token for the dashboard, its URL, and (``keep_serving``) the server, until Ctrl-C."""
    print("\n== 9. The supervisor dashboard")
    token = (await gateway("tokens", "create", "--role", "operator", "--label", "demo dashboard",
                           "--expires", "1d")).strip()  # fmt: skip
    url = f"http://127.0.0.1:{port}/ui/"
    if not keep_serving:
        print(f"  start it:  gateway -c {WORKSPACE.name} serve --port {port} --no-workers")
        print(f"  open {url} and sign in with this operator token (valid one day):\n  {token}")
        return
    print(f"$ gateway serve --port {port} --no-workers")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(WORKSPACE), "serve", "--port", str(port), "--no-workers",
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    print(f"\ndashboard: {url}\ntoken:     {token}\n(serving until Ctrl-C)", flush=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.terminate)
    try:
        await server.wait()
    finally:
        if server.returncode is None:
            server.terminate()
            await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep-serving", action="store_true",
                        help="leave gateway serve running for the dashboard (Ctrl-C stops it)")
    parser.add_argument("--port", type=int, default=8080, help="the dashboard's port (default 8080)")
    args = parser.parse_args()
    try:
        asyncio.run(amain())
        asyncio.run(dashboard(args.port, args.keep_serving))
    except KeyboardInterrupt:
        print("\nstopped")


if __name__ == "__main__":
    main()
