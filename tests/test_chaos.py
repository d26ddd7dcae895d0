"""The chaos bench, short: 200 packages through a partner that fails a quarter of the
requests (500, 429, hangs past the timeout, connections cut mid-answer, the last two
after applying the package), while the `gateway dispatch` process is SIGKILLed once and
started again. Nothing may be lost, nothing applied twice with another body, and the
audit log must verify (bench/chaos.py runs the same at 10,000 packages)."""

from __future__ import annotations

from pathlib import Path

from bench.chaos import scenario
from gateway.demo.partners import ThrowawayCA


async def test_a_flaky_partner_and_a_killed_dispatcher_lose_nothing(tmp_path: Path) -> None:
    ca = ThrowawayCA(tmp_path / "ca")
    result = await scenario("flaky", tmp_path, ca, 200, 0.25, [0.3], seed=11)
    tally = result.tally
    assert len(result.drained.kills) == 1 and result.drained.kills[0] < 200, "the kill must land mid-drain"
    assert tally.placed == 200 and tally.pending == 0
    assert tally.lost == 0, "packages neither applied by the partner, nor pending, nor dead"
    assert tally.different == 0, "a package applied twice with different bodies"
    assert tally.repeats > 0, "the faults that follow an applied package must have caused resends"
    assert tally.delivered + tally.dead == 200
    assert result.audit.startswith("OK: "), result.audit
