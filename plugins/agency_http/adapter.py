"""Adapter for agencies: the compact JWE goes as ``application/jose``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gateway.adapters import Adapter, AdapterConfig
from plugins._http import HttpConfig, check_endpoint
from schemas.partner import PartnerProfile


class Config(HttpConfig):
    packages_path: str = Field(default="/packages", description="POST target, under endpoint")
    status_feed_path: str | None = Field(
        default=None, description="GET feed of status events, for partners that cannot push"
    )
    poll_interval: float = Field(default=300.0, gt=0, description="seconds between polls")


class AgencyHttpAdapter(Adapter):
    name = "agency_http"
    kinds: ClassVar[frozenset[str]] = frozenset({"agency"})
    Config = Config

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = Config.model_validate(profile.adapter_config)
        check_endpoint(profile.endpoint, config, profile.sealing)
        return config
