"""Adapter for email over SMTP (aiosmtplib): short templated reminders, TLS required.

``[adapter_config.auth]`` logs in with SMTP AUTH (``username``, and the password in its
file of the key store, ``password_file = "partners/NAME.secret"``, 0600). A profile
asking for AUTH without TLS is refused at onboarding: the password would cross the
network in clear. aiosmtplib logs in only after STARTTLS (or on the implicit-TLS
connection), and a relay that refuses the login is an operator's problem to fix, not the
package's: retried (``PartnerUnavailable``), never dead.

Connections stay open and carry many messages, up to
``adapter_config.messages_per_connection`` each (:mod:`plugins.email_smtp.connections`).
The ``Message-ID`` is derived from the package id, so a resend after a crash is
recognisably the same message to the relay and to the recipient's mail client. SMTP
replies map onto the error tree: 4xx is temporary (``PartnerUnavailable``), 5xx
permanent (``PartnerRejected``).
"""

from __future__ import annotations

import ssl
from typing import ClassVar, Literal
from urllib.parse import urlsplit

import aiosmtplib
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.controls import control_in
from gateway.errors import DeliveryError, GatewayError, PartnerRejected, PartnerTimeout, PartnerUnavailable
from gateway.plugin.adapter import Adapter, AdapterConfig, OutboundPackage, Receipt, Resources
from gateway.plugin.http import ReadableFile, check_tls_files, endpoint_origin
from gateway.plugin.templates import check_profile_messages, first, render
from gateway.supervision.redact import redact
from plugins.email_smtp.connections import Connections
from plugins.email_smtp.mime import Mail
from schemas.partner import PartnerProfile


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, description="one line: no control characters")
    text: str = Field(min_length=1, description="plain-text body with {field.path} slots")

    @field_validator("subject")
    @classmethod
    def _one_line(cls, subject: str) -> str:
        found = control_in(subject)
        if found:
            raise ValueError(f"the subject holds {found}; a mail header is one line of text")
        return subject


class SmtpAuth(AdapterConfig):
    username: str = Field(min_length=1)
    password_file: str = Field(description="the password's file in the key store: partners/NAME.secret")


class EmailConfig(AdapterConfig):
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    insecure_no_tls: bool = Field(
        default=False, description="must be true for tls = 'none'; local development only"
    )
    ca_file: ReadableFile | None = None
    recipient_field: str = "debtor.email"
    auth: SmtpAuth | None = Field(default=None, description="SMTP AUTH; only over TLS")
    templates: dict[str, Template] = Field(min_length=1, description="by purpose")
    messages_per_connection: int = Field(
        default=100, ge=1, le=10000,
        description="messages sent over one SMTP connection before it is closed and another opened",
    )  # fmt: skip

    @model_validator(mode="after")
    def _tls_files(self) -> EmailConfig:
        check_tls_files(self.ca_file)
        return self


def smtp_error(code: int, message: str, where: str) -> DeliveryError:
    # A refusal names the recipient (550 <someone@example.org>: ...): redacted.
    text = f"{where}: SMTP {code} {redact(message)}"
    if 400 <= code < 500:
        return PartnerUnavailable(text, status=code)
    return PartnerRejected(text, status=code)


class EmailSmtpAdapter(Adapter):
    name = "email_smtp"
    kinds: ClassVar[frozenset[str]] = frozenset({"email"})
    Config = EmailConfig
    config: EmailConfig

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = EmailConfig.model_validate(profile.adapter_config)
        endpoint_origin(profile.endpoint)
        if not profile.endpoint.startswith("smtp://") or not urlsplit(profile.endpoint).port:
            raise ValueError(f"endpoint {profile.endpoint!r} must be smtp://HOST:PORT")
        if config.tls == "none" and not config.insecure_no_tls:
            raise ValueError("adapter_config.tls = 'none' needs insecure_no_tls = true (development only)")
        if config.tls == "none" and config.auth is not None:  # the password would cross in clear
            raise ValueError("auth needs TLS: tls = 'starttls' or 'implicit'")
        texts = {p: [t.subject, t.text] for p, t in config.templates.items()}
        check_profile_messages(profile, texts, config.recipient_field)
        return config

    def __init__(
        self, profile: PartnerProfile, config: AdapterConfig, resources: Resources | None = None
    ) -> None:
        super().__init__(profile, config, resources)
        if resources is not None and self.config.auth is not None:
            try:
                resources.keys.partner_secret(self.config.auth.password_file)
            except GatewayError as exc:
                raise ValueError(f"auth.password_file: {exc}") from None
        self.connections = Connections(
            self._connect, self.config.messages_per_connection, self.profile.limits.timeout
        )
        self._tls: ssl.SSLContext | None = None

    def login(self) -> tuple[str | None, str | None]:
        """The user name and password to log in with, if the profile logs in."""
        auth = self.config.auth
        if auth is None:
            return None, None
        return auth.username, self.lent().keys.partner_secret(auth.password_file).decode()

    def message_texts(self, purpose: str) -> list[str]:
        template = self.config.templates.get(purpose)
        return [template.subject, template.text] if template else []

    def message(self, package: OutboundPackage) -> Mail:
        data = package.claims["data"]
        template = self.config.templates[package.purpose]
        return Mail(
            sender=self.config.sender,
            recipient=first(data, self.config.recipient_field, "recipient_field"),
            subject=render(template.subject, data),
            message_id=f"<{package.package_id}@{self.config.sender.rsplit('@', 1)[1]}>",
            text=render(template.text, data),
        )

    def tls_context(self) -> ssl.SSLContext | None:
        """Made once: loading the system's CA store takes longer than sending a message."""
        if self._tls is None and self.config.tls != "none":
            self._tls = ssl.create_default_context(cafile=self.config.ca_file)
        return self._tls

    async def _connect(self) -> aiosmtplib.SMTP:
        url = urlsplit(self.profile.endpoint)
        username, password = self.login()
        client = aiosmtplib.SMTP(
            hostname=url.hostname,
            port=url.port,
            use_tls=self.config.tls == "implicit",
            start_tls=self.config.tls == "starttls",
            tls_context=self.tls_context(),
            timeout=self.profile.limits.timeout,
            username=username,
            password=password,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:  # again after STARTTLS, as RFC 3207 asks
                await client.ehlo()
        except BaseException:
            client.close()
            raise
        return client

    async def deliver(self, package: OutboundPackage) -> Receipt:
        mail = self.message(package)
        url = urlsplit(self.profile.endpoint)
        where = f"mail for package {package.package_id} via {url.hostname}:{url.port}"
        try:
            reply = await self.connections.send(mail.sender, mail.recipient, mail.as_bytes(), mail.utf8)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise PartnerUnavailable(
                f"{where}: SMTP {exc.code}: the relay refused the login; check adapter_config.auth"
                " and its password file", status=exc.code,
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            raise smtp_error(refused.code, refused.message, where) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise smtp_error(exc.code, exc.message, where) from None
        except (aiosmtplib.SMTPTimeoutError, TimeoutError):
            raise PartnerTimeout(f"{where}: no answer within {self.profile.limits.timeout:g} s") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Refused connection, no STARTTLS offered, certificate not trusted: the
            # message is never sent in clear, and a later try may find things fixed.
            raise PartnerUnavailable(f"{where}: {type(exc).__name__}: {exc}") from None
        return Receipt(partner_ref=mail.message_id, status=reply[:3], detail=reply)

    async def aclose(self) -> None:
        await self.connections.aclose()
