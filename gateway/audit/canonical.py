"""RFC 8785 canonical JSON of audit leaves, fast for the shapes the log holds.

The `rfc8785` package is exact but pure Python (about 70 us per leaf here), which alone
would cap appends near 14k/s and make verifying a million leaves take minutes. Audit
entries hold only strings, small integers, booleans, lists and objects with BMP keys;
for those, RFC 8785 is "keys sorted, no whitespace, minimal escapes", which orjson
writes byte for byte once the keys are sorted. Anything
else (floats, big integers, non-BMP keys, where the orders or number formats differ)
falls back to `rfc8785`.
"""

from __future__ import annotations

import operator
import types
import typing
from typing import Any, Literal

import orjson
import pydantic_core
import rfc8785
from pydantic import BaseModel, PlainSerializer, WrapSerializer

_MAX_SAFE = 2**53  # I-JSON: larger integers are not exact in every parser
_dumps = orjson.dumps


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
        return _dumps(_sorted(data))
    except (_NeedsFullCanonicalizer, orjson.JSONEncodeError):  # the latter: lone surrogates
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


# Entries. orjson writes the escapes RFC 8785 asks for; with OPT_SORT_KEYS it sorts
# keys, in the RFC's order for the ASCII field names of a model, and with
# OPT_STRICT_INTEGER it refuses an integer outside the I-JSON range instead of writing
# it. So an entry whose fields are strings, booleans, literals, integers and lists of
# (or single) nested models of strings, booleans and literals is serialized straight
# from its `__dict__`, nested models from theirs (orjson's `default`, which it calls for
# an object it does not know, is a C getter: no Python call, no copy of a dict): no
# model_dump, no re-sort in Python, about a fifth of the time pydantic-core's own
# serializer takes (which was a fifth of an append). A model's `__dict__` holds its
# fields in their declared order (pydantic builds it so, validating or not), and the
# entry schemas declare theirs sorted: for such a class the sort is left out too (3-5%
# of an append, bench/audit.py). Any other class, and any class whose first fast result
# differs from the exact path, goes the exact way every time; so does an entry the fast
# path refuses (a big integer, a lone surrogate), and the exact path then says what is
# wrong with it.

#: Per entry class: how many fields it declares, the names of those that may be None
#: and of those that hold integers, and orjson's options for it; or None for classes
#: that take the exact path.
_Plan = tuple[int, tuple[str, ...], tuple[str, ...], int]
_PLANS: dict[type, _Plan | None] = {}
_UNPLANNED: Any = object()
_SORTED = orjson.OPT_STRICT_INTEGER
_UNSORTED = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_INT_OR_NONE = (int, type(None))
#: What orjson writes for an object it does not know: its `__dict__`. In an entry built
#: by validation, those are the nested models `_plain_model` accepts. What is trusted,
#: not checked per entry (a check of each nested model's class cost more than the
#: whole gain): that a value is of its field's declared type, so an object put into a
#: field without validation, or a nested model of a subclass with fields of its own,
#: would be written with its `__dict__` (and then refused by the schema check of
#: `gateway audit verify`). An object without a `__dict__` makes orjson raise, and the
#: exact path then says what is wrong.
_nested_fields = operator.attrgetter("__dict__")


def _declared(tp: Any) -> Any:
    """`tp` without `| None`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def canonical_entry(entry: BaseModel) -> bytes:
    """RFC 8785 canonical JSON of an audit entry: the exact bytes that are hashed."""
    plan = _PLANS.get(type(entry), _UNPLANNED)
    if plan is _UNPLANNED:
        plan = _plan(entry)
    if plan is not None:
        fast = _serialize(entry, plan)
        if fast is not None:
            return fast
    return _exact(entry)


def entry_fields(entry: BaseModel) -> dict[str, Any]:
    """The entry's fields as ``entry.model_dump(mode="json")`` gives them (its None
    fields included), for the events of committed actions (`Gateway.record`): for a
    class that takes the fast path above, straight from its `__dict__`, nested models
    from theirs (their fields are strings, booleans and literals), a twelfth of
    model_dump's time for a disclosure and its list of fields; else by model_dump."""
    plan = _PLANS.get(type(entry), _UNPLANNED)
    if plan is _UNPLANNED:
        plan = _plan(entry)
    fields = entry.__dict__
    if plan is None or len(fields) != plan[0] or any(type(fields[n]) not in _INT_OR_NONE for n in plan[2]):
        return entry.model_dump(mode="json")
    return {name: _fields_of(value) for name, value in fields.items()}


