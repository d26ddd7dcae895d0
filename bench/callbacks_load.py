"""The workload of the callback benches (`bench/inbound.py`, `bench/phases.py`,
`bench/forged.py`): a workspace with the agency onboarded, cases placed through the
real placement (two per debtor), earlier reports if asked, and signed report bodies."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from click.testing import CliRunner
from standardwebhooks.webhooks import Webhook

from gateway.cli.main import cli
from gateway.cli.placement import read_case
from gateway.clock import isotime
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.onboarding import registry
from gateway.onboarding.jwk import generate_encryption_key
from gateway.placement import service as placement

REPO = Path(__file__).resolve().parents[1]
PARTNER = "acme-collect"
WARMUP = 100
NOTES = [
    "客户表示本月底前会联系家人筹款，约定下周再次联系确认还款安排。",
    "Debtor asked for the account statement to be sent again; agreed to call back on Friday.",
    "您好，这里是Acme客服，关于您的信用卡账户，请方便时回电 400-000-0000，谢谢。",
    None,
    None,
]


# -- the workspace -------------------------------------------------------------------------


def build_workspace(root: Path) -> Path:
    ws = root / "ws"
    runner = CliRunner()
    result = runner.invoke(cli, ["init", str(ws)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    key = generate_encryption_key("P-256")
    (ws / "keys" / "partners").mkdir(parents=True, exist_ok=True)
    (ws / "keys" / "partners" / f"{PARTNER}.jwks.json").write_text(
        json.dumps({"keys": [key.as_dict(private=False)]})
    )
    return ws


async def place_cases(ws: Path, cases: int) -> tuple[list[str], str]:
    """Onboard the agency, place ``cases`` cases (two per debtor), issue a v1 secret."""
    base = read_case(REPO / "examples" / "cases" / "case-1001.json")
    async with await Gateway.open(load_settings(ws)) as gw:
        await registry.add(gw, REPO / "examples" / "partners" / f"{PARTNER}.toml", actor="bench")
        refs = []
        for i in range(cases):
            debtor = base.debtor.model_copy(
                update={"id_number": f"1101011990{i // 2:08d}", "name": f"债务人{i // 2}"}
            )
            case = base.model_copy(update={"case_id": f"C-BENCH-{i:06d}", "debtor": debtor})
            refs.append((await placement.place(gw, case, PARTNER, "collection", actor="bench")).case_ref)
        secret = gw.keys.add_webhook_secret(PARTNER).read_text().split()[-1]
    return refs, secret


async def add_history(ws: Path, per_debtor: int, seed: int) -> None:
    """Give each debtor ``per_debtor`` reports from before the timed window (older than
    the rules' 8 days, one every 12 hours back from there), as if the partner had been
    working the cases for months: contact attempts (1 in 100 to a third party),
    promises to pay and payments, stored as the pipeline stores them. Only the length
    of the history the rules read around each report changes, not what they find."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    async with await Gateway.open(load_settings(ws)) as gw, gw.db.transaction() as tx:
        cases = await tx.fetchall("SELECT case_ref, case_id, subject_token FROM assignments")
        debtors = {row["subject_token"]: row for row in cases}
        rows = []
        for subject, case in debtors.items():
            for i in range(per_debtor):
                at = now - timedelta(days=9, hours=12 * i)
                event = work_event(rng, case["case_ref"], at, ZoneInfo("Asia/Shanghai"))
                event["occurred_at"] = at.isoformat()
                if event["type"] == "contact_attempt" and rng.random() < 0.01:
                    event["target"] = "third_party"
                body = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
                rows.append((PARTNER, case["case_ref"], case["case_id"], subject, event["type"],
                             isotime(at), isotime(at), "callback", body))
        await tx.insert_many(
            "INSERT INTO events (partner_id, case_ref, case_id, subject_token, type, occurred_at,"
            " received_at, source, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


# -- the requests ----------------------------------------------------------------------------


def contact_time(rng: random.Random, now: datetime, zone: ZoneInfo) -> datetime:
    """A moment in the last 7 days, 09:00-20:59 on the debtor's wall clock."""
    local_now = now.astimezone(zone)
    while True:
        day = (local_now - timedelta(days=rng.randint(0, 6))).date()
        at = datetime(day.year, day.month, day.day, rng.randint(9, 20), rng.randint(0, 59),
                      rng.randint(0, 59), tzinfo=zone)
        if at < local_now:
            return at.astimezone(UTC)


def work_event(rng: random.Random, ref: str, now: datetime, zone: ZoneInfo) -> dict[str, Any]:
    at = contact_time(rng, now, zone)
    roll = rng.random()
    if roll < 0.75:
        channel = rng.choice(["voice", "voice", "ai_voice", "sms", "letter"])
        event: dict[str, Any] = {
            "type": "contact_attempt",
            "case_ref": ref,
            "occurred_at": at.isoformat(),
            "channel": channel,
            "target": "debtor",
            "outcome": rng.choice(["no_answer", "connected", "left_message", "no_answer"]),
            "number_token": "tok_" + uuid.UUID(int=rng.getrandbits(128)).hex,
        }
        if channel in ("sms", "voice") and (note := rng.choice(NOTES)):
            event["text"] = note
        return event
    if roll < 0.9:
        return {
            "type": "promise_to_pay",
            "case_ref": ref,
            "occurred_at": at.isoformat(),
            "amount": f"{rng.randint(5, 200) * 100}.00",
            "due": (at + timedelta(days=rng.randint(3, 30))).date().isoformat(),
        }
    return {
        "type": "payment_reported",
        "case_ref": ref,
        "occurred_at": at.isoformat(),
        "amount": f"{rng.randint(5, 50) * 100}.00",
    }


def bodies(refs: list[str], requests: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """Warm-up bodies (accepted reports of the first cases) and the timed ones: every
    other case's acceptance first, then work reports spread over all cases. The queue is
    served in order and there are far more cases than requests in flight, so a case is
    always accepted before its first work report arrives."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    zone = ZoneInfo("Asia/Shanghai")
    accepted_at = (now - timedelta(days=8)).isoformat()

    def accepted(ref: str) -> bytes:
        event = {"type": "accepted", "case_ref": ref, "occurred_at": accepted_at,
                 "partner_reference": "ACME-" + ref[-10:]}
        return json.dumps(event, ensure_ascii=False).encode()

    warm = [accepted(ref) for ref in refs[:WARMUP]]
    timed = [accepted(ref) for ref in refs[WARMUP:]]
    while len(timed) < requests:
        ref = refs[rng.randrange(len(refs))]
        timed.append(json.dumps(work_event(rng, ref, now, zone), ensure_ascii=False).encode())
    return warm, timed[:requests]


def sign(secret: str, body: bytes) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }
