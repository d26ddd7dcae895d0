"""Field minimization: from a full ``Case`` to what one partner may see for one purpose.

Default deny. A policy is an allow-list of *leaf* field paths (``debtor.name``,
``debtor.phones[].number``), each with a transform; anything not listed never leaves.
Paths naming a whole object (``debtor``, ``emergency_contacts[]``) are refused, so ID
numbers and emergency contacts leave only when a profile names them field by field. A
number or address that leaves in another form than its token (in clear, masked) carries
its token beside it (``TOKEN_BESIDE``), the one listed field a profile does not write.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Union

from pydantic import BaseModel

from gateway.onboarding.pseudonyms import Pseudonymizer
from gateway.placement.transforms import BUILTIN, Transform, partner_token
from schemas.case import Case
from schemas.partner import FieldRule, PurposePolicy

#: Which built-in transforms make sense for which kind of leaf.
TRANSFORMS_FOR: dict[str, set[str]] = {
    kind: {t.name for t in BUILTIN.values() if kind in t.kinds} for kind in ("text", "number", "date")
}


@dataclass(frozen=True)
class Segment:
    name: str
    is_list: bool


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[Segment, ...]:
    """The segments of a field path (remembered: every package walks its policy's paths)."""
    segments = []
    for part in path.split("."):
        is_list = part.endswith("[]")
        name = part.removesuffix("[]")
        if not name.isidentifier():
            raise ValueError(f"malformed field path {path!r}")
        segments.append(Segment(name, is_list))
    return tuple(segments)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional/Annotated; report whether the type is a list."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        elif origin is list:
            inner, _ = _unwrap(typing.get_args(annotation)[0])
            return inner, True
        else:
            return annotation, False


def leaf_kind(path: str, model: type[BaseModel] = Case) -> str:
    """The kind of value at ``path`` ("text", "number", "date"), or ValueError saying why
    the path is not an allowed leaf of ``model``."""
    current: Any = model
    segments = parse_path(path)
    for i, seg in enumerate(segments):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            raise ValueError(f"{path!r}: {segments[i - 1].name} has no sub-fields")
        field = current.model_fields.get(seg.name)
        if field is None:
            known = ", ".join(current.model_fields)
            raise ValueError(f"{path!r}: no field {seg.name!r} (known here: {known})")
        current, is_list = _unwrap(field.annotation)
        if is_list != seg.is_list:
            hint = f"{seg.name}[]" if is_list else seg.name
            raise ValueError(f"{path!r}: write {hint!r} ({'a list' if is_list else 'not a list'})")
    if isinstance(current, type) and issubclass(current, BaseModel):
        raise ValueError(f"{path!r} names a whole object; list its fields one by one")
    if current in (Decimal, int, float):
        return "number"
    if current is date:
        return "date"
    return "text"


def leaf_paths(model: type[BaseModel] = Case, prefix: str = "") -> list[str]:
    """Every field path a policy may list, in model order."""
    paths = []
    for name, field in model.model_fields.items():
        inner, is_list = _unwrap(field.annotation)
        path = f"{prefix}{name}{'[]' if is_list else ''}"
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            paths += leaf_paths(inner, path + ".")
        else:
            paths.append(path)
    return paths


def check_rule(path: str, rule: FieldRule, transforms: Mapping[str, Transform] = BUILTIN) -> None:
    """ValueError naming the path if ``rule`` cannot apply to the field at ``path``."""
    kind = leaf_kind(path)
    transform = transforms.get(rule.transform)
    if transform is None:
        known = ", ".join(sorted(transforms))
        raise ValueError(f"{path!r}: no transform {rule.transform!r} (known: {known})")
    if kind not in transform.kinds:
        allowed = ", ".join(sorted(t.name for t in transforms.values() if kind in t.kinds))
        raise ValueError(
            f"{path!r}: transform {rule.transform!r} does not fit a {kind} field ({allowed})"
        )
    try:
        transform.check(rule)
    except ValueError as exc:
        raise ValueError(f"{path!r}: {exc}") from None


#: Case fields that are a way to reach someone: the kind of contact point each holds.
CONTACT_FIELDS: dict[str, str] = {
    "debtor.phones[].number": "phone",
    "debtor.email": "email",
    "debtor.address.line": "address",
    "emergency_contacts[].phone": "third_party",
}


# Slots, not frozen: one is made for every number and address of a case placed, and a
# frozen dataclass sets each field through object.__setattr__ (see
# `gateway.supervision.base.Contact`).
@dataclass(slots=True)
class ContactPoint:
    """A number or address of the case, as supervision needs it. ``value`` is the raw
    number: it is only ever pseudonymised, never stored or sent as it is."""

    path: str
    kind: str
    value: str
    label: str | None
    timezone: str | None


def contact_points(case: Case) -> list[ContactPoint]:
    """Every number and address of the case, with its label and time zone."""
    debtor = case.debtor
    points = [
        ContactPoint("debtor.phones[].number", "phone", p.number, p.label, p.timezone) for p in debtor.phones
    ]
    if debtor.email:
        points.append(ContactPoint("debtor.email", "email", debtor.email, None, None))
    if debtor.address is not None and debtor.address.line:
        address = debtor.address
        points.append(ContactPoint("debtor.address.line", "address", address.line, None, address.timezone))
    points += [
        ContactPoint("emergency_contacts[].phone", "third_party", c.phone, c.relation, None)
        for c in case.emergency_contacts
    ]
    return points


#: Where the token of a number or address goes when the number or address itself leaves
#: in another form (in clear, masked): beside it, so that a partner who dials the number
#: reports its token (``number_token``) as a partner who received only the token does.
TOKEN_BESIDE: dict[str, str] = {path: path + "_token" for path in CONTACT_FIELDS}
#: How a token beside a number is made: the ``token`` transform's own rule.
_TOKEN_RULE = FieldRule(transform="token")


def tokens_beside(policy: PurposePolicy) -> dict[str, str]:
    """The numbers and addresses ``policy`` sends other than as their token, each with the
    path of the token that goes beside it (``debtor.phones[].number_token``)."""
    return {
        path: TOKEN_BESIDE[path]
        for path, rule in policy.fields.items()
        if path in TOKEN_BESIDE and rule.transform not in ("token", "drop")
    }


def sent_paths(policy: PurposePolicy) -> set[str]:
    """Every leaf path a package under ``policy`` may hold: the fields it lists (but the
    dropped ones) and the tokens beside its numbers and addresses."""
    listed = {path for path, rule in policy.fields.items() if rule.transform != "drop"}
    return listed | set(tokens_beside(policy).values())


def tokenised_points(
    points: list[ContactPoint], policy: PurposePolicy, tokens: Pseudonymizer
) -> list[tuple[str, ContactPoint]]:
    """The contact points of a case (`contact_points`) that ``policy`` sends, in any form,
    each with the token the partner receives for it (as the value itself, or beside it)
    and reports back as ``number_token``."""
    sent = {path for path, rule in policy.fields.items() if rule.transform != "drop"}
    return [(partner_token(p.value, tokens), p) for p in points if p.path in sent]


def minimize(
    case: Case, policy: PurposePolicy, tokens: Pseudonymizer, transforms: Mapping[str, Transform] = BUILTIN
) -> dict[str, Any]:
    """The payload for one partner and purpose: only listed leaves, transformed, and the
    token beside each number or address that leaves other than as its token (see
    `Minimizer`, which a batch of placements makes once for its policy)."""
    return Minimizer(policy, transforms)(case, tokens)


#: One step of a `Minimizer`'s walk: the field's name, whether it is a list, the steps
#: below it (None: a leaf), and for a leaf the name it leaves under, its transform and rule.
_Step = tuple[str, bool, "tuple[_Step, ...] | None", str, Transform | None, FieldRule | None]


class Minimizer:
    """`minimize` under one policy, its paths parsed once and merged into a single walk
    of the case: each object on the way (``debtor``, each phone) is visited once, however
    many of its fields the policy lists. The payload is the same, key order included:
    keys come in the order the policy first names them, the tokens beside last."""

    def __init__(self, policy: PurposePolicy, transforms: Mapping[str, Transform] = BUILTIN) -> None:
        root: list[list[Any]] = []
        for path, rule in policy.fields.items():
            if rule.transform != "drop":
                _add(root, parse_path(path), None, transforms[rule.transform], rule)
        for path, beside in tokens_beside(policy).items():
            _add(root, parse_path(path), parse_path(beside)[-1].name, BUILTIN["token"], _TOKEN_RULE)
        self._steps = _frozen(root)

    def __call__(self, case: Case, tokens: Pseudonymizer) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _walk(case, self._steps, tokens, out)
        return out


def _add(
    level: list[list[Any]],
    segments: tuple[Segment, ...],
    leaf: str | None,
    transform: Transform,
    rule: FieldRule,
) -> None:
    """Add the path ``segments`` to the steps of ``level`` (its last name changed to
    ``leaf`` if given), sharing the steps its parents already have."""
    head, rest = segments[0], segments[1:]
    if not rest:
        level.append([head.name, head.is_list, None, leaf or head.name, transform, rule])
        return
    for step in level:
        if step[2] is not None and step[0] == head.name:
            _add(step[2], rest, leaf, transform, rule)
            return
    below: list[list[Any]] = []
    level.append([head.name, head.is_list, below, head.name, None, None])
    _add(below, rest, leaf, transform, rule)


def _frozen(level: list[list[Any]]) -> tuple[_Step, ...]:
    return tuple(
        (name, is_list, None if below is None else _frozen(below), key, transform, rule)
        for name, is_list, below, key, transform, rule in level
    )


def _walk(src: BaseModel, steps: tuple[_Step, ...], tokens: Pseudonymizer, out: dict[str, Any]) -> None:
    """Copy what ``steps`` name from ``src`` into ``out``, each leaf through its transform."""
    for name, is_list, below, key, transform, rule in steps:
        value = getattr(src, name, None)
        if value is None:
            continue
        if below is None:
            out[key] = transform.apply(value, rule, tokens)  # type: ignore[union-attr, arg-type]
        elif is_list:
            items = out.setdefault(name, [{} for _ in value])
            for item, target in zip(value, items, strict=True):
                _walk(item, below, tokens, target)
        else:
            _walk(value, below, tokens, out.setdefault(name, {}))


def disclosed_fields(policy: PurposePolicy) -> list[dict[str, str]]:
    """What a disclosure reveals, for the audit log: paths and transforms (the tokens
    beside numbers included), no values."""
    listed = [(path, rule.transform) for path, rule in policy.fields.items() if rule.transform != "drop"]
    beside = [(path, "token") for path in tokens_beside(policy).values()]
    return [{"path": path, "transform": transform} for path, transform in sorted(listed + beside)]
