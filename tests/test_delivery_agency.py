"""Delivery to an agency over real TLS: success, faults, retries, the breaker, mTLS."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from aiohttp import web

from gateway.core import Gateway
from gateway.delivery import outbox
from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.dispatch import Dispatcher, Options
from gateway.errors import PartnerTimeout
from gateway.onboarding import registry
from tests.partners import CASE, PARTNER, Clock, agency_workspace, place_many, rows

FAST = "timeout = 0.5\nbackoff_base = 1.0\nbackoff_cap = 8.0\nmax_attempts = 6"


def seconds(later: str, earlier: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(later) - parse(earlier)).total_seconds()


async def drain(gw: Gateway, clock: Clock, options: Options | None = None, rounds: int = 20) -> None:
    """Run ``dispatch --once`` rounds, moving the clock to when all of them are due."""
    for _ in range(rounds):
        await Dispatcher(gw, options).run_once()
        pending = await rows(
            gw, "SELECT MAX(next_attempt_at) AS t FROM packages WHERE state IN ('queued', 'retry_wait')"
        )
        if pending[0]["t"] is None:
            return
        clock.to(pending[0]["t"])
    raise AssertionError("packages still pending after all rounds")


async def test_packages_reach_the_agency_once_each_with_its_reference(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path) as (gw, agency, _):
        ids = await place_many(gw, 12)
        stats = await Dispatcher(gw).run_once()
        assert stats.delivered == 12
        assert set(agency.effects) == set(ids) and set(agency.effects.values()) == {1}
        # The agency opened each package with jwcrypto and found the minimized data only.
        assert set(agency.claims[ids[0]]["data"]) == {"debtor", "loan"}
        assert agency.claims[ids[0]]["aud"] == PARTNER
        packages = await rows(gw, "SELECT id, state, partner_ref, attempts FROM packages")
        assert all(p["state"] == "delivered" and p["attempts"] == 1 for p in packages)
        assert {p["partner_ref"] for p in packages} == {f"REF-{i[-8:]}" for i in ids}
        attempts = await rows(gw, "SELECT outcome, status, latency_ms FROM attempts")
        assert len(attempts) == 12
        assert all(a["outcome"] == "delivered" and a["status"] == "201" for a in attempts)


async def test_a_partners_https_connections_are_kept_and_reused(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits="concurrency = 2") as (gw, agency, _):
        await place_many(gw, 30)
        stats = await Dispatcher(gw).run_once()
        assert stats.delivered == 30
        # 30 requests over at most `concurrency` TLS connections, not one each (every
        # request's client address was recorded).
        assert None not in agency.peers and len(agency.peers) <= 2


async def test_faults_are_retried_until_delivered(tmp_path: Path) -> None:
    clock = Clock()
    async with agency_workspace(tmp_path, limits=FAST, clock=clock) as (gw, agency, _):
        [pid] = await place_many(gw, 1)
        agency.script.extend(["500", "reset", "timeout", "ok"])
        await drain(gw, clock)
        history = await rows(gw, "SELECT * FROM attempts WHERE package_id = ? ORDER BY number", (pid,))
        assert [(a["outcome"], a["error_class"]) for a in history] == [
            ("retry", "PartnerUnavailable"),
            ("retry", "PartnerUnavailable"),
            ("retry", "PartnerTimeout"),
            ("delivered", None),
        ]
        assert history[0]["status"] == "500"
        assert agency.effects[pid] == 1 and agency.requests[pid] == 4
        for number, attempt in enumerate(history[:3], start=1):
            gap = seconds(attempt["retry_at"], attempt["started_at"])
            assert 0 <= gap <= min(8.0, 2 ** (number - 1)) + 1  # full jitter, plus the attempt


async def test_retry_after_holds_the_package_past_the_backoff_cap(tmp_path: Path) -> None:
    clock = Clock()
    async with agency_workspace(tmp_path, limits=FAST, clock=clock) as (gw, agency, _):
        [pid] = await place_many(gw, 1)
        agency.script.extend(["429:120"])
        await Dispatcher(gw).run_once()
        [attempt] = await rows(gw, "SELECT * FROM attempts WHERE package_id = ?", (pid,))
        assert attempt["status"] == "429"
        assert seconds(attempt["retry_at"], attempt["started_at"]) >= 120  # above backoff_cap
        clock.advance(60)  # the package still waits; one 429 does not pause the partner
        [other] = await place_many(gw, 1)
        await Dispatcher(gw).run_once()
        assert agency.requests[pid] == 1 and agency.effects[other] == 1
        clock.to(attempt["retry_at"])
        clock.advance(1)
        await Dispatcher(gw).run_once()
        assert agency.effects[pid] == 1


async def test_rejection_is_dead_at_once_with_the_partners_answer(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits=FAST) as (gw, agency, _):
        [pid] = await place_many(gw, 1)
        agency.script.append("reject")
        stats = await Dispatcher(gw).run_once()
        assert (stats.dead, stats.retry_wait) == (1, 0)
        [pkg] = await rows(gw, "SELECT state, attempts, last_error FROM packages")
        assert pkg["state"] == "dead" and pkg["attempts"] == 1
        assert "422" in pkg["last_error"] and "already assigned elsewhere" in pkg["last_error"]


async def test_a_redirect_is_not_followed_and_the_package_waits_for_a_fixed_endpoint(
    tmp_path: Path,
) -> None:
    """A 307 to plain http would send the package anywhere, in clear: never followed."""
    elsewhere: list[str] = []

    async def plain(request: web.Request) -> web.Response:
        elsewhere.append(await request.text())
        return web.json_response({"reference": "PLAIN"}, status=201)

    app = web.Application()
    app.router.add_post("/packages", plain)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        clock = Clock()
        async with agency_workspace(tmp_path, limits=FAST, clock=clock) as (gw, agency, _):
            [pid] = await place_many(gw, 1)
            agency.script.append(f"redirect:http://127.0.0.1:{port}/packages")
            stats = await Dispatcher(gw).run_once()
            assert (stats.delivered, stats.retry_wait) == (0, 1)
            assert elsewhere == []
            [attempt] = await rows(gw, "SELECT status, detail FROM attempts WHERE package_id = ?", (pid,))
            assert attempt["status"] == "307" and "a redirect, not followed" in attempt["detail"]
            await drain(gw, clock)
            assert agency.effects[pid] == 1 and elsewhere == []
    finally:
        await runner.cleanup()


async def test_what_a_partner_says_is_kept_without_the_debtors_data(tmp_path: Path) -> None:
    """Partners echo requests in their errors; the operators get the reason, not the person."""
    clock = Clock()
    async with agency_workspace(tmp_path, limits=FAST, clock=clock) as (gw, agency, _):
        [retried, rejected] = await place_many(gw, 2)
        agency.script.extend(["echo500", "echo422"])
        await Dispatcher(gw).run_once()
        case = json.loads(CASE.read_text())
        personal = [case["debtor"]["name"], case["loan"]["outstanding"], "1234", "ops@agency"]
        kept = await rows(gw, "SELECT package_id, detail FROM attempts ORDER BY package_id")
        kept += await rows(gw, "SELECT id AS package_id, last_error AS detail FROM packages")
        assert len(kept) == 4
        for row in kept:
            assert not any(value in row["detail"] for value in personal), row
            said = "cannot process <redacted> (<redacted> due); call <number> or write to <email>"
            assert said in row["detail"], row
        states = {r["id"]: r["state"] for r in await rows(gw, "SELECT id, state FROM packages")}
        assert {states[retried], states[rejected]} == {"retry_wait", "dead"}

        # A name just where an excerpt of the answer is cut: not one character of it kept.
        [late] = await place_many(gw, 1)
        agency.script.append("late500")
        await Dispatcher(gw).run_once()
        [row] = await rows(gw, "SELECT detail FROM attempts WHERE package_id = ?", (late,))
        assert "a" * 297 + "<redacted>" in row["detail"] and case["debtor"]["name"][0] not in row["detail"]


async def test_after_max_attempts_the_package_is_dead_with_the_last_reason(tmp_path: Path) -> None:
    clock = Clock()
    limits = "timeout = 0.5\nbackoff_base = 2.0\nbackoff_cap = 16.0\nmax_attempts = 5"
    async with agency_workspace(tmp_path, limits=limits, clock=clock) as (gw, agency, _):
        ids = await place_many(gw, 12)
        agency.default = "500"
        # A breaker that never opens here, to look at backoff alone.
        await drain(gw, clock, Options(breaker=BreakerPolicy(min_attempts=1000)))
        packages = await rows(gw, "SELECT state, attempts, last_error FROM packages")
        assert all(p["state"] == "dead" and p["attempts"] == 5 for p in packages)
        assert all("gave up after 5 attempts" in p["last_error"] for p in packages)
        assert all("HTTP 500" in p["last_error"] for p in packages)
        gaps: dict[int, list[float]] = {}
        for a in await rows(gw, "SELECT * FROM attempts WHERE outcome = 'retry'"):
            gaps.setdefault(a["number"], []).append(seconds(a["retry_at"], a["started_at"]))
        for number, found in gaps.items():
            assert max(found) <= min(16.0, 2.0 * 2 ** (number - 1)) + 1
        # Full jitter spreads retries; their mean grows with the attempt number.
        mean = {n: sum(g) / len(g) for n, g in gaps.items()}
        assert mean[4] > mean[1]
        assert all(agency.requests[i] == 5 for i in ids)


async def test_malformed_acknowledgements_are_recorded_not_fatal(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path) as (gw, agency, _):
        ids = await place_many(gw, 4)
        agency.script.extend(["notjson", "badschema", "huge", "gzipbomb"])
        stats = await Dispatcher(gw, Options()).run_once()
        assert stats.delivered == 4
        packages = await rows(gw, "SELECT partner_ref FROM packages")
        assert all(p["partner_ref"] is None for p in packages)
        details = sorted(a["detail"] for a in await rows(gw, "SELECT detail FROM attempts"))
        assert any("not JSON" in d for d in details)
        assert any("no 'reference'" in d for d in details)
        # A compressed answer is read no further than 1 MiB once inflated, whatever its
        # Content-Length says.
        assert sum("over 1 MiB" in d for d in details) == 2
        assert set(agency.effects) == set(ids)


async def test_suspended_partner_keeps_its_packages_queued(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path) as (gw, agency, _):
        await place_many(gw, 3)
        await registry.set_status(gw, PARTNER, "suspended", reason="audit", actor="test")
        stats = await Dispatcher(gw).run_once()
        assert stats.delivered == 0 and not agency.requests
        assert (await outbox.counts(gw))["queued"] == 3


async def test_breaker_opens_then_one_probe_closes_it(tmp_path: Path) -> None:
    clock = Clock()
    limits = "timeout = 0.5\nconcurrency = 1\nbackoff_base = 1.0\nbackoff_cap = 1.0"
    options = Options(breaker=BreakerPolicy(min_attempts=3, cooldown_seconds=60))
    async with agency_workspace(tmp_path, limits=limits, clock=clock) as (gw, agency, _):
        await place_many(gw, 10)
        agency.default = "500"
        await Dispatcher(gw, options).run_once()
        assert sum(agency.requests.values()) == 3  # then the circuit opened
        [state] = await rows(gw, "SELECT breaker, failures FROM partner_state")
        assert (state["breaker"], state["failures"]) == ("open", 3)
        clock.advance(30)  # retries are due, but the cool-down is not over
        await Dispatcher(gw, options).run_once()
        assert sum(agency.requests.values()) == 3
        clock.advance(31)
        agency.default = "ok"
        await Dispatcher(gw, options).run_once()
        [state] = await rows(gw, "SELECT breaker, failures FROM partner_state")
        assert state["breaker"] == "closed"
        assert (await outbox.counts(gw)).get("delivered") == 10
        assert set(agency.effects.values()) == {1}


async def test_failed_probe_opens_the_breaker_again(tmp_path: Path) -> None:
    clock = Clock()
    options = Options(breaker=BreakerPolicy(min_attempts=2, cooldown_seconds=60))
    async with agency_workspace(tmp_path, limits="concurrency = 1", clock=clock) as (gw, agency, _):
        await place_many(gw, 5)
        agency.default = "500"
        await Dispatcher(gw, options).run_once()
        clock.advance(61)
        await Dispatcher(gw, options).run_once()
        assert sum(agency.requests.values()) == 3  # two failures, then one probe
        [state] = await rows(gw, "SELECT breaker FROM partner_state")
        assert state["breaker"] == "open"


async def test_a_dead_workers_lease_expires_and_the_package_is_sent(tmp_path: Path) -> None:
    clock = Clock()
    async with agency_workspace(tmp_path, clock=clock) as (gw, agency, _):
        [pid] = await place_many(gw, 1)
        claim = await outbox.claim(gw, PARTNER, "crashed-worker", 10, lease=30)
        assert [c.package.package_id for c in claim.packages] == [pid]
        await Dispatcher(gw).run_once()
        assert not agency.requests  # the lease still holds
        clock.advance(31)
        await Dispatcher(gw).run_once()
        assert agency.effects[pid] == 1
        history = await rows(gw, "SELECT number, outcome, error_class FROM attempts ORDER BY number")
        assert [(h["outcome"], h["error_class"]) for h in history] == [
            ("abandoned", "LeaseExpired"), ("delivered", None)
        ]


async def test_a_stale_claim_neither_gives_back_nor_finishes_its_replacement(tmp_path: Path) -> None:
    """A worker that held a package past its lease must not undo the same process's new
    claim of it: claims are told apart by their attempt number, not only their owner."""
    clock = Clock()
    async with agency_workspace(tmp_path, clock=clock) as (gw, _, _):
        [pid] = await place_many(gw, 1)
        [stale] = (await outbox.claim(gw, PARTNER, "worker-1", 10, lease=30)).packages
        clock.advance(31)
        [fresh] = (await outbox.claim(gw, PARTNER, "worker-1", 10, lease=30)).packages
        assert (stale.attempt, fresh.attempt) == (1, 2)
        await outbox.unclaim(gw, "worker-1", [stale])
        [pkg] = await rows(gw, "SELECT state, attempts, lease_owner FROM packages")
        assert (pkg["state"], pkg["attempts"], pkg["lease_owner"]) == ("sending", 2, "worker-1")
        limits = (await registry.get(gw, PARTNER)).profile.limits
        late = outbox.judge(stale, limits, gw.now(), 5.0, PartnerTimeout("late"), gw.now())
        await outbox.finish(gw, "worker-1", [late], BreakerPolicy())
        [pkg] = await rows(gw, "SELECT state, attempts FROM packages")
        assert (pkg["state"], pkg["attempts"]) == ("sending", 2)
        await outbox.unclaim(gw, "worker-1", [fresh])
        [pkg] = await rows(gw, "SELECT id, state, attempts FROM packages")
        assert (pkg["id"], pkg["state"], pkg["attempts"]) == (pid, "retry_wait", 1)


async def test_mutual_tls_client_certificate(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, client_auth=True, limits="max_attempts = 1") as (gw, agency, ca):
        await place_many(gw, 1)
        await Dispatcher(gw).run_once()
        [pkg] = await rows(gw, "SELECT state, last_error FROM packages")
        assert pkg["state"] == "dead" and "PartnerUnavailable" in pkg["last_error"]
        cert, key = ca.issue("bank-client", client=True)
        profile = Path(gw.settings.base_dir) / f"{PARTNER}.toml"
        mtls = f'[adapter_config]\nclient_cert = "{cert}"\nclient_key = "{key}"'
        profile.write_text(profile.read_text().replace("[adapter_config]", mtls))
        await registry.add(gw, profile, actor="test", update=True)
        [new] = await place_many(gw, 1)
        await Dispatcher(gw).run_once()
        assert agency.effects[new] == 1


async def test_untrusted_certificate_is_refused_with_a_hint(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits="max_attempts = 1") as (gw, agency, _):
        profile = Path(gw.settings.base_dir) / f"{PARTNER}.toml"
        kept = [line for line in profile.read_text().splitlines() if not line.startswith("ca_file")]
        profile.write_text("\n".join(kept))
        await registry.add(gw, profile, actor="test", update=True)
        await place_many(gw, 1)
        await Dispatcher(gw).run_once()
        [pkg] = await rows(gw, "SELECT state, last_error FROM packages")
        assert pkg["state"] == "dead" and "ca_file" in pkg["last_error"]
        assert not agency.requests
