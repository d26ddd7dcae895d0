"""Adapter for online arbitration bodies: a filing with sealed evidence references."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gateway.adapters import Adapter, AdapterConfig
from plugins._http import HttpConfig, check_endpoint
from schemas.partner import PartnerProfile


class Config(HttpConfig):
    filings_path: str = Field(default="/filings", description="POST target, under endpoint")
    status_path: str | None = Field(default="/filings/status", description="GET status feed")
    poll_interval: float = Field(default=3600.0, gt=0, description="seconds between polls")


class ArbitrationHttpAdapter(Adapter):
    name = "arbitration_http"
    kinds: ClassVar[frozenset[str]] = frozenset({"arbitration"})
    Config = Config

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = Config.model_validate(profile.adapter_config)
        check_endpoint(profile.endpoint, config, profile.sealing)
        return config
