"""The retry arithmetic: full-jitter backoff within its caps, Retry-After, and the shared
limits' arithmetic (the GCRA send times, the fair split of concurrency slots)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from gateway.delivery.outbox import MAX_RETRY_AFTER, retry_delay
from gateway.delivery.ratelimit import batch_size, fair_shares, schedule
from gateway.plugin.http import parse_retry_after
from schemas.partner import Limits


def test_backoff_stays_under_the_exponential_envelope_and_the_cap() -> None:
    limits = Limits(backoff_base=0.5, backoff_cap=10.0)
    for attempt in range(1, 12):
        delays = [retry_delay(limits, attempt) for _ in range(200)]
        envelope = min(10.0, 0.5 * 2 ** (attempt - 1))
        assert all(0 <= d <= envelope for d in delays)
        assert max(delays) > envelope / 2  # full jitter uses the whole range


def test_retry_after_is_a_floor_but_absurd_values_are_bounded() -> None:
    limits = Limits(backoff_base=1, backoff_cap=5)
    assert retry_delay(limits, 1, retry_after=42) == 42
    assert retry_delay(limits, 1, retry_after=10**9) == MAX_RETRY_AFTER


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_send_times_allow_a_one_second_burst_then_the_rate() -> None:
    times, next_send = schedule(0.0, 100.0, 8, rate=5)
    assert times[:5] == [100.0] * 5  # the burst: max(1, rate) sends at once
    assert [round(t - 100.0, 6) for t in times[5:]] == [0.2, 0.4, 0.6]
    # Another instance reserving right after gets the times that follow, not a burst.
    later, _ = schedule(next_send, 100.01, 2, rate=5)
    assert [round(t - 100.0, 6) for t in later] == [0.8, 1.0]
    # After a quiet spell the burst is there again, but no more than one.
    again, _ = schedule(next_send, 200.0, 6, rate=5)
    assert again[:5] == [200.0] * 5 and again[5] > 200.0


def test_any_window_of_reserved_sends_stays_within_rate_and_burst() -> None:
    rate, next_send, now, sent = 20.0, 0.0, 50.0, []
    for step in range(200):  # two instances taking turns, batches of 1 to 5
        times, next_send = schedule(next_send, now + step * 0.01, 1 + step % 5, rate)
        sent += times
    sent.sort()
    for i, start in enumerate(sent):
        in_window = sum(1 for t in sent[i:] if t < start + 1.0)
        assert in_window <= rate * 1.0 + max(1.0, rate)


def test_a_slow_rate_reserves_one_send_at_a_time() -> None:
    assert batch_size(0.25, demand=8) == 1
    assert batch_size(20, demand=8) == 5
    assert batch_size(100000, demand=8) == 8


def test_concurrency_slots_are_shared_fairly() -> None:
    assert fair_shares(16, {"a": 16, "b": 16}) == {"a": 8, "b": 8}
    assert sorted(fair_shares(3, {"a": 3, "b": 3}).values()) == [1, 2]
    assert fair_shares(16, {"a": 2, "b": 16, "c": 16}) == {"a": 2, "b": 7, "c": 7}
    assert fair_shares(4, {"a": 0, "b": 4}) == {"a": 0, "b": 4}


def test_more_holders_than_slots_get_them_in_turn() -> None:
    wants = {f"lane-{n}": 4 for n in range(20)}
    served = set()
    for turn in range(60):
        shares = fair_shares(4, wants, turn)
        assert sum(shares.values()) == 4
        served |= {holder for holder, share in shares.items() if share}
    assert served == set(wants)
