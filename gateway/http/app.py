"""``create_app(settings)``: the aiohttp application of ``gateway serve``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib import metadata

from aiohttp import web

from gateway.config import Settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.http import auditor, dashboard, erasures, health, metrics, operator
from gateway.http.appkeys import GATEWAY, SETTINGS, TIMEOUTS, WORKERS, Timeouts
from gateway.http.callbacks import MAX_BODY, receive, receive_in_format
from gateway.http.observe import observe
from gateway.http.openapi import document
from gateway.http.problems import problem, problems, refusals
from gateway.http.routes import Route, json_response, parameters
from gateway.http.ui import mount as mount_dashboard
from gateway.http.workers import Workers
from gateway.inbound import poller
from gateway.lifecycle import timer as retention_timer
from gateway.ops import watch
from schemas import ops
from schemas.api import (
    CallbackResponse,
    ErasureRequest,
    PlacementRequest,
    PlacementResponse,
    RecallRequest,
    RecallResponse,
)

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
    """`SECURITY_HEADERS` on every answer; a handler that says how its answer may be
    cached (public checkpoints and tiles, which hold no personal data) keeps that."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def jwks(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    return json_response(gw.custody.public_jwks(gw.now()))


async def healthz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    async with gw.db.transaction() as tx:
        await tx.fetchval("SELECT 1")
    if dead := request.app[WORKERS].dead():
        return problem(503, f"background tasks stopped: {', '.join(dead)} (see the log); restart the gateway")
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
        "POST",
        "/v1/erasures",
        erasures.create_erasure,
        "A data subject's erasure request: recall everywhere, delete locally",
        ("operator",),
        ErasureRequest,
        ops.ErasureStatus,
        status=201,
    ),
    Route(
        "GET",
        "/v1/erasures/{erasure_id}",
        erasures.get_erasure,
        "Where an erasure request stands, per partner",
        ("operator", "auditor"),
        response=ops.ErasureStatus,
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
        "Latest signed checkpoint note with cosignatures (text/plain; JSON on Accept: application/json)",
        tags=("audit", "public"),
        media="text/plain",
    ),
    Route(
        "GET",
        "/v1/audit/tile/{level}/{index}",
        auditor.tile,
        "C2SP tlog-tiles: a tile of hashes (public) or, at level 'entries', an entry bundle (auditor)",
        tags=("audit", "public"),
        match="/v1/audit/tile/{level}/{index:.+}",
        media="application/octet-stream",
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
        "GET", "/healthz", healthz, "Liveness: the database, and the background tasks (503 if one died)",
        response=ops.Health, tags=("public",),
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


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    gw, workers = app[GATEWAY], app[WORKERS]
    dispatcher = Dispatcher(gw)
    stop = asyncio.Event()
    workers.start("dispatcher", dispatcher.run())
    workers.start("poller", poller.run(gw, stop))
    workers.start("watch", watch.run(gw, stop))
    if gw.settings.retention_seconds > 0:
        workers.start("retention timer", retention_timer.run(gw, stop, gw.settings.retention_seconds))
    yield
    dispatcher.stop()
    stop.set()
    await workers.stop()

async def upkeep_ctx(app: web.Application) -> AsyncIterator[None]:
    # Appended before the workers: cleaned up after them, so the last checkpoint
    # covers what the dispatcher wrote as it stopped.
    async with app[GATEWAY].audit_upkeep(final=True):
        yield


def create_app(
    settings: Settings, *, gateway: Gateway | None = None, workers: bool = False,
    timeouts: Timeouts | None = None, upkeep: bool | None = None,
) -> web.Application:
    """Build the app; the gateway (database, keys, plugins) opens on startup and closes
    on cleanup, unless an open one is passed in (tests, embedding). With ``workers``, the
    dispatcher, the poller and the operations watch run in the same process and stop
    cleanly with it. With ``upkeep`` (by default with ``workers``; ``gateway serve``
    always), the audit checkpoint timer and witness submissions run too, and a last
    checkpoint is signed and submitted at shutdown. ``timeouts`` bound how long a client
    may take to send a request; a request refused before any handler runs is logged in
    one line."""
    timeouts = timeouts or Timeouts()
    app = web.Application(
        middlewares=[observe, problems, parameters],
        client_max_size=MAX_BODY + 1024,
        handler_args={"keepalive_timeout": timeouts.header, "logger": refusals},
    )
    app[SETTINGS] = settings
    app[TIMEOUTS] = timeouts
    app[WORKERS] = Workers()
    app.on_response_prepare.append(secure_headers)

    async def gateway_ctx(app: web.Application) -> AsyncIterator[None]:
        if gateway is not None:
            app[GATEWAY] = gateway
            yield
            return
        async with await Gateway.open(settings) as gw:
            app[GATEWAY] = gw
            yield

    app.cleanup_ctx.append(gateway_ctx)
    if settings.metrics_port:
        app.cleanup_ctx.append(metrics.listener_ctx)
    if workers if upkeep is None else upkeep:
        app.cleanup_ctx.append(upkeep_ctx)
    if workers:
        app.cleanup_ctx.append(workers_ctx)
    for route in ROUTES:
        app.router.add_route(route.method, route.match or route.path, route.handler)
    mount_dashboard(app)  # the supervisor dashboard under /ui (gateway.http.ui)
    return app
