"""The JSON Schema of exactly the ``data`` one partner receives for one purpose.

Built from the partner's policy: each listed path becomes a property, nested as
``minimize`` nests it, and each value is described by its transform (``json_schema``),
or, for a transform that keeps the field's type, by the field's own type in the case
model as it leaves (decimals as text, dates as ISO text). Dropped fields are absent;
every object forbids properties the policy does not list. A number or address that
leaves other than as its token has its token beside it (``number_token`` beside
``number``), described here like any listed field.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from gateway.placement.minimize import leaf_kind, parse_path, tokens_beside
from gateway.placement.transforms import BUILTIN, DECIMAL_PATTERN, Transform
from schemas import export
from schemas.case import Case
from schemas.partner import FieldRule, PurposePolicy

#: What a schema says of a field of the case model, not of the value a partner receives.
_MODEL_ONLY = ("title", "default")


@functools.cache
def _case_schema() -> dict[str, Any]:
    return Case.model_json_schema(mode="serialization")


def _resolve(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``schema`` with its ``$ref`` followed and a null alternative removed (a field the
    case lacks never leaves); and whether it was nullable."""
    nullable = False
    if "anyOf" in schema:
        others = [s for s in schema["anyOf"] if s.get("type") != "null"]
        nullable = len(others) < len(schema["anyOf"])
        schema = {**others[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
    ref = schema.get("$ref")
    if ref:
        schema = {**_case_schema()["$defs"][ref.rsplit("/", 1)[1]], **schema}
        del schema["$ref"]
    return schema, nullable


def field_schema(path: str) -> tuple[dict[str, Any], bool]:
    """The leaf at ``path`` as the case model describes it on the way out, and whether
    it is always there (not nullable, and no nullable object above it)."""
    schema, always = _case_schema(), True
    for segment in parse_path(path):
        schema, nullable = _resolve(schema["properties"][segment.name])
        always = always and not nullable
        if segment.is_list:
            schema, _ = _resolve(schema["items"])
    out = {k: v for k, v in schema.items() if k not in _MODEL_ONLY}
    if leaf_kind(path) == "number" and out.get("type") == "string":
        out["pattern"] = DECIMAL_PATTERN
    return out, always


def value_schema(path: str, rule: FieldRule, transform: Transform) -> dict[str, Any]:
    if transform.keeps_type:
        return field_schema(path)[0]
    return transform.json_schema(rule)


def token_beside_schema(path: str) -> dict[str, Any]:
    """The token that goes beside the number or address at ``path``."""
    schema = BUILTIN["token"].json_schema(FieldRule(transform="token"))
    return {
        **schema,
        "description": f"the token of {parse_path(path)[-1].name}: report it as number_token "
        "on every contact with this number or address",
    }


def _object() -> dict[str, Any]:
    return {"type": "object", "properties": {}, "required": [], "additionalProperties": False}


def _place(root: dict[str, Any], path: str, value: dict[str, Any], always: bool) -> None:
    """Put ``value`` at ``path`` in the object schema ``root``, making the objects and
    lists of objects on the way."""
    current = root
    segments = parse_path(path)
    for segment in segments[:-1]:
        if segment.name not in current["properties"]:
            inner = _object()
            current["properties"][segment.name] = (
                {"type": "array", "items": inner} if segment.is_list else inner
            )
        node = current["properties"][segment.name]
        current = node["items"] if segment.is_list else node
    last = segments[-1]
    current["properties"][last.name] = {"type": "array", "items": value} if last.is_list else value
    if always:
        _require(root, segments)


def _require(root: dict[str, Any], segments: Any) -> None:
    """Mark every step of a path that is always there as required."""
    current = root
    for segment in segments:
        if segment.name not in current["required"]:
            current["required"].append(segment.name)
        node = current["properties"][segment.name]
        current = node.get("items", node) if segment.is_list else node


def data_schema(
    partner_id: str, purpose: str, policy: PurposePolicy, transforms: Mapping[str, Transform]
) -> dict[str, Any]:
    """The JSON Schema of the ``data`` claim ``partner_id`` receives for ``purpose``."""
    root = _object()
    for path, rule in policy.fields.items():
        if rule.transform == "drop":
            continue
        _place(root, path, value_schema(path, rule, transforms[rule.transform]), field_schema(path)[1])
    for path, beside in tokens_beside(policy).items():
        _place(root, beside, token_beside_schema(path), field_schema(path)[1])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"data-{purpose}.schema.json",
        "title": f"Case data {partner_id} receives for {purpose}",
        "description": "The data claim of a package: only these fields, each as its transform gives it.",
        **root,
    }


#: The schemas of schemas/json/ every partner gets as they are.
SHARED = ("package-claims.schema.json", "status-event.schema.json")


def shared_schemas() -> dict[str, str]:
    """File name -> text of the package claims' and status events' schemas."""
    rendered = export.render()
    return {name: rendered[name] for name in SHARED}
