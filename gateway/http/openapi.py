"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema

from gateway.http.routes import Query, Route
from schemas.api import Problem
from schemas.events import StatusEvent

REF = "#/components/schemas/{model}"


def document(routes: list[Route], version: str) -> dict[str, Any]:
    models = {Problem}
    for route in routes:
        models.update(m for m in (route.request, route.response) if m is not None)
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas = defs.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "operationId": route.handler.__name__,
            "summary": route.summary,
            "tags": list(route.tags),
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", route.path)
            ]
            + [_query(name, spec) for name, spec in route.query.items()],
            "responses": {
                str(route.status): _response(route),
                "default": {
                    "description": "RFC 9457 problem",
                    "content": {
                        "application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}
                    },
                },
            },
        }
        if route.roles:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Roles: {', '.join(route.roles)} (admin may do everything)."
        else:
            op["security"] = []
        if route.request is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model=route.request.__name__)}}
                },
            }
        if route.path.endswith("/callbacks"):
            op["parameters"] += [
                {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
                for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
            ]
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": REF.format(model="StatusEvent")}}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    schemas.update(_status_event_schemas())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agency Gateway", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _query(name: str, spec: str | Query) -> dict[str, Any]:
    query = spec if isinstance(spec, Query) else Query(spec)
    return {
        "name": name,
        "in": "query",
        "description": query.description,
        "required": query.required,
        "schema": query.schema(),
    }


def _response(route: Route) -> dict[str, Any]:
    if not route.media.endswith("json"):
        return {"description": "OK", "content": {route.media: {"schema": {"type": "string"}}}}
    if route.response is None:
        return {"description": "OK", "content": {"application/json": {"schema": {}}}}
    return {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": REF.format(model=route.response.__name__)}}},
    }


def _status_event_schemas() -> dict[str, Any]:
    from pydantic import TypeAdapter

    schema = TypeAdapter(StatusEvent).json_schema(ref_template=REF)
    defs = schema.pop("$defs", {})
    return {**defs, "StatusEvent": schema}
