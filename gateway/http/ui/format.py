"""How the dashboard writes times, ages, rates and rule names (template filters)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def moment(at: str | datetime | None) -> datetime | None:
    if at is None or at == "":
        return None
    if isinstance(at, datetime):
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def utc(at: str | datetime | None) -> str:
    when = moment(at)
    return "—" if when is None else f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def local(at: str | datetime | None, zone: str | None) -> str:
    """The time on the debtor's clock, with the zone's name; empty without a zone."""
    when = moment(at)
    if when is None or not zone:
        return ""
    try:
        return f"{when.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"
    except (ZoneInfoNotFoundError, ValueError):
        return ""


def age(seconds: float | None) -> str:
    """A duration for people: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def dash(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


FILTERS: dict[str, Callable[..., str]] = {
    "utc": utc,
    "local": local,
    "age": age,
    "percent": percent,
    "dash": dash,
    "pretty": pretty,
}
