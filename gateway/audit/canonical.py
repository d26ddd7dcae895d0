"""RFC 8785 canonical JSON of audit leaves, fast for the shapes the log holds.

The `rfc8785` package is exact but pure Python (about 70 us per leaf here), which alone
would cap appends near 14k/s and make verifying a million leaves take minutes. Audit
entries hold only strings, small integers, booleans, lists and objects with BMP keys;
for those, RFC 8785 is "keys sorted, no whitespace, minimal escapes", which
pydantic-core's serializer writes byte for byte once the keys are sorted. Anything
else (floats, big integers, non-BMP keys, where the orders or number formats differ)
falls back to `rfc8785`.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
import rfc8785

_MAX_SAFE = 2**53  # I-JSON: larger integers are not exact in every parser


class _NeedsFullCanonicalizer(Exception):
    pass


#: Sorted key order by a dict's key sequence: entries of one kind repeat the same keys,
#: so each key set is checked and sorted once. Bounded, as keys may come from input.
_ORDERS: dict[tuple[Any, ...], tuple[str, ...]] = {}
_ORDERS_MAX = 4096


def _order(keys: tuple[Any, ...]) -> tuple[str, ...]:
    for key in keys:
        # RFC 8785 sorts by UTF-16 code units; for BMP-only keys that is the same
        # order as Python's code point order.
        if type(key) is not str or not (key.isascii() or max(key, default="") < "\U00010000"):
            raise _NeedsFullCanonicalizer
    order = tuple(sorted(keys))
    if len(_ORDERS) < _ORDERS_MAX:
        _ORDERS[keys] = order
    return order


def _sorted(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        keys = tuple(value)
        order = _ORDERS.get(keys)
        if order is None:
            order = _order(keys)
        out = {}
        for key in order:
            item = value[key]
            # Inlined for the common scalars: a call per string would double the cost.
            item_kind = type(item)
            if item_kind is str or item_kind is bool or item is None:
                out[key] = item
            else:
                out[key] = _sorted(item)
        return out
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if -_MAX_SAFE < value < _MAX_SAFE:
            return value
        raise _NeedsFullCanonicalizer
    if kind is list:
        return [item if type(item) is str else _sorted(item) for item in value]
    raise _NeedsFullCanonicalizer


def canonical_json(data: Any) -> bytes:
    """RFC 8785 serialization of plain JSON data (dicts, lists, str, int, bool, None)."""
    try:
        return pydantic_core.to_json(_sorted(data))
    except _NeedsFullCanonicalizer:
        return rfc8785.dumps(data)


def parse_canonical(leaf: bytes) -> Any:
    """The JSON value of `leaf`, if `leaf` is its RFC 8785 canonical form.

    Raises ValueError saying why not. Re-serializing and comparing catches every
    non-canonical spelling at once: whitespace, key order, escapes, duplicate keys.
    """
    try:
        data = pydantic_core.from_json(leaf)
    except ValueError as exc:
        raise ValueError(f"leaf is not JSON: {exc}") from None
    try:
        again = canonical_json(data)
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"leaf has no RFC 8785 form: {exc}") from None
    if again != leaf:
        raise ValueError("leaf is not in RFC 8785 canonical form")
    return data
