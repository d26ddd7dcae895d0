"""JSON text the gateway writes for others to read: HTTP answers and ``--json`` output.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON (RFC 8259) and
which strict parsers refuse: a whole answer would be unreadable for one bad number.
Here they raise ValueError instead, so that such a number shows as an error of ours
(a 500 problem document, a failed command) and never reaches a reader.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any, **options: Any) -> str:
    return json.dumps(value, allow_nan=False, **options)
