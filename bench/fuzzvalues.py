"""Hostile values for the fuzz bench (bench/fuzz.py): hypothesis strategies for any
JSON Schema of the gateway's OpenAPI document (what each route takes, with hostile
values mixed in), and pools of examples drawn from them once, up front, so that
100,000 requests cost no more than picking and combining.

The strategies are built here from the document itself (``$ref``, ``oneOf``/``anyOf``,
``enum``, ``const``, objects, arrays, strings with their formats and lengths, numbers):
each leaf is either what the schema allows or a value chosen to hurt (control and
format characters, other scripts' digits, dates in year 1 or 9999, numbers beyond any
float, very long text, injection strings, wrong JSON types).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

#: Strings no input should get past validation with, or crash anything with.
HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\nX-Injected: 1",
    "\x1b[2J\x1b[H",
    "\u202e\u2066evil",
    "\ufeff",
    "\ud7ff\ue000",
    "²³",
    "١٢٣٤",
    "１２３",
    "1e400000",
    "-1e400000",
    "NaN",
    "Infinity",
    "-0",
    "0x10",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2026-02-30T25:61:61Z",
    "0000-00-00",
    "1970-01-01T00:00:00Z",
    "2026-01-01",
    "2026-01-01T00:00:00",
    "../../../../etc/passwd",
    "%00",
    "' OR '1'='1",
    "'; DROP TABLE events; --",
    "{{7*7}}",
    "${jndi:ldap://127.0.0.1/x}",
    "<script>x</script>",
    "A" * 5_000,
    "界" * 3_000,
    "\U0001f4a9" * 500,
    "case_" + "9" * 200,
    "gwt_0_0",
    "whsec_AAAA",
]
HOSTILE_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63),
    10**400,
    1e308,
    -1e308,
    1e-320,
    0.1,
    123456789.123456789,
]
DATE_TIME = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.isoformat())
RECENT = st.integers(min_value=-10 * 86400, max_value=3600).map(
    lambda s: (datetime.now(UTC) + timedelta(seconds=s)).isoformat()
)

text = st.text(max_size=40) | st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
hostile: st.SearchStrategy[Any] = (
    st.sampled_from(HOSTILE_TEXT)
    | st.sampled_from(HOSTILE_NUMBERS)
    | text
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.none()
    | st.booleans()
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    fmt = schema.get("format")
    if fmt == "date-time":
        return st.integers(1, 4).flatmap(lambda roll: DATE_TIME if roll == 1 else RECENT)
    if fmt == "date":
        return st.dates().map(lambda d: d.isoformat())
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    low, high = schema.get("minLength", 0), schema.get("maxLength", 60)
    return st.text(min_size=low, max_size=min(high, 60)) | st.text(
        alphabet=st.characters(categories=["Nd", "Lo", "Zs"]), min_size=low, max_size=min(high, 20)
    )


def _number(schema: dict[str, Any], kind: str) -> st.SearchStrategy[Any]:
    low, high = schema.get("minimum"), schema.get("maximum")
    ints = st.integers(
        min_value=None if low is None else math.ceil(low),
        max_value=None if high is None else math.floor(high),
    )
    if kind == "integer":
        return ints
    exact = [None if b is None else Decimal(str(b)) for b in (low, high)]
    return (
        ints
        | st.floats(min_value=low, max_value=high, allow_nan=False)
        | st.decimals(
            min_value=exact[0], max_value=exact[1], allow_nan=False, allow_infinity=False, places=2
        ).map(str)
    )


class SchemaStrategies:
    """Strategies for the schemas of one OpenAPI document."""

    def __init__(self, components: dict[str, Any], hostility: int = 8) -> None:
        """``hostility``: one field in that many holds a hostile value (0: none)."""
        self.components = components
        self.hostility = hostility

    def of(self, schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
        valid = self._valid(schema, depth)
        if depth == 0 or not self.hostility:
            return valid
        # Each field now and then (1 in ``hostility``) holds what the schema does not allow.
        return st.integers(1, self.hostility).flatmap(lambda roll: hostile if roll == 1 else valid)

    def _valid(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            return st.deferred(lambda: self.of(self.components["schemas"][name], depth))
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return st.one_of([self.of(s, depth) for s in schema[key]])
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.of(schema["allOf"][0], depth)
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            return self._object(schema, depth)
        if kind == "array":
            return st.lists(self.of(schema.get("items", {}), depth + 1), max_size=3)
        if kind == "string":
            return _string(schema)
        if kind in ("integer", "number"):
            return _number(schema, kind)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        return hostile

    def _object(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        properties = schema.get("properties", {})
        if depth > 4:
            return st.just({})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: self.of(v, depth + 1) for k, v in properties.items() if k in required},
            optional={k: self.of(v, depth + 1) for k, v in properties.items() if k not in required}
            | {"unexpected": hostile},
        )


def draw_many(strategy: st.SearchStrategy[Any], count: int, seed_value: int) -> list[Any]:
    """``count`` examples of ``strategy``, drawn by hypothesis's own engine (which
    favours boundaries, empty and repeated values) and reproducible with ``seed_value``."""
    drawn: list[Any] = []

    @settings(
        max_examples=count, database=None, phases=[Phase.generate], deadline=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    seed(seed_value)(collect)()
    return drawn
