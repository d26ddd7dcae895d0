"""The one clock and the one timestamp format the gateway stores and logs, and the ids
that sort by time."""

from __future__ import annotations

import os
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


#: The last moment formatted and its text: a request stamps the same ``now`` on each of
#: its rows and audit entries (a tuple, so a reader in another thread sees both or neither).
_last: tuple[datetime | None, str] = (None, "")


def isotime(moment: datetime) -> str:
    """The one timestamp format stored and logged: UTC, RFC 3339, microseconds."""
    global _last
    last, text = _last
    if last is moment:
        return text
    # isoformat, not strftime: it pads years below 1000, so every stored time has one
    # width and text order is time order.
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    _last = (moment, text)
    return text


def sortable_id(prefix: str, moment: datetime) -> str:
    """`prefix` and 32 hex digits, as a UUID's: `moment` in milliseconds since the epoch
    (48 bits), then 80 random bits. Ids made later sort later, so rows keyed by them go
    at the end of their indexes rather than onto a page each all over them, pages that
    every commit would then write."""
    return f"{prefix}{int(moment.timestamp() * 1000):012x}{os.urandom(10).hex()}"
