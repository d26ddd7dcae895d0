"""What the fuzz bench knows of the gateway it attacks (`Target`), the values
hypothesis drew for it up front (`Pools`), and how values become bodies and paths."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bench.fuzzvalues import HOSTILE_TEXT, SchemaStrategies, draw_many, hostile, text


@dataclass
class Target:
    """What the fuzzer knows of the gateway under test."""

    document: dict[str, Any]
    routes: list[tuple[str, str, tuple[str, ...]]]
    """(method, path, roles) of each API route; no roles: no bearer token taken."""
    secrets: dict[str, bytes]
    receipts: dict[str, tuple[str, bytes]]
    """partner -> (callback format, secret) for partners reporting in a plugin's format."""
    tokens: dict[str, str]
    case_refs: dict[str, list[str]]
    """partner -> the refs of the cases placed with it."""
    case_ids: list[str]
    package_ids: list[str]
    partners: list[str]
    session: str
    real_case: dict[str, Any]


@dataclass
class Pools:
    """Examples drawn up front by hypothesis; requests pick and combine them."""

    bodies: dict[str, list[Any]]
    strings: list[Any]
    values: list[Any]

    @classmethod
    def draw(cls, document: dict[str, Any], size: int, seed: int) -> Pools:
        schemas = SchemaStrategies(document["components"])
        bodies = {}
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                content = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if content:
                    bodies[f"{method.upper()} {path}"] = draw_many(schemas.of(content["schema"]), size, seed)
        event = document["paths"]["/v1/partners/{partner_id}/callbacks"]["post"]["requestBody"]
        schema = event["content"]["application/json"]["schema"]
        clean = SchemaStrategies(document["components"], hostility=0)
        bodies["event"] = draw_many(clean.of(schema).filter(lambda e: isinstance(e, dict)), size, seed)
        strings = draw_many(text, size, seed) + HOSTILE_TEXT
        return cls(bodies, strings, draw_many(hostile, size, seed))


def encode(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")


def segment(value: Any) -> str:
    """``value`` as one percent-encoded path segment."""
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    return quote(raw, safe="") or "%20"
