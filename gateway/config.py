"""``gateway.toml``: the settings of one gateway workspace, in one place.

Every setting has a default here, may be set in gateway.toml, and may be overridden by
an environment variable: ``GATEWAY_`` and its name in capitals, a table's name and the
key joined by a double underscore (``GATEWAY_DATABASE_URL``,
``GATEWAY_DISPATCH__LEASE_SECONDS``). The environment wins over the file. The database
password may come from a file (``database_password_file``, for mounted secrets) or from
``GATEWAY_DATABASE_PASSWORD``, so it never needs to sit in gateway.toml. ``gateway config
show`` prints the effective settings and where each came from.

Relative paths in the file are relative to the file's own directory, so a workspace can
be moved or copied as a whole.
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.errors import ConfigError
from gateway.storage.base import redact

M = TypeVar("M", bound=BaseModel)
CONFIG_NAME = "gateway.toml"
ENV_VAR = "GATEWAY_CONFIG"
ENV_PREFIX = "GATEWAY_"
ENV_NESTING = "__"
#: The database's URL from the environment (kept as a name: tests and scripts set it).
DATABASE_ENV_VAR = ENV_PREFIX + "DATABASE_URL"


class BreakerPolicy(BaseModel):
    """When the circuit breaker pauses a partner (``[breaker]`` in gateway.toml). Every
    process sharing a database must use the same values: the breaker's state is shared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_rate: float = Field(
        default=0.5, gt=0, le=1, description="share of failed attempts in the window that opens it"
    )
    min_attempts: int = Field(
        default=20, ge=1, description="attempts the window must hold before the rate counts"
    )
    window_seconds: float = Field(default=60.0, gt=0, description="the sliding window")
    cooldown_seconds: float = Field(
        default=30.0, ge=0, description="seconds open before one probe may go (at least a Retry-After)"
    )


AlertKind = Literal[
    "partner_suspended", "dead", "attestation_overdue", "checkpoint_overdue", "status_file_refused"
]
ALERT_KINDS: tuple[AlertKind, ...] = typing.get_args(AlertKind)


class WitnessSettings(BaseModel):
    """One ``[[audit_witnesses]]`` table: a witness that cosigns the log's checkpoints."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", description="the witness's submission prefix (…/add-checkpoint)")
    vkey: str = Field(description="the witness's verifier key: name+key id+base64(0x04 || Ed25519 key)")


class Pkcs11Settings(BaseModel):
    """The ``[pkcs11]`` table, for ``key_custody = "pkcs11"``: keys in a PKCS#11 token."""

    model_config = ConfigDict(extra="forbid")

    module: Path = Field(description="the token's PKCS#11 library (.so)")
    token: str = Field(description="the token's label")
    pin_env: str = Field(
        default="GATEWAY_PKCS11_PIN", description="environment variable holding the user PIN"
    )
    signing_label: str = Field(default="gateway-signing", description="label of the package-signing keys")
    audit_label: str = Field(default="gateway-audit-log", description="label of the audit log's key")


