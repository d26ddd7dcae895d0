"""Personal data out of the text partners write back.

A partner's answer (an error body, an SMTP reply, a status feed that would not parse)
is kept for the operators (`gateway deliveries`, `attempts.detail`) and may reach the
logs, but partners often echo the request, or say whom it was about. Everything the
gateway keeps or prints of such text goes through `redact`:

- e-mail addresses become ``<email>``;
- runs of 7 or more digits (phone, ID and account numbers, with ``+``, spaces or
  hyphens between the digits, an ID number's final ``X`` included) become ``<number>``;
  a run that touches letters or digits (a package id's hex, a token) is left as it is,
  and so is a date with a time of day;
- with ``known``, the values of the package the text is about (its minimized data:
  names, addresses, numbers as sent) become ``<redacted>``, in any letter case and
  JSON-escaped too: a value with non-ASCII letters (a Chinese name) from 2 characters
  on, wherever it appears; an ASCII value from 4 characters on (shorter ones match too
  much: ``12`` in ``HTTP 412``), and not inside a longer run of ASCII letters and digits
  (``1990`` in a package id's hex).

What this cannot see is personal data the gateway never sent and that has no shape: a
name of somebody else in a partner's prose. It keeps the part that operators need (the
status, the partner's reason) and drops what is recognisable as about a person.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from gateway.controls import check_text
from gateway.errors import InvalidInput
from schemas.api import MAX_REASON

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A date with a time of day (a partner's timestamp) is not a number to hide.
NUMBER = re.compile(
    r"(?<![0-9A-Za-z+])(?!\d{4}-\d\d-\d\d[ T]\d\d:\d\d)"  # not inside a word, not a timestamp
    r"\+?\d(?:[ -]?\d){6,}(?:[Xx](?![0-9A-Za-z]))?(?![0-9A-Za-z])"
)


def redact(text: str, known: Iterable[str] = ()) -> str:
    # Only the values the text holds at all: most texts hold none (every delivery's
    # record passes here), and then no pattern is built. A value may be echoed
    # JSON-escaped (``\u5f20\u4f1f``) as well as plain; an escape needs a backslash.
    folded = text.casefold()
    escapes = "\\" in text
    values = set()
    for value in known:
        if len(value) < (4 if value.isascii() else 2):
            continue
        if value.casefold() in folded:
            values.add(value)
        if escapes:
            escaped = json.dumps(value)[1:-1]
            if escaped != value and escaped.casefold() in folded:
                values.add(escaped)
    for ascii_only in (False, True):
        chosen = sorted((v for v in values if v.isascii() == ascii_only), key=len, reverse=True)
        if not chosen:
            continue
        # The longest first (a name inside an address), any case. An ASCII value never
        # inside a run of ASCII letters and digits, so that a year does not bite into a
        # package id's hex; a value with other letters (a Chinese name) anywhere.
        pattern = "(?:" + "|".join(re.escape(v) for v in chosen) + ")"
        if ascii_only:
            pattern = f"(?<![0-9A-Za-z]){pattern}(?![0-9A-Za-z])"
        text = re.sub(pattern, "<redacted>", text, flags=re.IGNORECASE)
    text = EMAIL.sub("<email>", text)
    return NUMBER.sub("<number>", text)


# What an operator's reason may hold that looks like a number but names nobody: a date
# (2026-03-15, 20260315), a time, a reference with a prefix in capitals (C-2026-1001,
# ARB-2026-003, INC-1234567), its groups no longer than 8 digits.
REASON_ALLOWED = re.compile(
    r"\d{4}-\d\d-\d\d(?:[ T]\d\d:\d\d(?::\d\d)?)?"
    r"|(?<!\d)(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)"
    r"|(?<![A-Za-z])[A-Z]{1,6}(?:-\d{1,8})+(?![\d-])"
)
# Anything else with 7 or more digits, even glued to letters (phone13812341999) or split
# by spaces, dots, hyphens or slashes: a reason is short prose, so be strict.
REASON_NUMBER = re.compile(r"\d(?:[ ./-]?\d){6,}")


def check_reason(reason: str) -> None:
    """Refuse an operator's reason (recall, offboarding, suspension) that holds what
    looks like personal data: it is written to the audit log, which holds pseudonymous
    tokens only, and a recall's reason is sent to the partner. The value is not quoted. Nor
    may it hold control or bidirectional characters (`gateway.controls`)."""
    check_text(reason, "reason")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"the reason is {len(reason)} characters long; at most {MAX_REASON}")
    found = (
        "an e-mail address" if EMAIL.search(reason)
        else "a number of 7 or more digits (a phone, ID or account number?)"
        if REASON_NUMBER.search(REASON_ALLOWED.sub(" ", reason))
        else None
    )
    if found:
        raise InvalidInput(
            f"the reason holds {found}; it goes into the audit log, which must hold no personal "
            "data: say why in general terms (e.g. 'complaint under review', dates and "
            "references such as C-2026-1001 are fine); the case or partner it is about is "
            "recorded with it already"
        )


def values_of(data: Any) -> list[str]:
    """Every scalar in a nested JSON value, as text (the personal data a package carries)."""
    found: list[str] = []
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            found.append(str(item))
    return found
