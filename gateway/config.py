"""``gateway.toml``: the settings of one gateway workspace.

Relative paths in the file are relative to the file's own directory, so a workspace can
be moved or copied as a whole.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
CONFIG_NAME = "gateway.toml"
ENV_VAR = "GATEWAY_CONFIG"
# Overrides database_url, so a PostgreSQL password need not sit in gateway.toml.
DATABASE_ENV_VAR = "GATEWAY_DATABASE_URL"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bank_id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$", description="JWT issuer")
    bank_name: str = ""
    database_url: str = "sqlite:///gateway.db"
    keys_dir: Path = Path("keys")
    partners_dir: Path = Path("partners")
    rule_pack: str = "cn"
    signing_alg: Literal["ES256", "EdDSA"] = "ES256"
    key_custody: str = Field(
        default="files", description="where the bank's private keys live: files, or a plugin's custody"
    )
    audit_checkpoint_every: int = Field(default=1000, ge=1, description="sign a checkpoint every N entries")
    audit_checkpoint_seconds: int = Field(
        default=300,
        ge=0,
        description="`gateway serve` also signs a checkpoint every T seconds if the log grew; 0: no timer",
    )
    retention_seconds: int = Field(
        default=3600,
        ge=0,
        description="`gateway serve` purges the personal data that is due every T seconds; 0: no timer",
    )
    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolved(self, base: Path) -> Settings:
        """Return a copy whose paths are absolute, relative ones taken from ``base``."""
        url = self.database_url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = "sqlite:///" + str(base / url.removeprefix("sqlite:///"))
        return self.model_copy(
            update={
                "base_dir": base,
                "database_url": url,
                "keys_dir": base / self.keys_dir,
                "partners_dir": base / self.partners_dir,
            }
        )


def default_config_path() -> Path:
    return Path(os.environ.get(ENV_VAR, CONFIG_NAME))


def load_settings(path: Path | None = None) -> Settings:
    path = path or default_config_path()
    if path.is_dir():
        path = path / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: not found; run `gateway init` to create a workspace, "
            f"or point --config / {ENV_VAR} at its gateway.toml"
        ) from None
    settings = parse_toml(text, str(path), Settings)
    if os.environ.get(DATABASE_ENV_VAR):
        settings = settings.model_copy(update={"database_url": os.environ[DATABASE_ENV_VAR]})
    return settings.resolved(path.resolve().parent)


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


def first_error(exc: ValidationError) -> str:
    """One line for the first problem pydantic found: ``field.path: message``."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "(top level)"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def render_config(bank_id: str, bank_name: str, signing_alg: str = "ES256") -> str:
    return f"""\
# Agency Gateway workspace. Relative paths are relative to this file.
bank_id = "{bank_id}"
bank_name = "{bank_name}"
# SQLite file by default; several instances share one PostgreSQL with
# postgresql://USER@HOST:PORT/DB (the environment's GATEWAY_DATABASE_URL wins over this).
database_url = "sqlite:///gateway.db"
# The bank's private keys (0600) and partners' public key sets (JWKS).
keys_dir = "keys"
# Partner profile files (TOML) live here by convention; add them with `gateway partners add`.
partners_dir = "partners"
# Contact rules checked before sending and after partners report: "cn" or "us-reg-f".
rule_pack = "cn"
# Package signature: ES256 (every JOSE library verifies it) or EdDSA (Ed25519).
signing_alg = "{signing_alg}"
# The audit log signs a checkpoint (C2SP signed note) every N entries; `gateway audit
# checkpoint` signs one at any time.
audit_checkpoint_every = 1000
# `gateway serve` also signs one every T seconds when the log has grown since the last
# (0: no timer).
audit_checkpoint_seconds = 300
# `gateway serve` purges the personal data that is due (`gateway retention run`) every
# T seconds (0: no timer; run `gateway retention run` from cron instead).
retention_seconds = 3600
"""