class WebhookSink(BaseModel):
    """An alert webhook (the bank's chat or incident tool), signed as Standard Webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://")
    secret_file: Path = Field(description="file holding the whsec_... secret, relative to gateway.toml")
    alerts: list[AlertKind] = Field(default_factory=lambda: list(ALERT_KINDS))
    timeout: float = Field(default=10.0, gt=0)


class EmailSink(BaseModel):
    """Alerts by e-mail over SMTP."""

    model_config = ConfigDict(extra="forbid")

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str = ""
    password_env: str = Field(default="", description="environment variable holding the SMTP password")
    sender: str
    recipients: list[str] = Field(min_length=1)
    alerts: list[AlertKind] = Field(default_factory=lambda: list(ALERT_KINDS))
    timeout: float = Field(default=30.0, gt=0)


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhooks: list[WebhookSink] = Field(default_factory=list)
    email: list[EmailSink] = Field(default_factory=list)
    tries: int = Field(default=6, ge=1, description="tries per alert and sink before it is given up")
    backoff: float = Field(default=2.0, gt=0, description="seconds before the 2nd try, doubling, at most 300")
    queue: int = Field(
        default=1000, ge=1, description="alerts waiting per sink; beyond, the oldest is dropped"
    )


class DispatchSettings(BaseModel):
    """How dispatchers claim and wait (``[dispatch]``); ``serve`` and ``dispatch`` alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lease_seconds: float = Field(
        default=120.0, gt=0, description="a claim's hold; a dead worker's packages are claimed again after it"
    )
    batch: int = Field(default=50, ge=1, le=1000, description="most packages claimed in one transaction")
    idle_seconds: float = Field(default=2.0, gt=0, description="longest sleep of a partner with nothing due")
    refresh_seconds: float = Field(
        default=15.0, gt=0, description="seconds between looks for new or changed partners"
    )
    slot_lease_seconds: float = Field(
        default=10.0, ge=1, le=3600,
        description="a dispatcher's hold on a partner's concurrency slots (at most half lease_seconds);"
        " a killed one's return after it",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid", env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING, validate_default=True
    )

    bank_id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$", description="JWT issuer")
    bank_name: str = ""
    database_url: str = "sqlite:///gateway.db"
    database_password: SecretStr | None = Field(
        default=None, description="PostgreSQL password, put into database_url (better: the file below)"
    )
    database_password_file: Path | None = Field(
        default=None, description="a file holding the PostgreSQL password, e.g. a mounted secret"
    )
    keys_dir: Path = Path("keys")
    partners_dir: Path = Path("partners")
    rule_pack: str = "cn"
    signing_alg: Literal["ES256", "EdDSA"] = "ES256"
    key_custody: str = Field(
        default="files", description="where the bank's private keys live: files, or a plugin's custody"
    )
    audit_checkpoint_every: int = Field(default=1000, ge=1, description="sign a checkpoint every N entries")
    audit_checkpoint_seconds: int = Field(
        default=60,
        ge=0,
        description="serve, dispatch and place also sign a checkpoint every T seconds if the log grew; "
        "0: no timer",
    )
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    checkpoint_max_lag_seconds: int = Field(
        default=900,
        ge=0,
        description="an audit entry waiting longer for a checkpoint fails /readyz and alerts; 0: never",
    )
    watch_seconds: int = Field(
        default=60, ge=1, description="seconds between looks for overdue attestations and checkpoints"
    )
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning"] = Field(
        default="info", description="`serve` and `dispatch`; debug adds a line per delivery and disclosure"
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto",
        description="`serve` and `dispatch`: auto runs on uvloop where it is installed"
        " (pip install 'agency-gateway[uvloop]'), else on asyncio's own loop",
    )
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="also serve /metrics without a token on this port; 0: no"
    )
    metrics_host: str = "127.0.0.1"
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    audit_witnesses: list[WitnessSettings] = Field(
        default_factory=list, description="witnesses that cosign the log's checkpoints"
    )
    pkcs11: Pkcs11Settings | None = None
    retention_seconds: int = Field(
        default=3600,
        ge=0,
        description="`gateway serve` purges the personal data that is due every T seconds; 0: no timer",
    )
    base_dir: Path = Field(default=Path("."), exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment over what the file (handed in as keywords) says.
        return env_settings, init_settings

    def resolved(self, base: Path) -> Settings:
        """Return a copy whose paths are absolute, relative ones taken from ``base``, and
        whose database URL holds the password given apart."""
        url = self.database_url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = "sqlite:///" + str(base / url.removeprefix("sqlite:///"))
        secret_file = base / self.database_password_file if self.database_password_file else None
        return self.model_copy(
            update={
                "base_dir": base,
                "database_url": with_password(url, self._password(secret_file)),
                "database_password_file": secret_file,
                "keys_dir": base / self.keys_dir,
                "partners_dir": base / self.partners_dir,
            }
        )

    def _password(self, secret_file: Path | None) -> str | None:
        if secret_file is None:
            return self.database_password.get_secret_value() if self.database_password else None
        try:
            return secret_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"database_password_file: cannot read {secret_file}: {exc}") from None


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` set (a PostgreSQL URL; SQLite has none)."""
    if password is None or not url.startswith(("postgresql://", "postgres://")):
        return url
    parts = urlsplit(url)
    if not parts.username:
        raise ConfigError("database_password needs a user name in database_url (postgresql://USER@HOST/DB)")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(unquote(parts.username), safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def default_config_path() -> Path:
    return Path(os.environ.get(ENV_VAR, CONFIG_NAME))


def config_file(path: Path | None = None) -> Path:
    """The gateway.toml that ``path`` (a file or a workspace directory), ``--config`` or
    ``$GATEWAY_CONFIG`` names."""
    path = path or default_config_path()
    return path / CONFIG_NAME if path.is_dir() else path


def read_config(path: Path) -> dict[str, Any]:
    """What gateway.toml says, as TOML (not yet validated)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: not found; run `gateway init` to create a workspace, "
            f"or point --config / {ENV_VAR} at its gateway.toml"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_settings(path: Path | None = None) -> Settings:
    """The workspace's settings: gateway.toml, the environment over it, paths resolved."""
    path = config_file(path)
    raw = read_config(path)
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {first_error(exc, env=True)}") from None
    return settings.resolved(path.resolve().parent)


#: Settings shown as "***" by `gateway config show`.
SECRET_SETTINGS = frozenset({"database_password"})


def effective(path: Path | None = None) -> list[dict[str, str]]:
    """Every setting in effect: its dotted name, value (secrets masked, passwords taken
    out of URLs) and where it came from (the environment variable, gateway.toml, or
    the default)."""
    path = config_file(path)
    raw = flat_settings(read_config(path))
    settings = load_settings(path)
    rows = []
    for name, value in flat_settings(settings.model_dump(mode="json", exclude={"base_dir"})).items():
        if name in SECRET_SETTINGS:
            shown = "***" if value is not None else "-"
        elif name == "database_url":
            shown = redact(str(value))
        else:
            shown = "-" if value is None else str(value)
        source = env_name(name) if env_name(name) in os.environ else str(path) if name in raw else "default"
        rows.append({"setting": name, "value": shown, "from": source})
    return rows


def flat_settings(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def parse_toml(text: str, origin: str, model: type[M]) -> M:
    """A TOML settings file as ``model``; ConfigError naming ``origin`` and the field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {first_error(exc)}") from None


def first_error(exc: ValidationError, *, env: bool = False) -> str:
    """One line for the first problem pydantic found: ``field.path: message``; with
    ``env``, naming the environment variable when one set the value."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "(top level)"
    if env and err["loc"] and env_name(where) in os.environ:
        where += f" (from ${env_name(where)})"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def env_name(dotted: str) -> str:
    """The environment variable that overrides the setting ``dotted`` (``dispatch.batch``)."""
    return ENV_PREFIX + dotted.upper().replace(".", ENV_NESTING)


#: gateway.toml as `gateway init` writes it, each setting with what it does.
CONFIG_TEMPLATE = """\
# Agency Gateway workspace. Relative paths are relative to this file. Every setting can
# be overridden by the environment: GATEWAY_ and its name in capitals, with a table's
# name and a double underscore before it (GATEWAY_DISPATCH__LEASE_SECONDS=60).
# `gateway config show` prints what is in effect and where it came from.
bank_id = "{bank_id}"
bank_name = {bank_name}
# SQLite file by default; several instances share one PostgreSQL with
# postgresql://USER@HOST:PORT/DB. Keep the password out of this file: name a file holding
# it (a mounted secret) in database_password_file, or set GATEWAY_DATABASE_PASSWORD.
database_url = "sqlite:///gateway.db"
# The bank's private keys (0600) and partners' public key sets (JWKS).
keys_dir = "keys"
# Partner profile files (TOML) live here by convention; add them with `gateway partners add`.
partners_dir = "partners"
# Contact rules checked before sending and after partners report: "cn" or "us-reg-f".
rule_pack = "cn"
# Package signature: ES256 (every JOSE library verifies it) or EdDSA (Ed25519).
signing_alg = "{signing_alg}"
# Where the bank's private keys live: "files" (0600 files in keys/bank/), or the name of
# a key-custody plugin's HSM or KMS.
key_custody = "files"
# The audit log signs a checkpoint (C2SP signed note) every N entries; `gateway audit
# checkpoint` signs one at any time.
audit_checkpoint_every = 1000
# While `gateway serve`, `dispatch` or `place` runs, one is also signed every T seconds
# when the log has grown since the last (0: no timer), and serve and dispatch sign one
# as they stop: no entry stays unsigned longer than T seconds while they run.
audit_checkpoint_seconds = 60
# Witnesses that cosign each new checkpoint (C2SP tlog-witness), one table each:
# [[audit_witnesses]]
# url = "https://witness.example/"
# vkey = "witness.example/w1+1234abcd+BA..."
# `gateway serve` purges the personal data that is due (`gateway retention run`) every
# T seconds (0: no timer; run `gateway retention run` from cron instead).
retention_seconds = 3600

