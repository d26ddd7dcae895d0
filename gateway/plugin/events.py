"""What `gateway_event` subscribers receive: one small record per committed action.

Audited actions arrive as their audit entry's fields; deliveries, dead packages and
checkpoints, which the audit log does not hold as entries, arrive in the same shape.
Nothing here holds personal data: cases and debtors are pseudonymous tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pluggy

from schemas.audit import Entry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    #: What happened: an audit entry's kind (``disclosure``, ``violation``,
    #: ``partner_suspended``, ``recall``, ``deletion_attested``...), or ``delivered``,
    #: ``dead`` or ``checkpoint``.
    kind: str
    #: When, UTC, RFC 3339.
    at: str
    partner: str | None = None
    #: The case's pseudonymous token, where the action concerns one case.
    case: str | None = None
    #: The rest of the entry's fields (rule, package id, reason, size...).
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_entry(cls, entry: Entry, fields: dict[str, Any] | None = None) -> Event:
        """The event of an audit entry; ``fields``: its fields as
        ``entry.model_dump(mode="json")`` gives them, if the caller has them already."""
        data = dict(fields) if fields is not None else entry.model_dump(mode="json")
        return cls(
            kind=data.pop("kind"),
            at=data.pop("at"),
            partner=data.pop("partner", None),
            case=data.pop("case", None),
            detail=data,
        )


def emit(pm: pluggy.PluginManager, events: list[Event]) -> None:
    """Hand each event to every subscriber; a subscriber that raises is logged and the
    others still get it: the action is committed whatever they do."""
    subscribers = pm.hook.gateway_event.get_hookimpls()
    for event in events:
        for impl in subscribers:
            try:
                impl.function(event=event)
            except Exception as exc:  # a plugin's bug must not reach the action's caller
                log.error(
                    "event subscriber %s failed on %s: %s",
                    impl.plugin_name,
                    event.kind,
                    type(exc).__name__,
                )
