"""Field transforms: how one listed field leaves in a package.

A transform has a name (what profiles write in ``transform = "..."``), the kinds of
leaf it fits (``text``, ``number``, ``date``) and an ``apply``. The built-in ones are
below; plugins add their own through ``gateway_register_transforms`` (e.g. a national-ID
scheme that keeps the region code and tokenizes the rest). Options of a plugin's
transform come from the profile's ``options = {...}`` and are checked by ``check``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from gateway.onboarding.keys import Pseudonymizer
from schemas.partner import FieldRule


class Transform:
    #: What profiles write in ``transform = "..."``.
    name: ClassVar[str]
    #: The kinds of leaf it fits: any of "text", "number", "date".
    kinds: ClassVar[frozenset[str]]

    def check(self, rule: FieldRule) -> None:
        """Raise ValueError naming the option if ``rule``'s options do not fit."""
        if rule.options:
            raise ValueError(f"transform {self.name!r} takes no options")

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        """The value as the partner sees it (JSON: text, number, list or object)."""
        raise NotImplementedError


class Keep(Transform):
    name = "keep"
    kinds = frozenset({"text", "number", "date"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        return str(value) if isinstance(value, Decimal | date) else value


class Mask(Transform):
    name = "mask"
    kinds = frozenset({"text"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        text = str(value)
        if len(text) <= rule.first + rule.last:
            return "*" * len(text)
        hidden = len(text) - rule.first - rule.last
        return text[: rule.first] + "*" * hidden + text[len(text) - rule.last :]


class Token(Transform):
    name = "token"
    kinds = frozenset({"text", "number"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        return partner_token(value, tokens)


class Year(Transform):
    name = "year"
    kinds = frozenset({"date"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        return value.year


class Bucket(Transform):
    name = "bucket"
    kinds = frozenset({"number"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        return bucket(Decimal(value), rule.edges)


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


def bucket(amount: Decimal, edges: list[Decimal]) -> str:
    if amount < edges[0]:
        return f"<{edges[0]}"
    for low, high in zip(edges, edges[1:], strict=False):
        if amount < high:
            return f"{low}..<{high}"
    return f">={edges[-1]}"


BUILTIN: Mapping[str, Transform] = {t.name: t for t in (Keep(), Mask(), Token(), Year(), Bucket(), Drop())}
