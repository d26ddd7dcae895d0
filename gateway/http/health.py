"""``GET /readyz``: whether this instance should get traffic. ``/healthz`` stays the
liveness check (the process answers, the database too).

Checked, each named in the 503 problem document when it fails: the database answers,
its schema is the version this release knows, the bank's keys are readable, the
background tasks `gateway serve` started are alive, and no audit entry has waited
longer than ``checkpoint_max_lag_seconds`` for a signed checkpoint.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.core import Gateway
from gateway.http.appkeys import GATEWAY, WORKERS
from gateway.http.routes import json_response
from gateway.http.workers import Workers
from gateway.ops.checks import audit_state
from gateway.storage.migrations import MIGRATIONS

#: The background tasks of `gateway serve` by name (set by the app when it starts them).
#: Longest a readiness check of the database may take.
CHECK_TIMEOUT = 5.0


async def _database(gw: Gateway, results: dict[str, str]) -> None:
    async with asyncio.timeout(CHECK_TIMEOUT), gw.db.transaction() as tx:
        version = await tx.fetchval("SELECT MAX(version) FROM schema_version")
        audit = await audit_state(tx)
    results["database"] = "ok"
    results["schema"] = (
        "ok" if version == len(MIGRATIONS)
        else f"the database is at version {version}, this release needs {len(MIGRATIONS)}"
    )  # fmt: skip
    results["checkpoint"] = audit.overdue(gw.now(), gw.settings.checkpoint_max_lag_seconds) or "ok"


def _keys(gw: Gateway) -> None:
    gw.custody.package_signer()
    gw.custody.audit_log_key()
    gw.keys.public_jwks()
    gw.keys.pseudonymizer("audit")


def _workers(workers: Workers) -> str | None:
    dead = workers.dead()
    return f"background tasks stopped: {', '.join(dead)} (see the log)" if dead else None


async def checks(app: web.Application) -> dict[str, str]:
    """Each check's result: "ok", or what is wrong."""
    gw = app[GATEWAY]
    results: dict[str, str] = {}
    try:
        await _database(gw, results)
    except Exception as exc:  # any failure to read is the finding
        results["database"] = f"unreachable ({type(exc).__name__})"
    try:
        _keys(gw)
        results["keys"] = "ok"
    except Exception as exc:  # a key store error names the file
        results["keys"] = f"{type(exc).__name__}: {exc}"
    workers = app[WORKERS]
    results["workers"] = "not run here" if not workers.started() else _workers(workers) or "ok"
    return results


async def readyz(request: web.Request) -> web.Response:
    results = await checks(request.app)
    failed = {k: v for k, v in results.items() if v not in ("ok", "not run here")}
    if not failed:
        return json_response({"status": "ready", "checks": results})
    return json_response(
        {
            "type": "/problems/not-ready",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "not ready: " + "; ".join(f"{k}: {v}" for k, v in failed.items()),
            "checks": results,
        },
        status=503,
        content_type="application/problem+json",
    )
