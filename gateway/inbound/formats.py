"""Callback formats: how a partner's report is authenticated and read.

The built-in format is Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` with ``v1`` HMAC-SHA256 or ``v1a`` Ed25519) carrying one status
event of ``schemas/events.py``. Providers that cannot send that (an SMS provider's
delivery receipts, say) get a format of their own through
``gateway_register_callback_formats``; a profile chooses it with ``callback_format``.
Whatever the format, what it returns goes through the same pipeline: dedupe by message
id, validation against the status-event schema, rules, audit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.inbound import webhooks


@dataclass(frozen=True)
class Credentials:
    """What the bank holds to authenticate one partner's reports."""

    #: The partner's shared secrets (``keys/partners/ID.whsec``), newest last.
    secrets: Sequence[bytes]
    #: The partner's Ed25519 signature keys (``use: sig`` in its key set).
    public_keys: Sequence[Ed25519PublicKey]


class CallbackFormat:
    #: What profiles write in ``callback_format = "..."``.
    name: ClassVar[str]

    def verify(self, headers: Mapping[str, str], body: bytes, credentials: Credentials, now: float) -> str:
        """Authenticate one report; return its message id, unique per report (replays of
        it are refused). Raise ``gateway.errors.Unauthorized`` (401) or ``InvalidInput``."""
        raise NotImplementedError

    def event_json(self, body: bytes) -> bytes | None:
        """The report as one status event, JSON in the shape of ``schemas/events.py``;
        the pipeline validates it (422 when it does not fit). None: an authentic report
        that carries nothing to take in (a provider's interim status), acknowledged with
        200 and not stored."""
        raise NotImplementedError


class StandardWebhooks(CallbackFormat):
    name = "standard-webhooks"

    def verify(self, headers: Mapping[str, str], body: bytes, credentials: Credentials, now: float) -> str:
        signed = webhooks.read(headers, now=now)  # type: ignore[arg-type]
        return webhooks.verify(signed, body, secrets=credentials.secrets, public_keys=credentials.public_keys)

    def event_json(self, body: bytes) -> bytes:
        return body


STANDARD_WEBHOOKS = StandardWebhooks()
