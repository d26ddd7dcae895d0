"""A token bucket: at most ``rate`` sends per second to one partner, bursts of one second.

It is kept per dispatcher process: several dispatcher processes each get the full rate,
so run one dispatcher per partner set, or lower ``rate_per_second`` accordingly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self, rate: float, capacity: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._monotonic = monotonic
        self._tokens = self.capacity
        self._stamp = monotonic()

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def available(self) -> int:
        self._refill()
        return int(self._tokens)

    async def wait(self) -> int:
        """Wait until at least one token is there; return how many whole tokens are."""
        while (count := self.available()) < 1:
            await asyncio.sleep((1 - self._tokens) / self.rate)
        return count

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        await self.wait()
        self._tokens -= 1
