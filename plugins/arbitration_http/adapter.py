"""Adapter for online arbitration bodies: a filing that carries the sealed package.

``POST {endpoint}{filings_path}`` a JSON filing ``{"package": <compact JWE>, "case_ref":
..., "purpose": ...}`` with ``Idempotency-Key: <package id>``; the body answers 2xx with
``{"filing_number": "..."}``, stored as ``packages.partner_ref``.

Evidence travels sealed: its references (``evidence[].doc_id``, ``kind``, ``title``,
``sha256``) are fields of the package, inside the JWE, so nothing about the evidence is
readable outside it; the body fetches each document through its own channel and checks
it against the sealed digest. The gateway never sends the documents themselves.
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


class ArbitrationConfig(HttpConfig):
    filings_path: str = Field(default="/filings", description="POST target, under endpoint")
    status_path: str | None = Field(default="/filings/status", description="GET status feed")
    poll_interval: float = Field(default=3600.0, gt=0, description="seconds between polls")


class ArbitrationHttpAdapter(HttpAdapter):
    name = "arbitration_http"
    kinds: ClassVar[frozenset[str]] = frozenset({"arbitration"})
    Config = ArbitrationConfig
    config: ArbitrationConfig

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = ArbitrationConfig.model_validate(profile.adapter_config)
        check_endpoint(profile.endpoint, config, profile.sealing)
        check_status_feed(profile.endpoint, config.status_path)
        return config

    async def deliver(self, package: OutboundPackage) -> Receipt:
        filing = {"package": package.sealed, "case_ref": package.case_ref, "purpose": package.purpose}
        answer = await self.request(
            "POST",
            self.config.filings_path,
            what=f"filing of package {package.package_id}",
            json=filing,
            headers={"Idempotency-Key": package.package_id},
        )
        number, detail = json_field(answer, "filing_number")
        return Receipt(partner_ref=number, status=str(answer.status), detail=detail)

    def poll_interval(self) -> float | None:
        return self.config.poll_interval if self.config.status_path else None

    async def poll(self, since: str | None) -> PollResult:
        if not self.config.status_path:
            raise DeliveryError(f"partner {self.profile.id!r} has no adapter_config.status_path")
        answer = await self.request(
            "GET", self.config.status_path, what="status feed",
            params={"since": since} if since else None,
        )
        return status_feed(answer, f"partner {self.profile.id!r}")
