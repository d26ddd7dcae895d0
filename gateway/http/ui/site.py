"""The dashboard as a sub-application of ``gateway serve``: the pages, the actions and
what every request to them goes through (`gateway.http.ui.web`)."""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.http.ui import actions, pages
from gateway.http.ui.format import FILTERS
from gateway.http.ui.web import HERE, guard, ui_headers


def create() -> web.Application:
    ui = web.Application(middlewares=[guard])
    env = aiohttp_jinja2.setup(
        ui,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    ui.on_response_prepare.append(ui_headers)
    ui.router.add_static("/static", HERE / "static", name="static")
    for method, path, handler in [*pages.ROUTES, *actions.ROUTES]:
        ui.router.add_route(method, path, handler)
    return ui


async def to_ui(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def mount(app: web.Application) -> None:
    """Serve the dashboard under ``/ui`` of ``app``."""
    app.router.add_get("/ui", to_ui)  # before the sub-application, which takes /ui/...
    app.add_subapp("/ui", create())
