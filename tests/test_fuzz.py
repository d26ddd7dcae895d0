"""The fuzz bench, short: a few thousand requests of bench/fuzz.py's generator against a
real `gateway serve` process (every route of its /openapi.json and of the dashboard,
refused and authenticated, plus malformed HTTP over raw sockets). No answer may be a
5xx, no refused input may leave a row, serve's memory stays bounded, its log holds no
error, and slow connections are cut (bench/fuzz.py runs the same at 100,000)."""

from __future__ import annotations

from pathlib import Path

from bench.fuzz import fuzz

REQUESTS = 3000


def test_thousands_of_hostile_requests_get_no_5xx_and_store_nothing_refused(tmp_path: Path) -> None:
    result = fuzz(tmp_path, REQUESTS, window=500, cases=4, seed=7)
    assert result.sent == REQUESTS
    assert result.classes["5xx"] == 0, result.server_errors
    assert not result.refused_rows, f"rows stored from refused input: {dict(result.refused_rows)}"
    assert result.leaked_reports == 0, "an authentic report that was refused was stored"
    assert result.classes["timeout"] == 0, "requests without an answer in 30 s"
    assert result.slow_not_cut == 0, "connections sending one byte were kept past the header timeout"
    assert result.log_problems == []
    start, peak, _ = result.rss_kb
    assert peak - start < 100 * 1024, f"serve's RSS grew from {start} kB to {peak} kB"
    # The run reached deep: signed reports taken in, refusals of every sort, raw HTTP.
    kinds = {kind for kind, _ in result.kinds}
    assert {"signed callback", "signed receipt", "forged callback", "unauthenticated", "garbage"} <= kinds
    assert sum(1 for kind in kinds if kind.startswith("raw: ")) >= 4
    assert result.kinds[("signed callback", "2xx")] > 0 and result.kinds[("authenticated read", "2xx")] > 0
    assert result.kinds[("unauthenticated", "2xx")] == 0 and result.kinds[("forged callback", "2xx")] == 0
