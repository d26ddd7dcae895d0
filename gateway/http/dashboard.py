"""Read-only routes for dashboards and tools (roles ``operator`` and ``auditor``):
deliveries with why they wait, violations, attestations, breakers, tokens (never a
secret) and a summary of the metrics. The CLI shows the same rows."""

from __future__ import annotations

from aiohttp import web

from gateway.delivery import control
from gateway.errors import InvalidInput
from gateway.http.appkeys import GATEWAY
from gateway.http.operator import principal
from gateway.http.routes import Query, json_response, known_query
from gateway.onboarding import tokens
from gateway.ops import metrics
from gateway.supervision import scorecards as supervision

ROLES = ("operator", "auditor")
STATES = ("queued", "sending", "retry_wait", "delivered", "dead", "recalled")
MAX_LIMIT = 1000
LIMIT = Query(
    f"most rows returned (default 50, at most {MAX_LIMIT})", "integer", minimum=1, maximum=MAX_LIMIT
)
DELIVERY_QUERY: dict[str, str | Query] = {
    "partner": Query("only this partner"),
    "state": Query("only this state", enum=STATES),
    "limit": LIMIT,
}
VIOLATION_QUERY: dict[str, str | Query] = {"partner": Query("only this partner"), "limit": LIMIT}
ATTESTATION_QUERY: dict[str, str | Query] = {
    "overdue": Query("only those past their deadline (default false)", "boolean")
}


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}, not {raw[:20]!r}")
    return int(raw)


async def list_deliveries(request: web.Request) -> web.Response:
    await principal(request, *ROLES)
    known_query(request, DELIVERY_QUERY)
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}")
    gw = request.app[GATEWAY]
    rows = await control.deliveries(gw, request.query.get("partner"), state, _limit(request))
    return json_response(rows)


async def list_violations(request: web.Request) -> web.Response:
    await principal(request, *ROLES)
    known_query(request, VIOLATION_QUERY)
    gw = request.app[GATEWAY]
    return json_response(await supervision.violations(gw, request.query.get("partner"), _limit(request)))


async def list_attestations(request: web.Request) -> web.Response:
    await principal(request, *ROLES)
    known_query(request, ATTESTATION_QUERY)
    overdue = request.query.get("overdue", "false")
    if overdue not in ("true", "false"):
        raise InvalidInput("overdue must be true or false")
    rows = await supervision.overdue_attestations(request.app[GATEWAY], overdue_only=overdue == "true")
    return json_response(rows)


async def list_breakers(request: web.Request) -> web.Response:
    await principal(request, *ROLES)
    known_query(request, {})
    return json_response(await control.breakers(request.app[GATEWAY]))


async def list_tokens(request: web.Request) -> web.Response:
    await principal(request, *ROLES)
    known_query(request, {})
    return json_response(await tokens.list_tokens(request.app[GATEWAY]))


async def metrics_summary(request: web.Request) -> web.Response:
    await principal(request, *ROLES)
    known_query(request, {})
    gw = request.app[GATEWAY]
    return json_response(await metrics.summary(gw.db, gw.now()))
