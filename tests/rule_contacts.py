"""Contacts as the rule tests write them."""

from __future__ import annotations

from datetime import datetime

from gateway.supervision.rules import Contact


def contact(when: datetime, **fields: object) -> Contact:
    """A voice call to the debtor's number by agency-a, unanswered, unless ``fields`` say
    otherwise: what the rule tests vary one field at a time."""
    values: dict[str, object] = {
        "channel": "voice",
        "target": "debtor",
        "outcome": "no_answer",
        "partner": "agency-a",
        "debt": "case-1",
        "debtor": "subj-1",
        "number": "num-1",
    }
    values.update(fields)
    return Contact(at=when, **values)  # type: ignore[arg-type]