# Dispatchers (`gateway dispatch`, and the one inside `gateway serve`).
[dispatch]
# Seconds a claimed package is held; a crashed dispatcher's packages are claimed again
# after it.
lease_seconds = 120
# Most packages claimed in one transaction.
batch = 50
# Longest sleep of a partner with nothing due, and seconds between looks for new or
# changed partners.
idle_seconds = 2
refresh_seconds = 15
# A partner's rate_per_second and concurrency hold for all dispatchers together (kept in
# the database); a dispatcher renews its hold on concurrency slots while it sends, and
# the slots of one that was killed return after slot_lease_seconds (at most half of
# lease_seconds).
slot_lease_seconds = 10
# The circuit breaker pauses a partner when at least failure_rate of its attempts in the
# last window_seconds failed (counted once the window holds min_attempts), then lets one
# probe through after cooldown_seconds. Every instance sharing the database must agree.
[breaker]
failure_rate = 0.5
min_attempts = 20
window_seconds = 60
cooldown_seconds = 30
"""


def render_config(bank_id: str, bank_name: str, signing_alg: str = "ES256") -> str:
    return CONFIG_TEMPLATE.format(
        bank_id=bank_id, bank_name=json.dumps(bank_name, ensure_ascii=False), signing_alg=signing_alg
    )
