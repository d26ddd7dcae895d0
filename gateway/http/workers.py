"""The background tasks of ``gateway serve`` (dispatcher, poller, checkpoint timer), watched.

Each is meant to run until the app stops. One that ends before (an error escaped it, or
it returned) is logged at once, loudly (CRITICAL, with its frames), and named by
:meth:`Workers.dead`, which ``GET /healthz`` reports (503), so a readiness or liveness
check sees a gateway that answers HTTP but no longer delivers or polls.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Coroutine
from typing import Any

from gateway.supervision.redact import redact

log = logging.getLogger(__name__)


class Workers:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._ended)
        return task

    def task(self, name: str) -> asyncio.Task[Any]:
        return self._tasks[name]

    def started(self) -> list[str]:
        """Names of the tasks started (none under ``serve --no-workers``)."""
        return sorted(self._tasks)

    def dead(self) -> list[str]:
        """Names of the tasks that ended although the app is not stopping."""
        if self._stopping:
            return []
        return sorted(name for name, task in self._tasks.items() if task.done())

    async def stop(self) -> None:
        """Wait for every task, after the caller told them to stop."""
        self._stopping = True
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._stopping:
            return
        name = task.get_name()
        if task.cancelled():
            log.critical("background task %s was cancelled; `gateway serve` goes on without it", name)
            return
        exc = task.exception()
        if exc is None:
            log.critical("background task %s ended; `gateway serve` goes on without it", name)
            return
        # Its message without personal data (it may quote a partner's answer).
        log.critical(
            "background task %s died: %s: %s; `gateway serve` goes on without it\n%s",
            name,
            type(exc).__name__,
            redact(str(exc)),
            "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
        )
