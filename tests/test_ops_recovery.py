"""Recovering from a partner outage with the CLI, against a real agency over TLS: dead
packages requeued as the same package, breakers shown and reset, why packages wait."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.clock import isotime
from gateway.delivery import breaker
from gateway.delivery.dispatch import Dispatcher
from gateway.onboarding import registry
from gateway.placement import recall
from tests.partners import PARTNER, Clock, agency_workspace, place_many, rows

LIMITS = "max_attempts = 1\nrate_per_second = 1000\ntimeout = 2"


async def gateway(ws: Path, *args: str, status: int = 0) -> tuple[str, str]:
    """Run the real `gateway` command in a process of its own; its stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == status, (args, out.decode(), err.decode())
    return out.decode(), err.decode()


def real_now(clock: Clock) -> None:
    clock.now = datetime.now(UTC)


async def test_dead_packages_go_back_as_the_same_package_and_are_delivered_once(tmp_path: Path) -> None:
    clock = Clock()
    real_now(clock)
    async with agency_workspace(tmp_path, limits=LIMITS, clock=clock) as (gw, agency, _):
        ws = Path(gw.settings.base_dir)
        agency.default = "500"
        ids = await place_many(gw, 3)
        bodies = "SELECT package_id AS id, sealed FROM package_bodies"
        before = {r["id"]: r["sealed"] for r in await rows(gw, bodies)}
        await Dispatcher(gw).run_once()
        assert {r["state"] for r in await rows(gw, "SELECT state FROM packages")} == {"dead"}

        out, _ = await gateway(ws, "deliveries", "--state", "dead", "--json")
        assert {r["why"].split(":")[0] for r in json.loads(out)} == {"dead"}
        out, err = await gateway(ws, "deliveries", "requeue", ids[0], "--reason", "outage over INC-4711")
        assert out.strip() == f"{ids[0]} queued" and "requeued 1, refused 0" in err
        out, _ = await gateway(ws, "deliveries", "requeue", "--partner", PARTNER, "--all-dead", "--json")
        assert sorted(json.loads(out)["requeued"]) == sorted(ids[1:])

        agency.default = "ok"
        real_now(clock)
        await Dispatcher(gw).run_once()
        after = await rows(gw, "SELECT id, state, attempts, retry_base FROM packages")
        assert {r["id"]: r["sealed"] for r in await rows(gw, bodies)} == before, "not the same sealed bytes"
        assert {(r["state"], r["attempts"], r["retry_base"]) for r in after} == {("delivered", 2, 1)}
        assert dict(agency.effects) == dict.fromkeys(ids, 1)
        assert dict(agency.requests) == dict.fromkeys(ids, 2), "resent under the same Idempotency-Key"
        numbers = await rows(gw, "SELECT number, outcome FROM attempts WHERE package_id = ?", (ids[0],))
        assert sorted((r["number"], r["outcome"]) for r in numbers) == [(1, "dead"), (2, "delivered")]
        kinds = await rows(gw, "SELECT kind, leaf FROM audit_entries ORDER BY idx")
        assert [k["kind"] for k in kinds].count("disclosure") == 3, "a redelivery is not a disclosure"
        redeliveries = [json.loads(k["leaf"]) for k in kinds if k["kind"] == "redelivery"]
        assert sorted(r["package_id"] for r in redeliveries) == sorted(ids)
        assert redeliveries[0]["reason"] == "outage over INC-4711"
        assert redeliveries[0]["case"].startswith("case_")
        await gateway(ws, "audit", "verify")


async def test_requeue_is_refused_for_suspended_partners_expired_packages_recalled_cases(
    tmp_path: Path,
) -> None:
    clock = Clock()
    real_now(clock)
    async with agency_workspace(tmp_path, limits=LIMITS, clock=clock) as (gw, agency, _):
        ws = Path(gw.settings.base_dir)
        agency.default = "500"
        expired, recalled, other = await place_many(gw, 3)
        await Dispatcher(gw).run_once()
        async with gw.db.transaction() as tx:
            await tx.execute(
                "UPDATE packages SET expires_at = ? WHERE id = ?",
                (isotime(datetime.now(UTC) - timedelta(minutes=1)), expired),
            )
        _, err = await gateway(ws, "deliveries", "requeue", expired, "pkg_nope", status=1)
        assert f"refused {expired}: it expired at" in err and "place the case anew" in err
        assert "refused pkg_nope: no such package" in err

        await registry.set_status(gw, PARTNER, "suspended", reason="under review", actor="test")
        _, err = await gateway(ws, "deliveries", "requeue", other, status=1)
        assert f"partner '{PARTNER}' is suspended (under review); reinstate it first" in err
        out, _ = await gateway(ws, "deliveries", "--json")
        assert "refused" not in out

        await registry.set_status(gw, PARTNER, "active", reason="", actor="test")
        [case_id] = {r["case_id"] for r in await rows(gw, "SELECT case_id FROM packages")}
        await recall.recall(gw, case_id, PARTNER, "debt sold", actor="test")
        _, err = await gateway(ws, "deliveries", "requeue", recalled, status=1)
        assert f"case {case_id} was recalled from '{PARTNER}'" in err
        _, err = await gateway(ws, "deliveries", "requeue", "--partner", PARTNER, status=2)
        assert "--all-dead" in err
        states = {r["state"] for r in await rows(gw, "SELECT state FROM packages WHERE purpose != 'recall'")}
        assert states == {"dead"}
        assert not await rows(gw, "SELECT 1 FROM audit_entries WHERE kind = 'redelivery'")


