"""The retry arithmetic: full-jitter backoff within its caps, Retry-After, the token bucket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from gateway.delivery.outbox import MAX_RETRY_AFTER, retry_delay
from gateway.delivery.ratelimit import TokenBucket
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


async def test_token_bucket_allows_a_one_second_burst_then_the_rate() -> None:
    clock = [0.0]
    bucket = TokenBucket(rate=5, monotonic=lambda: clock[0])
    for _ in range(5):
        await bucket.acquire()
    assert bucket.available() == 0
    waiting = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    clock[0] += 0.2  # one token's worth of time
    await asyncio.wait_for(waiting, 1)
