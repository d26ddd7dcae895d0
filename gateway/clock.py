"""The one clock and the one timestamp format the gateway stores and logs."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def isotime(moment: datetime) -> str:
    """The one timestamp format stored and logged: UTC, RFC 3339, microseconds."""
    # isoformat, not strftime: it pads years below 1000, so every stored time has one
    # width and text order is time order.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
