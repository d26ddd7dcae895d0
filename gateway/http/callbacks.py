"""``POST /v1/partners/{partner_id}/callbacks``: signed status reports from partners.

The signature is verified before the report joins the writers (`gateway.storage.groups`):
a forged or unsigned request never holds a transaction, and it is answered the same
way (401, one problem document) whether or not the partner id exists.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core import Gateway
from gateway.errors import InvalidInput, Unauthorized
from gateway.http.appkeys import GATEWAY
from gateway.http.routes import json_response, read_body, require_json
from gateway.inbound import pipeline as inbound
from gateway.inbound import webhooks
from gateway.inbound.formats import Credentials
from gateway.onboarding import golive, registry

MAX_BODY = 1024 * 1024
#: The longest message id a report may carry, as ``webhook-id`` (`webhooks.read`).
MAX_MESSAGE_ID = 200


async def receive(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    partner_id = request.match_info["partner_id"]
    require_json(request)
    body = await _body(request)
    webhook_id = await _verified(gw, partner_id, request, body)
    return _answer(
        partner_id, await inbound.ingest(gw, partner_id, body, channel="callback", webhook_id=webhook_id)
    )


async def _body(request: web.Request) -> bytes:
    """The report's body. A report is small and mostly comes whole with its headers: one
    already received in full (within the limit) is taken as it is, without arming the
    body timeout `read_body` sets for a body still on its way."""
    length = request.content_length
    if length is not None and length <= MAX_BODY and request.content.is_eof():
        return await request.read()
    return await read_body(request, MAX_BODY)


async def _verified(gw: Gateway, partner_id: str, request: web.Request, body: bytes) -> str:
    """The report's webhook id once its signature is verified. A refusal while the
    partner's go-live test waits ends that test, telling the bank's operator why."""
    signed = None
    try:
        signed = webhooks.read(request.headers, now=gw.now().timestamp())
        secrets, keys = await _signing_keys(gw, partner_id, signed)
        return webhooks.verify(signed, body, secrets=secrets, public_keys=keys)
    except (Unauthorized, InvalidInput) as refusal:
        golive.refused(gw, partner_id, signed, str(refusal))
        raise


async def receive_in_format(request: web.Request) -> web.StreamResponse:
    """``POST /v1/partners/{partner_id}/callbacks/{format}``: a report in a format a
    plugin registered (an SMS provider's delivery receipt, say), for a partner whose
    profile names that ``callback_format``. The format authenticates the report and maps
    it to one status event; from there it is taken in as any callback is."""
    gw = request.app[GATEWAY]
    partner_id, name = request.match_info["partner_id"], request.match_info["format"]
    body = await read_body(request, MAX_BODY)
    fmt = gw.callback_formats.get(name)
    record = await registry.find(gw, partner_id) if registry.could_be_id(partner_id) else None
    if fmt is None or record is None or record.profile.callback_format != name:
        raise Unauthorized(webhooks.REFUSED)  # the same answer whatever is wrong
    credentials = Credentials(
        gw.keys.webhook_secrets(partner_id), gw.keys.partner_signature_keys(record.profile.jwks)
    )
    message_id = fmt.verify(request.headers, body, credentials, gw.now().timestamp())
    if len(message_id) > MAX_MESSAGE_ID or not message_id.isprintable():
        # As for a webhook-id: what a format reads from the report (a NUL, which
        # PostgreSQL refuses in text, was a 500) is refused before it is stored.
        raise InvalidInput(f"the report's message id must be at most {MAX_MESSAGE_ID} printable characters",
                           status=422)  # fmt: skip
    event = fmt.event_json(body)
    if event is None:
        return json_response({"ignored": "the report carries no status the gateway takes in"}, status=200)
    return _answer(
        partner_id, await inbound.ingest(gw, partner_id, event, channel="callback", webhook_id=message_id)
    )


def _answer(partner_id: str, result: inbound.Ingested) -> web.Response:
    return json_response(
        {
            "event_id": result.event_id,
            "state": result.state,
            # A late report may reveal another partner's breach: that is not this partner's to see.
            "violations": [
                b.rule for b in result.violations if b.contact is None or b.contact.partner == partner_id
            ],
            "partner_status": result.partner_status,
        },
        status=202,
    )


async def _signing_keys(
    gw: Gateway, partner_id: str, signed: webhooks.Signed
) -> tuple[Sequence[bytes], Sequence[Ed25519PublicKey]]:
    """What ``signed`` is verified against: the partner's ``whsec_`` secrets if ``v1``
    signatures came, its Ed25519 keys if ``v1a`` ones did (its profile names their file,
    so only then is its row read); nothing for an id that is no partner's."""
    if not registry.could_be_id(partner_id):
        return (), ()
    secrets = gw.keys.webhook_secrets(partner_id) if signed.v1 else ()
    keys: Sequence[Ed25519PublicKey] = ()
    if signed.v1a and (record := await registry.find(gw, partner_id)) is not None:
        keys = gw.keys.partner_signature_keys(record.profile.jwks)
    return secrets, keys
