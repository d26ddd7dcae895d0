"""The state of one case at one partner (an *assignment*), and which reports may move it.

::

    placed ──accepted──> active ──returned/closed──> ended
      │  └──rejected──> ended      │
      └────── recall ──────────────┴──> recalled ──deletion_attested──> deleted

A report that the current state does not allow (a contact after a recall, an award
before an acceptance, anything after deletion) is refused with 409 and flagged.
"""

from __future__ import annotations

#: Reports that describe work on a live case.
WORK = frozenset(
    {
        "contact_attempt",
        "promise_to_pay",
        "payment_reported",
        "dispute",
        "complaint",
        "hardship",
        "arbitration_filed",
        "hearing_scheduled",
        "award_issued",
        "message_delivered",
        "message_failed",
    }
)

TRANSITIONS: dict[str, dict[str, str]] = {
    "placed": {
        "accepted": "active",
        "rejected": "ended",
        # SMS and email providers report delivery without a separate acceptance.
        "message_delivered": "placed",
        "message_failed": "placed",
    },
    "active": {**{event: "active" for event in WORK}, "returned": "ended", "closed": "ended"},
    "ended": {"payment_reported": "ended", "complaint": "ended", "deletion_attested": "deleted"},
    "recalled": {
        "returned": "recalled",
        "payment_reported": "recalled",
        "complaint": "recalled",
        "deletion_attested": "deleted",
    },
    "deleted": {},
}


def next_state(state: str, event_type: str) -> str | None:
    """The state after ``event_type``, or None if the report is impossible now."""
    return TRANSITIONS[state].get(event_type)
