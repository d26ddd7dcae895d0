"""Adapter for SMS providers: recipient, template id and parameters as JSON.

``POST {endpoint}{send_path}`` with ``Idempotency-Key: <package id>`` and a body
``{"to", "template_id", "params", "text", "idempotency_key", "callback_url"?}``. The
number is the first value at ``recipient_field`` of the minimized data; ``params`` maps
each slot of the approved template to its value, taken from the minimized data only,
and ``text`` is the template rendered with them. The provider answers 2xx with
``{"message_id": "..."}``, stored as ``packages.partner_ref``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.plugin.adapter import AdapterConfig, OutboundPackage, Receipt
from gateway.plugin.http import HttpAdapter, HttpConfig, UrlPath, check_endpoint, json_field
from gateway.plugin.templates import check_profile_messages, first, render, slots
from schemas.partner import PartnerProfile


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider_template_id: str = Field(description="id of the template approved at the provider")
    text: str = Field(min_length=1, description="the approved text, with {field.path} slots")


class SmsConfig(HttpConfig):
    send_path: UrlPath = "/messages"
    recipient_field: str = Field(
        default="debtor.phones[].number", description="minimized field that holds the number"
    )
    callback_url: str | None = None
    templates: dict[str, Template] = Field(min_length=1, description="by purpose")


class SmsHttpAdapter(HttpAdapter):
    name = "sms_http"
    kinds: ClassVar[frozenset[str]] = frozenset({"sms"})
    Config = SmsConfig
    config: SmsConfig

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

    async def deliver(self, package: OutboundPackage) -> Receipt:
        data = package.claims["data"]
        template = self.config.templates[package.purpose]
        params = {slot: first(data, slot, f"template slot {{{slot}}}") for slot in slots(template.text)}
        message = {
            "to": first(data, self.config.recipient_field, "recipient_field"),
            "template_id": template.provider_template_id,
            "params": params,
            "text": render(template.text, data),
            "idempotency_key": package.package_id,
        }
        if self.config.callback_url:
            message["callback_url"] = self.config.callback_url
        answer = await self.request(
            "POST",
            self.config.send_path,
            what=f"message for package {package.package_id}",
            json=message,
            headers={"Idempotency-Key": package.package_id},
        )
        message_id, detail = json_field(answer, "message_id")
        return Receipt(partner_ref=message_id, status=str(answer.status), detail=detail)
