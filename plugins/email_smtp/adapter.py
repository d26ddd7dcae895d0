"""Adapter for email over SMTP (aiosmtplib): short templated reminders, TLS required."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.adapters import Adapter, AdapterConfig
from schemas.partner import PartnerProfile


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1)
    text: str = Field(min_length=1, description="plain-text body with {field.path} slots")


class Config(AdapterConfig):
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    insecure_no_tls: bool = Field(
        default=False, description="must be true for tls = 'none'; local development only"
    )
    ca_file: str | None = None
    recipient_field: str = "debtor.email"
    templates: dict[str, Template] = Field(min_length=1, description="by purpose")


class EmailSmtpAdapter(Adapter):
    name = "email_smtp"
    kinds: ClassVar[frozenset[str]] = frozenset({"email"})
    Config = Config

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = Config.model_validate(profile.adapter_config)
        if not profile.endpoint.startswith("smtp://"):
            raise ValueError(f"endpoint {profile.endpoint!r} must be smtp://HOST:PORT")
        if config.tls == "none" and not config.insecure_no_tls:
            raise ValueError("adapter_config.tls = 'none' needs insecure_no_tls = true (development only)")
        for purpose in profile.policy:
            if purpose not in config.templates:
                raise ValueError(f"adapter_config.templates has no template for purpose {purpose!r}")
        return config
