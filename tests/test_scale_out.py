"""Two gateway processes on one database drain one outbox; one of them is killed.

Run against whichever backend the suite runs on (``make test`` runs both): on
PostgreSQL the claims are ``FOR UPDATE SKIP LOCKED``, on SQLite one writer at a time.
Every package must end delivered, the partner must apply each exactly once (it
deduplicates by ``Idempotency-Key``, as the contract asks), the killed process's leases
must be taken over by the survivor, and the audit log must verify afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from gateway.cli.placement import read_case
from gateway.core import Gateway
from gateway.delivery import outbox
from gateway.onboarding import registry
from gateway.placement import service as placement
from tests.partners import CASE, PARTNER, agency_workspace, rows
from tests.test_ops_metrics import parse, value
from tests.test_serve import free_port

PACKAGES = 10_000
LIMITS = "concurrency = 16\nrate_per_second = 100000\ntimeout = 5"


async def place(gw: Gateway, count: int) -> list[str]:
    """Real placements (policy, minimization, sealing, outbox row and audit entry)."""
    case = read_case(CASE)
    return [
        (await placement.place(gw, case, PARTNER, "collection", actor="test")).package_id
        for _ in range(count)
    ]


async def gateway_process(ws: Path, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "GATEWAY_DISPATCH__LEASE_SECONDS": "3"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(every)


async def delivered_by(port: int) -> float:
    """The deliveries a `gateway dispatch --metrics-port PORT` process has stored, from
    its /metrics (0 until it serves them)."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            text = await resp.text()
    except aiohttp.ClientError:
        return 0
    return value(parse(text), "gateway_deliveries_total", partner=PARTNER, outcome="delivered")


async def test_two_gateways_drain_10k_packages_while_one_is_killed(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits=LIMITS) as (gw, agency, _):
        agency.decrypt = False  # 10k decryptions would measure jwcrypto, not the gateway
        ids = await place(gw, PACKAGES)
        ws = Path(gw.settings.base_dir)
        port = free_port()
        first = await gateway_process(ws, "dispatch", "--quiet", "--metrics-port", str(port))
        second = await gateway_process(ws, "dispatch", "--quiet")

        owners: set[str] = set()

        async def both_at_work(n: int) -> bool:
            # Each holds leases at some point before the kill, and the one to be killed
            # has stored deliveries of its own (on a loaded machine one may start late,
            # or get its share of the partner's slots late: it must have worked, not
            # just be running), while the drain is under way.
            held = await rows(gw, "SELECT DISTINCT lease_owner FROM packages WHERE state = 'sending'")
            owners.update(r["lease_owner"] for r in held)
            return len(owners) >= 2 and len(agency.effects) >= n and await delivered_by(port) > 0

        await wait_for(lambda: both_at_work(PACKAGES // 5), timeout=120)
        first.kill()  # SIGKILL: no clean-up of its leases
        await first.wait()
        assert first.stderr is not None
        killed_log = (await first.stderr.read()).decode(errors="replace")  # for a failure's message
        at_kill = len(agency.effects)
        assert at_kill < PACKAGES, "the kill must land mid-drain"

        async def all_delivered() -> bool:
            return (await outbox.counts(gw)).get("delivered") == PACKAGES

        await wait_for(all_delivered, timeout=240, every=0.5)
        second.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 0, err.decode()

        assert set(agency.effects) == set(ids)
        assert set(agency.effects.values()) == {1}, "a package was acted on twice"
        # Both processes worked: the survivor delivered only part of the outbox itself.
        by_survivor = int(out.decode().split("delivered=")[1].split()[0])
        assert 0 < by_survivor < PACKAGES, (
            f"the killed one recorded no delivery; its log ends:\n{killed_log[-2000:]}"
        )
        # What the killed process held under lease was abandoned and taken over; only
        # those packages can have reached the partner twice, and its dedupe absorbed it.
        [abandoned] = await rows(gw, "SELECT COUNT(*) AS n FROM attempts WHERE outcome = 'abandoned'")
        resent = sum(1 for n in agency.requests.values() if n > 1)
        assert resent <= abandoned["n"]
        [log] = await rows(
            gw,
            "SELECT COUNT(*) AS n, SUM(CASE WHEN kind = 'disclosure' THEN 1 ELSE 0 END) AS disclosures"
            " FROM audit_entries",
        )
        assert log["disclosures"] == PACKAGES

    verify = await gateway_process(ws, "audit", "verify")
    out, err = await verify.communicate()
    assert verify.returncode == 0, (out + err).decode()
    assert f"OK: {log['n']} entries" in out.decode()
    print(
        f"partner saw {at_kill} before the kill; survivor delivered {by_survivor}; "
        f"{abandoned['n']} leases abandoned, {resent} packages sent twice"
    )


async def test_concurrent_placements_keep_one_audit_sequence(tmp_path: Path) -> None:
    """Placements in parallel transactions (PostgreSQL's pool; SQLite takes turns) append
    to one Merkle log: one index each, no gaps, and the log verifies."""
    async with agency_workspace(tmp_path, limits=LIMITS) as (gw, _, _):
        case = read_case(CASE)
        # Forty different cases: placements of one case would take turns on its assignment row.
        cases = [case.model_copy(update={"case_id": f"{case.case_id}-{n}"}) for n in range(40)]
        placed = await asyncio.gather(
            *(placement.place(gw, c, PARTNER, "collection", actor="test") for c in cases)
        )
        entries = await rows(gw, "SELECT idx, leaf FROM audit_entries ORDER BY idx")
        ws = Path(gw.settings.base_dir)
    assert [e["idx"] for e in entries] == list(range(len(entries)))
    disclosed = {json.loads(e["leaf"]).get("package_id") for e in entries}
    assert {p.package_id for p in placed} <= disclosed
    verify = await gateway_process(ws, "audit", "verify")
    out, err = await verify.communicate()
    assert verify.returncode == 0 and f"OK: {len(entries)} entries" in out.decode(), (out + err).decode()


async def test_a_suspension_by_another_instance_waits_for_a_placement_in_progress(tmp_path: Path) -> None:
    """A placement reads the partner row shared and holds it to its commit: a suspension
    from another instance waits for it instead of slipping in between the status check
    and the queued package (PostgreSQL: FOR SHARE against FOR UPDATE; SQLite: writers
    take turns)."""
    async with agency_workspace(tmp_path, limits=LIMITS) as (gw, _, _):
        other = await Gateway.open(gw.settings)
        read, release = asyncio.Event(), asyncio.Event()

        async def placing() -> str:
            async with gw.db.transaction() as tx:
                record = await registry.fetch(tx, PARTNER, share=True)  # as `placement.place`
                read.set()
                await release.wait()
                return record.status

        placement_task = asyncio.create_task(placing())
        try:
            await read.wait()
            suspension = asyncio.create_task(
                registry.set_status(other, PARTNER, "suspended", reason="test", actor="test")
            )
            await asyncio.sleep(0.5)
            waited = not suspension.done()
            release.set()
            assert await placement_task == "active"
            assert (await suspension).status == "suspended"
            assert waited, "the suspension did not wait for the placement"
        finally:
            release.set()  # a failure above must not leave the transaction open
            await asyncio.gather(placement_task, return_exceptions=True)
            await other.close()
