"""A stored contact report read back (`history.as_contact`) is the contact it describes:
each field of the report and of its row lands in the `Contact` field of that name."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

from gateway.supervision.base import Contact
from gateway.supervision.history import Numbers, as_contact


def test_every_field_of_a_stored_report_reaches_its_contact_field() -> None:
    row = {
        "id": 41,
        "partner_id": "acme-collect",
        "case_id": "C-1001",
        "received_at": "2026-03-02T01:02:03.000004Z",
    }
    body = {
        "type": "contact_attempt",
        "occurred_at": "2026-03-02T09:00:00+08:00",
        "channel": "visit",
        "target": "third_party",
        "outcome": "refused",
        "number_token": "tok-1",
        "staff_count": 3,
        "text": "left a card",
    }
    numbers = Numbers({("acme-collect", "tok-1"): "num-9"}, {"num-9": ("home", "Asia/Urumqi")})

    contact = as_contact(row, body, "subj-7", numbers, time_barred=True)

    assert {f.name: getattr(contact, f.name) for f in fields(Contact)} == {
        "at": datetime(2026, 3, 2, 9, tzinfo=timezone(timedelta(hours=8))),
        "channel": "visit",
        "target": "third_party",
        "outcome": "refused",
        "partner": "acme-collect",
        "debt": "C-1001",
        "debtor": "subj-7",
        "number": "num-9",
        "staff_count": 3,
        "text": "left a card",
        "event": 41,
        "known_at": datetime(2026, 3, 2, 1, 2, 3, 4, tzinfo=UTC),
        "zones": ("Asia/Urumqi",),
        "place": "home",
        "time_barred": True,
    }
    assert contact.at.utcoffset() == timedelta(hours=8)


def test_a_report_without_number_or_receipt_time_reads_as_such() -> None:
    row = {"partner_id": "acme-collect", "case_id": "C-1001"}
    body = {
        "occurred_at": "2026-03-02T01:00:00Z",
        "channel": "voice",
        "target": "debtor",
        "outcome": "no_answer",
    }
    numbers = Numbers({}, {"num-9": ("home", "Asia/Urumqi"), "num-8": ("work", "Asia/Shanghai")})

    contact = as_contact(row, body, "subj-7", numbers)

    assert (contact.number, contact.place, contact.event, contact.known_at, contact.time_barred) == (
        None,
        None,
        None,
        None,
        False,
    )
    assert contact.zones == ("Asia/Shanghai", "Asia/Urumqi")  # unknown number: every zone on file
    assert (contact.staff_count, contact.text) == (None, None)
