"""What the HTTP adapters share: TLS settings and the client session."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field

from gateway.adapters import AdapterConfig


class HttpConfig(AdapterConfig):
    ca_file: Path | None = Field(
        default=None, description="extra CA bundle to trust (the partner's private CA)"
    )
    client_cert: Path | None = Field(default=None, description="mTLS certificate (PEM)")
    client_key: Path | None = Field(default=None, description="mTLS private key (PEM)")
    allow_insecure_http: bool = Field(
        default=False,
        description="accept http:// endpoints; for local development only, refused with tls-only",
    )

    def ssl_context(self) -> ssl.SSLContext:
        """Certificate verification is always on; there is no switch to turn it off."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def check_endpoint(endpoint: str, config: HttpConfig, sealing: str) -> None:
    if endpoint.startswith("https://"):
        return
    if endpoint.startswith("http://") and config.allow_insecure_http and sealing == "jwe":
        return
    raise ValueError(
        f"endpoint {endpoint!r} must be https:// (plain http:// only with "
        "adapter_config.allow_insecure_http = true and sealing = 'jwe')"
    )
