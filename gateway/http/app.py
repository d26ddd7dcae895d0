"""``create_app(settings)``: the aiohttp application of ``gateway serve``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib import metadata

from aiohttp import web

from gateway.audit import timer as checkpoint_timer
from gateway.config import Settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.http import auditor, operator
from gateway.http.appkeys import GATEWAY, SETTINGS
from gateway.http.callbacks import MAX_BODY, receive, receive_in_format
from gateway.http.openapi import document
from gateway.http.problems import problems
from gateway.http.routes import Route, json_response
from gateway.inbound import poller
from schemas.api import CallbackResponse, PlacementRequest, PlacementResponse, RecallRequest, RecallResponse


async def jwks(request: web.Request) -> web.Response:
    return json_response(request.app[GATEWAY].custody.public_jwks())


async def healthz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    async with gw.db.transaction() as tx:
        await tx.fetchval("SELECT 1")
    return json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(document(ROUTES, metadata.version("agency-gateway")))


ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/partners/{partner_id}/callbacks",
        receive,
        "A partner reports a status event (Standard Webhooks signature)",
        response=CallbackResponse,
        status=202,
        tags=("partners",),
    ),
    Route(
        "POST",
        "/v1/partners/{partner_id}/callbacks/{format}",
        receive_in_format,
        "A partner reports in a callback format its profile names (a plugin's);"
        " a report the format finds nothing to take in (an interim status) is answered 200",
        response=CallbackResponse,
        status=202,
        tags=("partners",),
    ),
    Route(
        "POST",
        "/v1/placements",
        operator.create_placement,
        "Place a case with a partner",
        ("operator",),
        PlacementRequest,
        PlacementResponse,
        201,
    ),
    Route(
        "POST",
        "/v1/recalls",
        operator.create_recall,
        "Recall a case and demand a deletion attestation",
        ("operator",),
        RecallRequest,
        RecallResponse,
        201,
    ),
    Route(
        "GET",
        "/v1/packages/{package_id}",
        operator.get_package,
        "A package as the partner reads it",
        ("operator",),
    ),
    Route("GET", "/v1/cases/{case_id}", operator.get_case, "A case's timeline and violations", ("operator",)),
    Route(
        "GET", "/v1/partners", operator.list_partners, "Partners and their status", ("operator", "auditor")
    ),
    Route(
        "GET",
        "/v1/partners/{partner_id}/scorecard",
        operator.get_scorecard,
        "A partner's scorecard",
        ("operator", "auditor"),
    ),
    Route(
        "GET",
        "/v1/audit/checkpoint",
        auditor.latest_checkpoint,
        "Latest signed checkpoint",
        ("auditor",),
        tags=("audit",),
    ),
    Route(
        "GET",
        "/v1/audit/entries",
        auditor.list_entries,
        "Log entries by range and filter",
        ("auditor",),
        tags=("audit",),
        query=auditor.ENTRY_QUERY,
    ),
    Route(
        "GET",
        "/v1/audit/proofs/inclusion/{index}",
        auditor.inclusion,
        "Inclusion proof of one entry",
        ("auditor",),
        tags=("audit",),
        query=auditor.INCLUSION_QUERY,
    ),
    Route(
        "GET",
        "/v1/audit/proofs/consistency",
        auditor.consistency,
        "Consistency proof between two sizes",
        ("auditor",),
        tags=("audit",),
        query=auditor.CONSISTENCY_QUERY,
    ),
    Route("GET", "/.well-known/jwks.json", jwks, "The bank's public signing keys", tags=("public",)),
    Route("GET", "/healthz", healthz, "Liveness and database check", tags=("public",)),
    Route("GET", "/openapi.json", openapi, "This document", tags=("public",)),
]


def create_app(
    settings: Settings, *, gateway: Gateway | None = None, workers: bool = False
) -> web.Application:
    """Build the app; the gateway (database, keys, plugins) opens on startup and closes
    on cleanup, unless an open one is passed in (tests, embedding). With ``workers``, the
    dispatcher, the poller and the audit checkpoint timer run in the same process and
    stop cleanly with it."""
    app = web.Application(middlewares=[problems], client_max_size=MAX_BODY + 1024)
    app[SETTINGS] = settings

    async def gateway_ctx(app: web.Application) -> AsyncIterator[None]:
        if gateway is not None:
            app[GATEWAY] = gateway
            yield
            return
        async with await Gateway.open(settings) as gw:
            app[GATEWAY] = gw
            yield

    async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
        gw = app[GATEWAY]
        dispatcher = Dispatcher(gw)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(dispatcher.run()),
            asyncio.create_task(poller.run(gw, stop)),
            asyncio.create_task(
                checkpoint_timer.run(gw.db, gw.audit_signer, stop, gw.settings.audit_checkpoint_seconds)
            ),
        ]
        yield
        dispatcher.stop()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(gateway_ctx)
    if workers:
        app.cleanup_ctx.append(workers_ctx)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app
