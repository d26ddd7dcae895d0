"""Characters no operator-entered or profile text may hold: the one rule, and its words.

Control characters (C0, DEL, C1: CR, LF, ESC...) split a header or a log line, move a
terminal's cursor or recolour it; the bidirectional embeddings, overrides and isolates
(and the marks) make a text read otherwise than it is stored. Tables show them escaped
(`gateway.cli.common.printable`); input that holds one is refused with `check_text`.
"""

from __future__ import annotations

import re

from gateway.errors import InvalidInput

CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def describe(char: str) -> str:
    """What ``char`` is, in words an operator can act on, without printing it."""
    if char == "\\":
        return "a backslash"
    if not CONTROLS.fullmatch(char):
        return repr(char)
    kind = "a control character" if ord(char) < 0xA0 else "a bidirectional control"
    return f"{kind} (U+{ord(char):04X})"


def control_in(text: str) -> str | None:
    """The description of the first control or bidirectional character of ``text``, or None."""
    found = CONTROLS.search(text)
    return describe(found.group()) if found else None


def check_text(text: str, what: str) -> str:
    """Refuse operator input (a reason, a label) holding a control or bidirectional
    character, with one line; return the text."""
    found = control_in(text)
    if found:
        raise InvalidInput(f"the {what} holds {found}; write it on one line, in plain text")
    return text
