"""Adapter for SMS providers: an approved template rendered from minimized fields.

Two request shapes (``api`` in ``[adapter_config]``):

``json`` (the default)
    ``POST {endpoint}{send_path}`` (``/messages``) with ``Idempotency-Key: <package id>``
    and a body ``{"to", "template_id", "params", "text", "idempotency_key",
    "callback_url"?}``; the provider answers 2xx with ``{"message_id": "..."}``.
``vonage-messages``
    The Vonage Messages API: ``POST {endpoint}/v1/messages`` with ``{"message_type":
    "text", "channel": "sms", "to", "from", "text", "client_ref", "webhook_url"?}``,
    the number in E.164 without the ``+``; it answers 202 with ``{"message_uuid": ...}``.
    ``client_ref`` is ``CASE-REF:PACKAGE-ID``, which the provider echoes in its delivery
    receipts (`plugins.sms_http.receipts`), so a receipt names the case.

The number is the first value at ``recipient_field`` of the minimized data; template
slots are filled from the minimized data only. The provider's reference is stored as
``packages.partner_ref``. ``[adapter_config.auth]`` (`gateway.plugin.auth`) adds an API
key, HTTP Basic or an HMAC signature, the secret read from its 0600 file in the key
store for each request.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.errors import GatewayError
from gateway.plugin import auth as request_auth
from gateway.plugin.adapter import AdapterConfig, OutboundPackage, Receipt, Resources
from gateway.plugin.http import HttpAdapter, HttpConfig, UrlPath, check_endpoint, json_field
from gateway.plugin.templates import check_profile_messages, first, render, slots
from schemas.partner import PartnerProfile

#: Per shape: the default send path and the key of the provider's reference in its answer.
SHAPES = {"json": ("/messages", "message_id"), "vonage-messages": ("/v1/messages", "message_uuid")}


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider_template_id: str = Field(description="id of the template approved at the provider")
    text: str = Field(min_length=1, description="the approved text, with {field.path} slots")


class SmsConfig(HttpConfig):
    api: Literal["json", "vonage-messages"] = Field(default="json", description="the request shape")
    send_path: UrlPath | None = Field(default=None, description="POST target; by default the shape's")
    sender: str | None = Field(default=None, description="vonage-messages: the 'from' (number or name)")
    recipient_field: str = Field(
        default="debtor.phones[].number", description="minimized field that holds the number"
    )
    callback_url: str | None = None
    auth: request_auth.Auth | None = Field(default=None, description="how requests are authenticated")
    templates: dict[str, Template] = Field(min_length=1, description="by purpose")

    @model_validator(mode="after")
    def _sender(self) -> SmsConfig:
        if self.api == "vonage-messages" and not self.sender:
            raise ValueError("api 'vonage-messages' needs sender (the number or name messages come from)")
        return self

    @property
    def path(self) -> str:
        return self.send_path or SHAPES[self.api][0]


class SmsHttpAdapter(HttpAdapter):
    name = "sms_http"
    kinds: ClassVar[frozenset[str]] = frozenset({"sms"})
    Config = SmsConfig
    config: SmsConfig

    def __init__(
        self, profile: PartnerProfile, config: AdapterConfig, resources: Resources | None = None
    ) -> None:
        super().__init__(profile, config, resources)
        if resources is not None and self.config.auth is not None:
            try:
                self.config.auth.secret(resources.keys)
            except GatewayError as exc:
                raise ValueError(f"auth.secret_file: {exc}") from None

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = SmsConfig.model_validate(profile.adapter_config)
        check_endpoint(profile.endpoint, config, profile.sealing)
        texts = {purpose: [t.text] for purpose, t in config.templates.items()}
        check_profile_messages(profile, texts, config.recipient_field)
        return config

    def message_texts(self, purpose: str) -> list[str]:
        template = self.config.templates.get(purpose)
        return [template.text] if template else []

    def message(self, package: OutboundPackage) -> dict[str, Any]:
        """The request body of the profile's shape."""
        data = package.claims["data"]
        template = self.config.templates[package.purpose]
        to = first(data, self.config.recipient_field, "recipient_field")
        text = render(template.text, data)
        if self.config.api == "vonage-messages":
            message: dict[str, Any] = {
                "message_type": "text", "channel": "sms", "to": to.removeprefix("+"),
                "from": self.config.sender, "text": text,
                "client_ref": f"{package.case_ref}:{package.package_id}",
            }
            if self.config.callback_url:
                message["webhook_url"] = self.config.callback_url
            return message
        params = {slot: first(data, slot, f"template slot {{{slot}}}") for slot in slots(template.text)}
        message = {
            "to": to, "template_id": template.provider_template_id, "params": params, "text": text,
            "idempotency_key": package.package_id,
        }
        if self.config.callback_url:
            message["callback_url"] = self.config.callback_url
        return message

    async def deliver(self, package: OutboundPackage) -> Receipt:
        body = json.dumps(self.message(package), ensure_ascii=False).encode()
        path = self.config.path
        headers = {"Content-Type": "application/json", "Idempotency-Key": package.package_id}
        if self.config.auth is not None:
            secret = self.config.auth.secret(self.lent().keys)
            signed_path = urlsplit(self.profile.endpoint.rstrip("/") + path).path  # as the provider sees it
            headers |= request_auth.headers(self.config.auth, secret, "POST", signed_path, body, time.time())
        answer = await self.request(
            "POST", path, what=f"message for package {package.package_id}", data=body, headers=headers
        )
        reference, detail = json_field(answer, SHAPES[self.config.api][1])
        return Receipt(partner_ref=reference, status=str(answer.status), detail=detail)
