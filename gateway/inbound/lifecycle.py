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
        "contact_request",
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
        "contact_request": "placed",
    },
    "active": {**{event: "active" for event in WORK}, "returned": "ended", "closed": "ended"},
    # A person's request binds whatever the case's state: it is taken in after the end too.
    "ended": {
        "payment_reported": "ended",
        "complaint": "ended",
        "contact_request": "ended",
        "deletion_attested": "deleted",
    },
    "recalled": {
        "returned": "recalled",
        "contact_request": "recalled",
        "payment_reported": "recalled",
        "complaint": "recalled",
        "deletion_attested": "deleted",
    },
    "deleted": {},
}


def next_state(state: str, event_type: str) -> str | None:
    """The state after ``event_type``, or None if the report is impossible now."""
    return TRANSITIONS[state].get(event_type)
