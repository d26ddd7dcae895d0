"""The signed payload's JSON: orjson where it writes what `json.dumps` would, `json.dumps`
where it would not, and no package with NaN or an infinity in it."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import SealingError
from gateway.placement.seal import claims_json

# What transforms and the package's own claims give: text (any Unicode but lone
# surrogates, control characters included), integers, booleans, absent values, lists
# and objects of them.
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | _text
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


def _json_dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_text, _values, max_size=6))
def test_the_same_bytes_as_json_dumps(claims: dict[str, object]) -> None:
    assert claims_json(claims) == _json_dumps(claims)


def test_text_a_partner_reads_as_written() -> None:
    claims = {"name": "张伟", "note": 'line\nbreak "quoted" \\ \u2028 \x7f \x00', "n": [1, True, None]}
    assert claims_json(claims) == _json_dumps(claims)
    assert json.loads(claims_json(claims)) == claims


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused(value: float) -> None:
    with pytest.raises(SealingError, match="not plain JSON"):
        claims_json({"data": {"amount": value}})


def test_what_orjson_will_not_write_goes_as_json_dumps_writes_it() -> None:
    claims = {"data": {1: "one", "big": 2**70}}
    assert claims_json(claims) == _json_dumps(claims)  # type: ignore[arg-type]


def test_a_value_no_json_holds_is_refused() -> None:
    with pytest.raises(SealingError, match="not plain JSON"):
        claims_json({"data": {"when": object()}})