async def test_breaker_show_reset_and_why_packages_wait(tmp_path: Path) -> None:
    clock = Clock()
    real_now(clock)
    async with agency_workspace(tmp_path, limits="rate_per_second = 1000", clock=clock) as (gw, agency, _):
        ws = Path(gw.settings.base_dir)
        agency.default = "500"
        await place_many(gw, 1)
        await Dispatcher(gw).run_once()  # one failure: retry_wait
        async with gw.db.transaction() as tx:  # the backoff's jitter may be near 0: make it an hour
            later = isotime(datetime.now(UTC) + timedelta(hours=1))
            await tx.execute("UPDATE packages SET next_attempt_at = ?", (later,))
        out, _ = await gateway(ws, "deliveries", "--json")
        [row] = json.loads(out)
        assert row["why"].startswith(f"retrying at {row['next_attempt_at']} after: PartnerUnavailable")

        async with gw.db.transaction() as tx:
            policy = breaker.BreakerPolicy(min_attempts=1, failure_rate=0.5, cooldown_seconds=600)
            earlier = isotime(datetime.now(UTC) - timedelta(seconds=1))
            failed = breaker.Result("failure", None, earlier)
            await breaker.record(tx, PARTNER, [failed], datetime.now(UTC), policy)
        out, _ = await gateway(ws, "breaker", "show", PARTNER, "--json")
        [shown] = json.loads(out)
        assert shown["breaker"] == "open" and shown["open_until"] and shown["failures"] >= 1
        out, _ = await gateway(ws, "deliveries", "--json")
        assert json.loads(out)[0]["why"].startswith("circuit breaker open until ")

        out, _ = await gateway(ws, "breaker", "reset", PARTNER)
        assert out.strip() == f"breaker of {PARTNER} closed (was open)"
        out, _ = await gateway(ws, "breaker", "show")
        assert f"{PARTNER}  active          closed" in out
        [entry] = await rows(gw, "SELECT leaf FROM audit_entries WHERE kind = 'breaker_reset'")
        assert json.loads(entry["leaf"])["previous"] == "open"
        await gateway(ws, "breaker", "reset", "nobody", status=1)


async def test_messages_held_by_the_rule_pack_say_which_rule_and_until_when(tmp_path: Path) -> None:
    from aiohttp import web

    from gateway.cli.placement import read_case
    from gateway.delivery.control import deliveries
    from gateway.placement import service as placement
    from tests.partners import CASE
    from tests.test_presend_rules import messaging

    clock = Clock()
    clock.advance(11 * 3600 + 59 * 60)  # 21:59 in Shanghai
    async with messaging(tmp_path, clock) as (gw, partners):
        partners.sms_script = [web.Response(status=429, headers={"Retry-After": "1860"})]
        sms = await placement.place(gw, read_case(CASE), "notify-sms", "reminder", actor="t")
        await Dispatcher(gw).run_once()
        clock.advance(1861)  # the retry falls at 22:30, outside the contact hours
        await Dispatcher(gw).run_once()
        [row] = [r for r in await deliveries(gw, "notify-sms", None, 10) if r["id"] == sms.package_id]
        assert row["why"].startswith("held by the rule pack until 20")
        assert "(Asia/Shanghai): cn.hours" in row["why"] and " 08:00 " in row["why"]

        clock.advance(3600)  # 23:31: a new reminder is queued for the window's opening
        later = await placement.place(gw, read_case(CASE), "notify-mail", "reminder", actor="t")
        [row] = await deliveries(gw, "notify-mail", None, 10)
        assert row["id"] == later.package_id
        assert row["why"].startswith("waiting until ")
        assert "08:00 (Asia/Shanghai) debtor's local time" in row["why"]
