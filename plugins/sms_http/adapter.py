"""Adapter for SMS providers: recipient, template id and parameters as JSON."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.adapters import Adapter, AdapterConfig
from plugins._http import HttpConfig, check_endpoint
from schemas.partner import PartnerProfile


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider_template_id: str = Field(description="id of the template approved at the provider")
    text: str = Field(min_length=1, description="the approved text, with {field.path} slots")


class Config(HttpConfig):
    send_path: str = "/messages"
    recipient_field: str = Field(
        default="debtor.phones[].number", description="minimized field that holds the number"
    )
    callback_url: str | None = None
    templates: dict[str, Template] = Field(min_length=1, description="by purpose")


class SmsHttpAdapter(Adapter):
    name = "sms_http"
    kinds: ClassVar[frozenset[str]] = frozenset({"sms"})
    Config = Config

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = Config.model_validate(profile.adapter_config)
        check_endpoint(profile.endpoint, config, profile.sealing)
        for purpose in profile.policy:
            if purpose not in config.templates:
                raise ValueError(f"adapter_config.templates has no template for purpose {purpose!r}")
        return config
