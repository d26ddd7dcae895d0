"""What the HTTP adapters share: TLS settings, the client session, and reading answers.

Foreign errors become ``gateway.errors`` here, at the boundary::

    connection refused / reset, server gone, TLS failure   -> PartnerUnavailable
    no answer within limits.timeout                        -> PartnerTimeout
    408, 425, 429, 5xx  (Retry-After parsed)               -> PartnerUnavailable
    any other status outside 2xx                           -> PartnerRejected

A 2xx whose body we cannot read (not JSON, wrong shape, over 1 MiB) still counts as
delivered: the partner said it accepted the package, and the idempotency key makes a
resend pointless. The receipt's detail records the unreadable acknowledgement and no
partner reference is stored, so an operator can follow it up.
"""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from pydantic import AfterValidator, Field, model_validator

from gateway.controls import CONTROLS, describe
from gateway.errors import PartnerRejected, PartnerTimeout, PartnerUnavailable
from gateway.httpbody import read_capped
from gateway.plugin.adapter import ACCEPTED, Adapter, AdapterConfig, PollResult, before_sending
from gateway.supervision.redact import redact

#: Largest answer body read; a bigger one is cut off and reported, never held in memory.
MAX_BODY = 1 << 20
RETRY_STATUSES = frozenset({408, 425, 429})

#: What a path under the endpoint may not hold, even percent-encoded: each could move
#: the request to another host (``@``, ``//``, ``\``) or split it (control characters).
_UNSAFE_IN_PATH = re.compile(rf"@|//|\\|{CONTROLS.pattern}")
_UNSAFE_IN_ENDPOINT = re.compile(rf"\s|\\|{CONTROLS.pattern}")


def _named(found: str) -> str:
    return describe(found) if len(found) == 1 else repr(found)


def check_path(path: str) -> str:
    """A path under the endpoint (``packages_path``, ``send_path``...): one leading ``/``
    and nothing that could leave the endpoint's host, however often percent-encoded.
    Raises ValueError; returns the path (a pydantic validator)."""
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with a single '/' (a path under the endpoint)")
    layer = path
    for _ in range(8):  # %252f is %2f is /: every decoding is looked at
        found = _UNSAFE_IN_PATH.search(layer)
        if found:
            encoded = "" if layer is path else " (percent-encoded)"
            raise ValueError(
                f"path {path!r} holds {_named(found.group())}{encoded}; only a plain path under the endpoint"
            )
        decoded = unquote(layer)
        if decoded == layer:
            return path
        layer = decoded
    raise ValueError(f"path {path!r} is percent-encoded too many times")


def _optional_path(path: str | None) -> str | None:
    return check_path(path) if path else path  # "" or none: no such request


#: A path field of an adapter's config.
UrlPath = Annotated[str, AfterValidator(check_path)]
OptionalUrlPath = Annotated[str | None, AfterValidator(_optional_path)]


def endpoint_origin(endpoint: str) -> str:
    """``scheme://host[:port]`` and the endpoint's own path, if any, without a trailing
    ``/``: what every request's path is joined onto. Raises ValueError for an endpoint
    without a host, with user information, a query or a fragment, or anything else
    that could make the host ambiguous."""
    unsafe = _UNSAFE_IN_ENDPOINT.search(endpoint)
    if unsafe:
        raise ValueError(f"endpoint {endpoint!r} holds {_named(unsafe.group())}")
    parts = urlsplit(endpoint)
    # SFTP names its login user in the URL (sftp://user@host); nothing else may, and a
    # password never (it belongs in keys/partners/).
    login_allowed = parts.scheme == "sftp" and parts.password is None and parts.netloc.count("@") == 1
    if "@" in parts.netloc and not login_allowed:
        raise ValueError(f"endpoint {endpoint!r} holds user information (user@host); name the host only")
    if not parts.hostname:
        raise ValueError(f"endpoint {endpoint!r} names no host")
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise ValueError(f"endpoint {endpoint!r} has an invalid port") from None
    if parts.query or parts.fragment or "?" in endpoint or "#" in endpoint:
        raise ValueError(f"endpoint {endpoint!r} may not hold a query or a fragment")
    base = parts.path.rstrip("/")
    if base:
        check_path(base)
    return f"{parts.scheme}://{parts.netloc}{base}"


