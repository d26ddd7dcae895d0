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
from gateway.http import auditor, dashboard, health, metrics, operator
from gateway.http.appkeys import GATEWAY, SETTINGS
from gateway.http.callbacks import MAX_BODY, receive, receive_in_format
from gateway.http.observe import observe
from gateway.http.openapi import document
from gateway.http.problems import problems
from gateway.http.routes import Route, json_response, parameters
from gateway.http.ui import mount as mount_dashboard
from gateway.inbound import poller
from gateway.ops import watch
from schemas import ops
from schemas.api import CallbackResponse, PlacementRequest, PlacementResponse, RecallRequest, RecallResponse

#: On every answer, data or problem: operator and auditor answers hold personal data,
#: so none is kept by a browser or proxy cache, read as another type than it says,
#: framed by a page, or named as a referrer by one.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


async def jwks(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    return json_response(gw.custody.public_jwks(gw.now()))


async def healthz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    async with gw.db.transaction() as tx:
        await tx.fetchval("SELECT 1")
    return json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(document(ROUTES, metadata.version("agency-gateway")))


def dashboard_routes() -> list[Route]:
    """Read-only routes for dashboards and tools (`gateway.http.dashboard`)."""
    roles = dashboard.ROLES
    tags = ("operations",)
    return [
        Route("GET", "/v1/deliveries", dashboard.list_deliveries, "Packages with why each waits", roles,
              response=ops.Deliveries, tags=tags, query=dashboard.DELIVERY_QUERY),
        Route("GET", "/v1/violations", dashboard.list_violations, "Violations, newest first", roles,
              response=ops.Violations, tags=tags, query=dashboard.VIOLATION_QUERY),
        Route("GET", "/v1/attestations", dashboard.list_attestations, "Recalls awaiting deletion", roles,
              response=ops.Attestations, tags=tags, query=dashboard.ATTESTATION_QUERY),
        Route("GET", "/v1/breakers", dashboard.list_breakers, "Circuit breakers per partner", roles,
              response=ops.Breakers, tags=tags),
        Route("GET", "/v1/tokens", dashboard.list_tokens, "API tokens (never a secret)", roles,
              response=ops.Tokens, tags=tags),
        Route("GET", "/v1/metrics/summary", dashboard.metrics_summary, "Shared-state gauges as JSON", roles,
              response=ops.MetricsSummary, tags=tags),
    ]  # fmt: skip


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
        "A partner reports in a callback format its profile names (a plugin's)",
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
        response=ops.PackageView,
    ),
    Route(
        "GET",
        "/v1/cases/{case_id}",
        operator.get_case,
        "A case's timeline and violations",
        ("operator",),
        response=ops.CaseTimeline,
    ),
    Route(
        "GET",
        "/v1/partners",
        operator.list_partners,
        "Partners and their status",
        ("operator", "auditor"),
        response=ops.Partners,
    ),
    Route(
        "GET",
        "/v1/partners/{partner_id}/scorecard",
        operator.get_scorecard,
        "A partner's scorecard",
        ("operator", "auditor"),
        response=ops.Scorecard,
    ),
    *dashboard_routes(),
    Route(
        "GET",
        "/v1/audit/checkpoint",
        auditor.latest_checkpoint,
        "Latest signed checkpoint",
        ("auditor",),
        response=ops.Checkpoint,
        tags=("audit",),
    ),
    Route(
        "GET",
        "/v1/audit/entries",
        auditor.list_entries,
        "Log entries by range and filter",
        ("auditor",),
        response=ops.EntriesPage,
        tags=("audit",),
        query=auditor.ENTRY_QUERY,
    ),
    Route(
        "GET",
        "/v1/audit/proofs/inclusion/{index}",
        auditor.inclusion,
        "Inclusion proof of one entry",
        ("auditor",),
        response=ops.InclusionProof,
        tags=("audit",),
        query=auditor.INCLUSION_QUERY,
    ),
    Route(
        "GET",
        "/v1/audit/proofs/consistency",
        auditor.consistency,
        "Consistency proof between two sizes",
        ("auditor",),
        response=ops.ConsistencyProof,
        tags=("audit",),
        query=auditor.CONSISTENCY_QUERY,
    ),
    Route(
        "GET", "/.well-known/jwks.json", jwks, "The bank's public signing keys",
        response=ops.JWKS, tags=("public",),
    ),
    Route(
        "GET", "/healthz", healthz, "Liveness and database check", response=ops.Health, tags=("public",)
    ),
    Route(
        "GET",
        "/readyz",
        health.readyz,
        "Readiness: database, schema, keys, background tasks, checkpoint lag (503: a problem naming them)",
        response=ops.Readiness,
        tags=("public",),
    ),
    Route(
        "GET",
        "/metrics",
        metrics.metrics,
        "Prometheus metrics (text format)",
        ("operator", "auditor"),
        tags=("operations",),
        media="text/plain; version=0.0.4",
    ),
    Route("GET", "/openapi.json", openapi, "This document", response=ops.OpenAPIDocument, tags=("public",)),
]


def create_app(
    settings: Settings, *, gateway: Gateway | None = None, workers: bool = False
) -> web.Application:
    """Build the app; the gateway (database, keys, plugins) opens on startup and closes
    on cleanup, unless an open one is passed in (tests, embedding). With ``workers``, the
    dispatcher, the poller and the audit checkpoint timer run in the same process and
    stop cleanly with it."""
    app = web.Application(middlewares=[observe, problems, parameters], client_max_size=MAX_BODY + 1024)
    app[SETTINGS] = settings
    app.on_response_prepare.append(secure_headers)

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
            asyncio.create_task(watch.run(gw, stop)),
        ]
        names = ["dispatcher", "poller", "checkpoint timer", "watch"]
        # /readyz reports a task that ended; the timer ends at once when it is off.
        timer_off = gw.settings.audit_checkpoint_seconds <= 0
        app[health.WORKER_TASKS] = {
            n: t for n, t in zip(names, tasks, strict=True) if not (timer_off and n == "checkpoint timer")
        }
        yield
        dispatcher.stop()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(gateway_ctx)
    if settings.metrics_port:
        app.cleanup_ctx.append(metrics.listener_ctx)
    if workers:
        app.cleanup_ctx.append(workers_ctx)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    mount_dashboard(app)  # the supervisor dashboard under /ui (gateway.http.ui)
    return app
