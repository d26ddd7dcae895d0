"""JSON Schema files for partners, generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.audit import AuditEntry
from schemas.case import Case
from schemas.events import StatusEvent
from schemas.package import PackageClaims
from schemas.partner import PartnerProfile

JSON_DIR = Path(__file__).parent / "json"

MODELS: dict[str, Any] = {
    "case.schema.json": Case,
    "partner-profile.schema.json": PartnerProfile,
    "package-claims.schema.json": PackageClaims,
    "status-event.schema.json": StatusEvent,
    "audit-entry.schema.json": AuditEntry,
}


def render() -> dict[str, str]:
    """File name -> file text, exactly as checked in."""
    out = {}
    for name, model in MODELS.items():
        schema = TypeAdapter(model).json_schema(by_alias=True)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": name, **schema}
        out[name] = json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return out


def stale(directory: Path = JSON_DIR) -> list[str]:
    """Names of files that are missing or differ from the models."""
    return [
        name
        for name, text in render().items()
        if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text
    ]


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
