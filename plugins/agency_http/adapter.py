"""Adapter for agencies: the compact JWE goes as ``application/jose``.

``POST {endpoint}{packages_path}`` with ``Idempotency-Key: <package id>``; the agency
answers 2xx with ``{"reference": "..."}``, its own id for the case, stored as
``packages.partner_ref``. A resend after a crash carries the same key, so the agency
acts on the package once.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gateway.errors import DeliveryError
from gateway.plugin.adapter import AdapterConfig, OutboundPackage, PollResult, Receipt
from gateway.plugin.http import (
    HttpAdapter,
    HttpConfig,
    check_endpoint,
    check_status_feed,
    json_field,
    status_feed,
)
from schemas.partner import PartnerProfile


class AgencyConfig(HttpConfig):
    packages_path: str = Field(default="/packages", description="POST target, under endpoint")
    status_feed_path: str | None = Field(
        default=None, description="GET feed of status events, for partners that cannot push"
    )
    poll_interval: float = Field(default=300.0, gt=0, description="seconds between polls")


class AgencyHttpAdapter(HttpAdapter):
    name = "agency_http"
    kinds: ClassVar[frozenset[str]] = frozenset({"agency"})
    Config = AgencyConfig
    config: AgencyConfig

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = AgencyConfig.model_validate(profile.adapter_config)
        check_endpoint(profile.endpoint, config, profile.sealing)
        check_status_feed(profile.endpoint, config.status_feed_path)
        return config

    async def deliver(self, package: OutboundPackage) -> Receipt:
        answer = await self.request(
            "POST",
            self.config.packages_path,
            what=f"package {package.package_id}",
            data=package.sealed.encode("ascii"),
            headers={"Content-Type": "application/jose", "Idempotency-Key": package.package_id},
        )
        reference, detail = json_field(answer, "reference")
        return Receipt(partner_ref=reference, status=str(answer.status), detail=detail)

    def poll_interval(self) -> float | None:
        return self.config.poll_interval if self.config.status_feed_path else None

    async def poll(self, since: str | None) -> PollResult:
        if not self.config.status_feed_path:
            raise DeliveryError(
                f"partner {self.profile.id!r} has no adapter_config.status_feed_path to poll"
            )
        answer = await self.request(
            "GET", self.config.status_feed_path, what="status feed",
            params={"since": since} if since else None,
        )
        return status_feed(answer, f"partner {self.profile.id!r}")
