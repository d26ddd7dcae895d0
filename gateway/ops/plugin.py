"""The gateway's own ``gateway_event`` subscriber: each committed action is counted in
the metrics, logged as one line, and alerted when it calls for it. Registered by
`gateway.core.Gateway` for the workspace it opens."""

from __future__ import annotations

import logging

from gateway.config import Settings
from gateway.logs import context
from gateway.ops import metrics
from gateway.ops.alerts import Alerts, alert_of
from gateway.plugin.events import Event
from gateway.plugin.hookspecs import hookimpl

log = logging.getLogger("gateway.events")
#: Frequent, successful actions, logged at DEBUG (the audit log and the metrics have them).
FREQUENT = frozenset({"delivered", "disclosure", "callback"})


class OpsPlugin:
    def __init__(self, settings: Settings) -> None:
        self.alerts = Alerts(settings)

    @hookimpl
    def gateway_event(self, event: Event) -> None:
        metrics.observe_event(event)
        level = _level(event)
        if log.isEnabledFor(level):  # the line's fields are gathered only when it is written
            _log(event, level)
        self.alerts.offer(event)

    async def close(self) -> None:
        await self.alerts.close()


def _level(event: Event) -> int:
    if alert_of(event):
        return logging.WARNING
    return logging.DEBUG if event.kind in FREQUENT else logging.INFO


def _log(event: Event, level: int) -> None:
    fields = {k: v for k, v in event.detail.items() if k in ("rule", "actor", "cause", "error_class")}
    log.log(
        level,
        "%s",
        event.kind,
        extra=context(
            partner=event.partner, package=event.detail.get("package_id"), case=event.case, **fields
        ),
    )
