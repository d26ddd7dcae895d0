"""``POST /v1/partners/{partner_id}/callbacks``: signed status reports from partners."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.http.appkeys import GATEWAY
from gateway.http.routes import read_body, require_json
from gateway.inbound import pipeline as inbound
from gateway.inbound import webhooks
from gateway.onboarding import registry

MAX_BODY = 1024 * 1024


async def receive(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    partner_id = request.match_info["partner_id"]
    require_json(request)
    body = await read_body(request, MAX_BODY)

    def check(record: registry.PartnerRecord) -> tuple[str, Any]:
        """Signature first (401), then the body (422); run inside the pipeline's
        transaction, after the partner was found (404)."""
        webhook_id = webhooks.verify(
            request.headers,
            body,
            secrets=gw.keys.webhook_secrets(partner_id),
            public_keys=gw.keys.partner_signature_keys(record.profile.jwks),
            now=gw.now().timestamp(),
        )
        return webhook_id, inbound.parse_event(body)

    result = await inbound.admit(gw, partner_id, body, channel="callback", check=check)
    return web.json_response(
        {
            "event_id": result.event_id,
            "state": result.state,
            "violations": [b.rule for b in result.violations],
        },
        status=202,
    )
