"""``GET /metrics`` in the Prometheus text format (see `gateway.ops.metrics`).

On the API port it needs an operator or auditor token (Prometheus sends it with
``authorization: {credentials_file: ...}``). With ``metrics_port`` set, `gateway
serve` and `gateway dispatch` also answer ``/metrics`` without a token on
``metrics_host:metrics_port`` (127.0.0.1 by default): a port for the scraper only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.core import Gateway
from gateway.errors import GatewayError
from gateway.http.appkeys import GATEWAY
from gateway.http.operator import principal
from gateway.ops.metrics import exposition

#: What `prometheus_client.generate_latest` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def _answer(gw: Gateway) -> web.Response:
    body = await exposition(gw.db, gw.now())
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def metrics(request: web.Request) -> web.Response:
    await principal(request, "operator", "auditor")
    return await _answer(request.app[GATEWAY])


@contextlib.asynccontextmanager
async def listener(gw: Gateway, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``/metrics`` without a token on ``host:port`` while the block runs; yields
    the port (useful with 0)."""
    app = web.Application()

    async def scrape(request: web.Request) -> web.Response:
        return await _answer(gw)

    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise GatewayError(f"cannot listen for metrics on {host}:{port}: {exc.strerror or exc}") from None
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context for the metrics port (``metrics_port`` set)."""

    async def ctx() -> AsyncIterator[None]:
        gw = app[GATEWAY]
        async with listener(gw, gw.settings.metrics_host, gw.settings.metrics_port):
            yield

    return ctx()
