"""Field transforms: how one listed field leaves in a package.

A transform has a name (what profiles write in ``transform = "..."``), the kinds of
leaf it fits (``text``, ``number``, ``date``) and an ``apply``. The built-in ones are
below; plugins add their own through ``gateway_register_transforms`` (e.g. a national-ID
scheme that keeps the region code and tokenizes the rest). Options of a plugin's
transform come from the profile's ``options = {...}`` and are checked by ``check``.
What a transform gives is described to the partner, in the partner kit's JSON Schema of
its data, by ``json_schema`` (or, for ``keep``, by the field's own type).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from gateway.onboarding.pseudonyms import Pseudonymizer
from schemas.partner import FieldRule


class Transform:
    #: What profiles write in ``transform = "..."``.
    name: ClassVar[str]
    #: The kinds of leaf it fits: any of "text", "number", "date".
    kinds: ClassVar[frozenset[str]]
    #: The value leaves in the field's own type (decimals and dates as text, see `Keep`):
    #: the partner kit then describes it from the case model, not by `json_schema`.
    keeps_type: ClassVar[bool] = False

    def check(self, rule: FieldRule) -> None:
        """Raise ValueError naming the option if ``rule``'s options do not fit."""
        if rule.options:
            raise ValueError(f"transform {self.name!r} takes no options")

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        """The value as the partner sees it (JSON: text, number, list or object)."""
        raise NotImplementedError

    def json_schema(self, rule: FieldRule) -> dict[str, Any]:
        """The JSON Schema of what ``apply`` returns under ``rule``, for the partner kit.
        The default, ``{}``, says any JSON value; a plugin's transform may say more."""
        return {}


#: How a kept decimal reads: plain notation, never an exponent.
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


class Keep(Transform):
    """Decimals leave as text in plain notation ("52310.45", and "1000" for 1E+3), dates
    as ISO text ("2026-05-10"); text and integers as they are."""

    name = "keep"
    kinds = frozenset({"text", "number", "date"})
    keeps_type = True

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        if isinstance(value, Decimal):
            return format(value, "f")
        return str(value) if isinstance(value, date) else value


class Mask(Transform):
    name = "mask"
    kinds = frozenset({"text"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        text = str(value)
        if len(text) <= rule.first + rule.last:
            return "*" * len(text)
        hidden = len(text) - rule.first - rule.last
        return text[: rule.first] + "*" * hidden + text[len(text) - rule.last :]

    def json_schema(self, rule: FieldRule) -> dict[str, Any]:
        def kept(count: int) -> str:
            return f"[\\s\\S]{{{count}}}" if count else ""

        return {
            "type": "string",
            # Shorter than first + last: every character is masked.
            "pattern": f"^(?:{kept(rule.first)}\\*+{kept(rule.last)}|\\**)$",
            "description": f"masked: the first {rule.first} and last {rule.last} characters kept, "
            "every other one replaced by *",
        }


class Token(Transform):
    name = "token"
    kinds = frozenset({"text", "number"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        return partner_token(value, tokens)

    def json_schema(self, rule: FieldRule) -> dict[str, Any]:
        return {
            "type": "string",
            "pattern": "^tok_[0-9a-f]{32}$",
            "description": "a keyed pseudonym: the same value gives the same token, for this partner only",
        }


class Year(Transform):
    name = "year"
    kinds = frozenset({"date"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        return value.year

    def json_schema(self, rule: FieldRule) -> dict[str, Any]:
        return {"type": "integer", "description": "the year of the date"}


class Bucket(Transform):
    name = "bucket"
    kinds = frozenset({"number"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        return bucket(Decimal(value), rule.edges)

    def json_schema(self, rule: FieldRule) -> dict[str, Any]:
        return {
            "type": "string",
            "enum": bucket_labels(rule.edges),
            "description": "the range the amount falls in: low..<high includes low, excludes high",
        }


class Drop(Transform):
    """Listed so that a profile can say a field is deliberately withheld."""

    name = "drop"
    kinds = frozenset({"text", "number", "date"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        raise AssertionError("dropped fields are never copied")


def partner_token(value: Any, tokens: Pseudonymizer) -> str:
    """The partner-scoped token of a value: what a ``token`` transform sends, and what the
    partner reports back as ``number_token`` (see `gateway.placement.minimize.tokenised_points`)."""
    return tokens.token(str(value))


def bucket_labels(edges: list[Decimal]) -> list[str]:
    """Every range ``edges`` make, lowest first: ``<1000``, ``1000..<10000``, ``>=10000``."""
    middle = [f"{low}..<{high}" for low, high in itertools.pairwise(edges)]
    return [f"<{edges[0]}", *middle, f">={edges[-1]}"]


def bucket(amount: Decimal, edges: list[Decimal]) -> str:
    return bucket_labels(edges)[bisect.bisect_right(edges, amount)]


BUILTIN: Mapping[str, Transform] = {t.name: t for t in (Keep(), Mask(), Token(), Year(), Bucket(), Drop())}
