"""Local stand-ins for partners, for the demo (and tests): real TLS, real decryption.

::

    async with DemoPartners(workdir, private_keys={"agency": jwk, ...}) as partners:
        partners.ca_file                 # PEM of the throwaway CA that signed every server
        partners.endpoint("agency")      # https://127.0.0.1:PORT (smtp://... for "email")
        partners.profile_for(example_toml, out_dir)   # profile pointing at the stand-in
        partners.received["agency"]      # what each partner acted on, once per package

Four partners listen on 127.0.0.1: an agency (``POST /packages``, compact JWE), an
arbitration body (``POST /filings``), an SMS API (``POST /messages``) and an SMTP relay
(STARTTLS required). The agency and the arbitration body decrypt with their private key
(joserfc) and verify the bank's signature against the workspace's published JWKS, as a
real partner would; each acts once per ``Idempotency-Key`` and answers a repeat with the
first reference. Nothing here listens beyond the loopback interface.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import ssl
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc import jwe, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.onboarding.jwk import JWK, import_jwk

HOST = "127.0.0.1"
KINDS = ("agency", "arbitration", "sms", "email")
#: The ports the sample profiles in examples/partners name.
EXAMPLE_PORTS = {"agency": 18441, "arbitration": 18442, "sms": 18443, "email": 18025}


class ThrowawayCA:
    """A CA made on the spot, and certificates it signs for 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Throwaway test CA")])
        self.cert = (
            self._builder(name, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        issuer = self.cert.subject if hasattr(self, "cert") else subject
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        )

    def issue(self, name: str, *, client: bool = False) -> tuple[Path, Path]:
        """A certificate for a server at 127.0.0.1 (or a client, for mTLS): (cert, key) PEM files."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    def server_context(self, name: str, *, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*self.issue(name))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca_file)
        return ctx


class _Partner:
    """One HTTP partner: effects recorded once per idempotency key."""

    def __init__(self, kind: str, prefix: str) -> None:
        self.kind = kind
        self.prefix = prefix
        self.received: list[dict[str, Any]] = []
        self.requests = 0
        self._refs: dict[str, str] = {}

    def act(self, key: str, record: dict[str, Any]) -> tuple[str, int]:
        """Apply the effect unless this key was seen; return (reference, HTTP status)."""
        if key in self._refs:
            return self._refs[key], 200
        ref = f"{self.prefix}-{len(self._refs) + 1:06d}"
        self._refs[key] = ref
        self.received.append({**record, "idempotency_key": key, "reference": ref})
        return ref, 201


class _Relay:
    """aiosmtpd handler: keeps each message once per Message-ID."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        msg = message_from_bytes(raw)
        message_id = str(msg["Message-ID"])
        payload = msg.get_payload(decode=True)
        text = payload.decode("utf-8") if isinstance(payload, bytes) else str(payload)
        if message_id not in self._seen:
            self._seen.add(message_id)
            self.received.append({
                "message_id": message_id, "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                "subject": str(msg["Subject"]), "text": text.strip(),
            })
        return f"250 2.0.0 queued as {message_id}"


class DemoPartners:
    def __init__(
        self,
        workdir: Path,
        *,
        bank_jwks: Path,
        private_keys: dict[str, dict[str, Any]],
        ports: dict[str, int] | None = None,
    ) -> None:
        """``bank_jwks``: the workspace's ``keys/bank/jwks.json``, read on each package so
        key rotation shows; ``private_keys``: the agency's and the arbitration body's
        private JWKs, by kind; ``ports``: fixed ports by kind (e.g. :data:`EXAMPLE_PORTS`;
        by default any free port, see :meth:`endpoint`)."""
        self.workdir = workdir
        self.ca = ThrowawayCA(workdir / "ca")
        self.ca_file = self.ca.ca_file
        self.bank_jwks = bank_jwks
        self.keys: dict[str, JWK] = {k: import_jwk(v) for k, v in private_keys.items()}
        self._ports = dict(ports or {})
        self.http = {"agency": _Partner("agency", "ACME"), "arbitration": _Partner("arbitration", "ARB"),
                     "sms": _Partner("sms", "SMS")}
        self.relay = _Relay()
        self.received: dict[str, list[dict[str, Any]]] = {
            **{k: p.received for k, p in self.http.items()}, "email": self.relay.received
        }
        self._runners: list[web.AppRunner] = []
        self._smtp: Any = None

    def endpoint(self, kind: str) -> str:
        scheme = "smtp" if kind == "email" else "https"
        return f"{scheme}://{HOST}:{self._ports[kind]}"

    def profile_for(self, example: Path, out_dir: Path) -> Path:
        """A copy of a sample profile aimed at the stand-in of its kind, trusting the CA."""
        text = example.read_text(encoding="utf-8")
        kind = re.search(r'^kind\s*=\s*"(\w+)"', text, re.M)
        if kind is None or kind.group(1) not in KINDS:
            raise ValueError(f"{example}: no kind this module stands in for")
        text = re.sub(r'^endpoint\s*=.*$', f'endpoint = "{self.endpoint(kind.group(1))}"', text, flags=re.M)
        line = f'ca_file = "{self.ca_file}"'
        if re.search(r"^\[adapter_config\]$", text, re.M):
            text = re.sub(r"^\[adapter_config\]$", f"[adapter_config]\n{line}", text, flags=re.M)
        else:
            text += f"\n[adapter_config]\n{line}\n"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / example.name
        out.write_text(text, encoding="utf-8")
        return out

    def _open(self, kind: str, token: str) -> dict[str, Any]:
        """Decrypt and verify as the partner: raise ValueError with why not."""
        key = self.keys.get(kind)
        if key is None:
            raise ValueError(f"no private key given for the {kind} stand-in")
        try:
            inner = jwe.decrypt_compact(token, key).plaintext or b""
            jwks = KeySet.import_key_set(json.loads(self.bank_jwks.read_text()))
            return dict(jwt.decode(inner, jwks).claims)
        except (JoseError, ValueError) as exc:
            raise ValueError(f"cannot open package: {exc}") from None

    def _sealed_handler(self, kind: str, field: str) -> Any:
        partner = self.http[kind]

        async def handle(request: web.Request) -> web.Response:
            partner.requests += 1
            key = request.headers.get("Idempotency-Key")
            if not key:
                return web.json_response({"error": "Idempotency-Key header required"}, status=400)
            if kind == "agency":
                token = await request.text()
            else:
                token = (await request.json()).get("package", "")
            try:
                claims = self._open(kind, token)
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            ref, status = partner.act(key, {"claims": claims})
            return web.json_response({field: ref}, status=status)

        return handle

    async def _sms(self, request: web.Request) -> web.Response:
        partner = self.http["sms"]
        partner.requests += 1
        body = await request.json()
        key = request.headers.get("Idempotency-Key") or body.get("idempotency_key")
        if not key or not body.get("to"):
            return web.json_response({"error": "to and Idempotency-Key required"}, status=422)
        ref, status = partner.act(key, {"message": body})
        return web.json_response({"message_id": ref}, status=status)

    @staticmethod
    async def _feed(request: web.Request) -> web.Response:
        return web.json_response({"events": [], "cursor": request.query.get("since", "0")})

    async def _serve(self, kind: str, app: web.Application) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, self._ports.get(kind, 0), ssl_context=self.ca.server_context(kind))
        await site.start()
        self._runners.append(runner)
        self._ports[kind] = runner.addresses[0][1]

    async def start(self) -> DemoPartners:
        agency = web.Application()
        agency.router.add_post("/packages", self._sealed_handler("agency", "reference"))
        agency.router.add_get("/status", self._feed)
        arbitration = web.Application()
        arbitration.router.add_post("/filings", self._sealed_handler("arbitration", "filing_number"))
        arbitration.router.add_get("/filings/status", self._feed)
        sms = web.Application()
        sms.router.add_post("/messages", self._sms)
        for kind, app in (("agency", agency), ("arbitration", arbitration), ("sms", sms)):
            await self._serve(kind, app)
        tls = self.ca.server_context("email")
        self._smtp = await asyncio.get_running_loop().create_server(
            lambda: SMTP(self.relay, hostname="relay.test", tls_context=tls, require_starttls=True),
            HOST, self._ports.get("email", 0),
        )
        self._ports["email"] = self._smtp.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            await self._smtp.wait_closed()
        for runner in self._runners:
            await runner.cleanup()

    async def __aenter__(self) -> DemoPartners:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