#: What a plain model's field holds as it is (anything else there is a nested model,
#: or a list: `_plain_type`). Types, not isinstance: a model class's instance check is slow.
_AS_IS = frozenset({str, int, bool, type(None)})


def _fields_of(value: Any) -> Any:
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is list:
        return [v if type(v) in _AS_IS else dict(v.__dict__) for v in value]
    return dict(value.__dict__)


def _exact(entry: BaseModel) -> bytes:
    return canonical_json(entry.model_dump(mode="json", exclude_none=True))


def _serialize(entry: BaseModel, plan: _Plan) -> bytes | None:
    fields = entry.__dict__
    count, optional, ints, options = plan
    if len(fields) != count:
        return None  # a key the model does not declare (model_copy(update=...))
    for name in ints:
        # A float where an integer belongs (a model changed without validation) is
        # written as 3.0 here and as 3 by the exact path.
        if type(fields[name]) not in _INT_OR_NONE:
            return None
    stripped = None
    for name in optional:
        if fields[name] is None:
            # A copy without it, in the same order (a dict copy is a C loop, a fifth of
            # the time of a comprehension that leaves out the None values).
            if stripped is None:
                stripped = fields = fields.copy()
            del stripped[name]
    try:
        return _dumps(fields, default=_nested_fields, option=options)
    except orjson.JSONEncodeError:
        return None


def _plan(entry: BaseModel) -> _Plan | None:
    cls = type(entry)
    optional: list[str] = []
    ints: list[str] = []
    plan: _Plan | None = None
    if _plain_model(cls):
        for name, info in cls.model_fields.items():
            if type(None) in typing.get_args(info.annotation) or info.default is None:
                optional.append(name)
            if _declared(info.annotation) is int:
                ints.append(name)
        options = _SORTED if _declared_sorted(cls) else _UNSORTED
        plan = (len(cls.model_fields), tuple(optional), tuple(ints), options)
        fast = _serialize(entry, plan)
        if fast is None:
            # This entry is refused (a float in an integer field, a big integer): the
            # class is judged by the next one, not sent the exact way for good.
            return None
        # Trust it only once it gave the exact bytes.
        if fast != _exact(entry):
            plan = None
    _PLANS[cls] = plan
    return plan


def _declared_sorted(cls: type[BaseModel]) -> bool:
    """Whether `cls` and the models nested in it declare their fields in sorted order
    (their ASCII names: RFC 8785's order)."""
    names = list(cls.model_fields)
    if names != sorted(names):
        return False
    for info in cls.model_fields.values():
        tp = _declared(info.annotation)
        if typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        if isinstance(tp, type) and issubclass(tp, BaseModel) and not _declared_sorted(tp):
            return False
    return True


def _plain_model(cls: type, *, nested: bool = False) -> bool:
    """A model serialized as its `__dict__`: plain fields, no aliases, extras,
    exclusions or custom serializers; a nested one declares only strings, booleans and
    literals, with no None default and no field declared `int` (its `__dict__` is
    written as it is, with no per-entry check)."""
    if not isinstance(cls, type) or not issubclass(cls, BaseModel):
        return False
    if (
        cls.model_config.get("extra") == "allow"
        or cls.model_computed_fields
        or cls.__pydantic_decorators__.field_serializers
        or cls.__pydantic_decorators__.model_serializers
        or cls.__pydantic_root_model__
    ):
        return False
    for name, info in cls.model_fields.items():
        if not name.isascii() or info.exclude or info.serialization_alias not in (None, name):
            return False
        if getattr(info, "exclude_if", None) is not None or any(
            isinstance(item, PlainSerializer | WrapSerializer) for item in info.metadata
        ):
            return False
        if info.alias not in (None, name):
            return False
        kind = _plain_type(info.annotation, nested=nested)
        if kind is None or (nested and kind != "scalar"):
            return False
        if nested and (info.default is None or _declared(info.annotation) is int):
            return False
    return True


def _plain_type(tp: Any, *, nested: bool = False) -> str | None:
    """"scalar", "model", "list of models", or None (take the exact path)."""
    if tp is str or tp is bool or tp is int:
        return "scalar"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "scalar" if all(type(a) in (str, bool, int) for a in args) else None
    if origin is typing.Union or origin is types.UnionType:
        if nested:
            return None  # a None in a nested model would be written as null
        kinds = {_plain_type(a) for a in args if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 and None not in kinds else None
    if origin is list and len(args) == 1:
        item = args[0]
        if item is str or item is bool or item is int:
            return "scalar"
        return "list of models" if _plain_model(item, nested=True) else None
    if _plain_model(tp, nested=True):
        return "model"
    return None