def url_for(endpoint: str, path: str) -> str:
    """The URL of ``path`` under ``endpoint``: the one way request URLs are built, so
    that a profile's path never names another host."""
    return endpoint_origin(endpoint) + check_path(path)


def readable_file(path: Path) -> Path:
    """A file the profile names (a CA bundle, a client certificate or key) must be there
    and readable now: otherwise every attempt would fail the same way."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return path


#: A file an adapter's config names.
ReadableFile = Annotated[Path, AfterValidator(readable_file)]


def check_tls_files(ca_file: Path | None, cert: Path | None = None, key: Path | None = None) -> None:
    """Load the TLS files as the session will, without the system's CA store (cheap):
    raise ValueError, naming the setting, if one is not what it should be."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if key and not cert:
        raise ValueError("client_key is set without client_cert")
    try:
        if ca_file:
            ctx.load_verify_locations(cafile=str(ca_file))
    except (OSError, ValueError) as exc:
        raise ValueError(f"ca_file {str(ca_file)!r} is not a PEM CA bundle: {exc}") from None
    try:
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:
        raise ValueError(f"client_cert/client_key cannot be loaded as a PEM pair: {exc}") from None


class HttpConfig(AdapterConfig):
    ca_file: ReadableFile | None = Field(
        default=None, description="extra CA bundle to trust (the partner's private CA)"
    )
    client_cert: ReadableFile | None = Field(default=None, description="mTLS certificate (PEM)")
    client_key: ReadableFile | None = Field(default=None, description="mTLS private key (PEM)")
    allow_insecure_http: bool = Field(
        default=False,
        description="accept http:// endpoints for packages; for local development only, refused "
        "with tls-only and for a status feed",
    )

    @model_validator(mode="after")
    def _tls_files(self) -> HttpConfig:
        check_tls_files(self.ca_file, self.client_cert, self.client_key)
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """Certificate verification is always on; there is no switch to turn it off."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def check_endpoint(endpoint: str, config: HttpConfig, sealing: str) -> None:
    endpoint_origin(endpoint)
    if endpoint.startswith("https://"):
        return
    if endpoint.startswith("http://") and config.allow_insecure_http and sealing == "jwe":
        return
    raise ValueError(
        f"endpoint {endpoint!r} must be https:// (plain http:// only with "
        "adapter_config.allow_insecure_http = true and sealing = 'jwe')"
    )


def check_status_feed(endpoint: str, feed: str | None) -> None:
    """A status feed is read over https:// only, whatever allow_insecure_http says: its
    events are not signed (a callback is), so TLS is all that says they are the
    partner's; over http:// anyone on the path could write them. Checked at onboarding
    and again before each poll (profiles stored before the rule); deliveries are not
    concerned."""
    if feed and not endpoint.startswith("https://"):
        raise ValueError(
            f"status feed {feed} must be read over https:// (its events are not signed): "
            "use an https:// endpoint, or no status feed"
        )


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    too_large: bool
    headers: CIMultiDictProxy[str]

    def snippet(self, limit: int = 300) -> str:
        """The start of the body, for errors and the delivery record, personal data
        redacted (partners echo requests back): redacted first, then cut, so that a
        number across the cut is not left half."""
        text = redact(self.body[: limit + 100].decode("utf-8", "replace"))[:limit]
        return text + (" (body over 1 MiB, cut)" if self.too_large else "")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def check_status(answer: Answer, what: str) -> None:
    """Raise the gateway error an answer outside 2xx means."""
    if 200 <= answer.status < 300:
        return
    if 300 <= answer.status < 400:
        # Never followed (see HttpAdapter.request): retried, so that once the profile
        # names the partner's new endpoint the package goes there.
        raise PartnerUnavailable(
            f"{what}: HTTP {answer.status}: a redirect, not followed; if the partner moved, "
            "update the profile's endpoint",
            status=answer.status,
        )
    # Longer than the delivery record keeps (outbox.DETAIL_LIMIT): the record redacts
    # the package's own values in it and then cuts, so no value is left half.
    message = f"{what}: HTTP {answer.status}: {answer.snippet(600)}"
    if answer.status in RETRY_STATUSES or answer.status >= 500:
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        raise PartnerUnavailable(message, status=answer.status, retry_after=retry_after)
    raise PartnerRejected(message, status=answer.status)


def json_field(answer: Answer, key: str) -> tuple[str | None, str]:
    """(value of ``key`` in a JSON object ack, detail); a bad ack gives (None, why)."""
    if answer.too_large:
        return None, f"accepted; acknowledgement over 1 MiB ignored, no {key} stored"
    try:
        data = json.loads(answer.body)
    except ValueError:
        return None, f"accepted; acknowledgement is not JSON, no {key} stored: {answer.snippet(120)}"
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        return None, f"accepted; acknowledgement has no {key!r}: {answer.snippet(120)}"
    return str(value), ACCEPTED


def status_feed(answer: Answer, what: str) -> PollResult:
    """A status feed page ``{"events": [{...}], "cursor": "..."}``; anything else, even a
    body the JSON parser gives up on (nested too deep: RecursionError), is a malformed
    feed, reported as the partner being unavailable: the next poll tries again."""
    try:
        data: Any = json.loads(answer.body) if not answer.too_large else None
    except Exception:  # noqa: BLE001 - whatever the parser raises, the feed is malformed
        data = None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("events"), list)
        or not all(isinstance(e, dict) for e in data["events"])
        or not isinstance(data.get("cursor"), str | None)
    ):
        raise PartnerUnavailable(
            f"{what}: status feed is not {{'events': [...], 'cursor': ...}}: {answer.snippet(120)}"
        )
    return PollResult(events=data["events"], cursor=data.get("cursor"))


class _CheckedRequest(aiohttp.ClientRequest):
    """A request that asks :func:`before_sending` once its connection is ready (after any
    TCP and TLS handshake), just before its first byte is written."""

    async def send(self, conn: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        before_sending()
        return await super().send(conn)


class HttpAdapter(Adapter):
    """An adapter speaking HTTPS: one lazily opened session, closed by :meth:`aclose`."""

    config: HttpConfig
    _session: aiohttp.ClientSession | None = None
    _urls: dict[str, str] | None = None

    def url(self, path: str) -> str:
        """`url_for` the profile's endpoint, once per path (the profile is the adapter's
        for its whole life: a changed profile gets a new adapter)."""
        if self._urls is None:
            self._urls = {}
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = url_for(self.profile.endpoint, path)
        return url

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            try:
                context = self.config.ssl_context()
            except OSError as exc:  # ssl.SSLError too: the files changed since onboarding
                raise PartnerUnavailable(
                    f"partner {self.profile.id!r}: the TLS files of adapter_config cannot be "
                    f"loaded ({exc}); fix them, or the profile"
                ) from None
            connector = aiohttp.TCPConnector(ssl=context, limit=self.profile.limits.concurrency)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.profile.limits.timeout),
                request_class=_CheckedRequest,
            )
        return self._session

    async def request(
        self, method: str, path: str, *, what: str, **kwargs: Any
    ) -> Answer:
        """Send one request; return a 2xx answer or raise the matching gateway error."""
        url = self.url(path)
        where = f"{what} {url}"
        try:
            # No redirects: the endpoint was checked at onboarding (https, or http only
            # for JWE in development); a redirect could send the body anywhere, in clear.
            async with self.session().request(method, url, allow_redirects=False, **kwargs) as resp:
                answer = Answer(resp.status, *await read_capped(resp, MAX_BODY), resp.headers)
        except TimeoutError:
            raise PartnerTimeout(
                f"{where}: no answer within {self.profile.limits.timeout:g} s"
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PartnerUnavailable(
                f"{where}: TLS certificate not trusted ({exc.certificate_error}); "
                "if the partner uses a private CA, set adapter_config.ca_file"
            ) from None
        except aiohttp.ClientError as exc:
            # Refused, reset, disconnected, TLS or protocol errors: maybe better later.
            raise PartnerUnavailable(f"{where}: {type(exc).__name__}: {exc}") from None
        check_status(answer, where)
        return answer

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
