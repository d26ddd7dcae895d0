"""Settings in one place: gateway.toml, each overridable from the environment, and
`gateway config show` saying what is in effect and where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import DATABASE_ENV_VAR, env_name, flat_settings, load_settings
from tests.helpers import invoke

#: A value for every setting that differs from what `gateway init` writes; a setting
#: added without a line here fails the first test.
OVERRIDES = {
    "bank_id": "other-bank",
    "bank_name": "Other Bank",
    "database_url": "sqlite:///elsewhere.db",
    "database_password": "not-shown",
    "database_password_file": "secret.txt",
    "keys_dir": "other-keys",
    "partners_dir": "other-partners",
    "rule_pack": "us-reg-f",
    "signing_alg": "EdDSA",
    "key_custody": "acme-hsm",
    "audit_checkpoint_every": "77",
    "audit_checkpoint_seconds": "9",
    "dispatch.lease_seconds": "33",
    "dispatch.batch": "7",
    "dispatch.idle_seconds": "0.5",
    "dispatch.refresh_seconds": "4",
    "dispatch.slot_lease_seconds": "6",
    "checkpoint_max_lag_seconds": "30",
    "watch_seconds": "5",
    "log_format": "json",
    "log_level": "debug",
    "event_loop": "asyncio",
    "metrics_port": "9102",
    "metrics_host": "127.0.0.2",
    "alerts.webhooks": "[]",
    "alerts.email": "[]",
    "alerts.tries": "2",
    "alerts.backoff": "0.5",
    "alerts.queue": "10",
    "breaker.failure_rate": "0.25",
    "breaker.min_attempts": "5",
    "breaker.window_seconds": "30",
    "breaker.cooldown_seconds": "10",
    "audit_witnesses": "[]",
    "pkcs11": "null",
    "retention_seconds": "60",
}


def _settings_names(ws: Path) -> set[str]:
    return set(flat_settings(load_settings(ws).model_dump(mode="json", exclude={"base_dir"})))


def test_every_setting_is_overridden_by_its_environment_variable(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    assert set(OVERRIDES) == _settings_names(workspace)
    (workspace / "secret.txt").write_text("s3cret\n")
    for name, value in OVERRIDES.items():
        monkeypatch.setenv(env_name(name), value)
    settings = load_settings(workspace)
    got = flat_settings(settings.model_dump(mode="json", exclude={"base_dir"}))
    assert got["bank_id"] == "other-bank" and got["signing_alg"] == "EdDSA"
    assert got["dispatch.batch"] == 7 and got["dispatch.lease_seconds"] == 33.0
    assert got["keys_dir"] == str(workspace / "other-keys")
    assert got["database_url"] == f"sqlite:///{workspace / 'elsewhere.db'}"
    shown = json.loads(invoke("-c", workspace, "config", "show", "--json").output)
    sources = {row["setting"]: row["from"] for row in shown}
    assert sources == {name: env_name(name) for name in OVERRIDES}
    assert {row["setting"]: row["value"] for row in shown}["database_password"] == "***"


def test_config_show_says_file_or_default_and_hides_passwords(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATABASE_ENV_VAR, raising=False)
    config = workspace / "gateway.toml"
    config.write_text(
        config.read_text().replace(
            'database_url = "sqlite:///gateway.db"',
            'database_url = "postgresql://gw@127.0.0.1:1/gw"\ndatabase_password_file = "pw.txt"',
        ).replace("batch = 50\n", "")
    )
    (workspace / "pw.txt").write_text("pa/ss@word\n")
    settings = load_settings(workspace)
    assert settings.database_url == "postgresql://gw:pa%2Fss%40word@127.0.0.1:1/gw"
    result = invoke("-c", workspace, "config", "show")
    assert result.exit_code == 0, result.output
    assert "pa/ss" not in result.output and "pa%2Fss" not in result.output
    shown = json.loads(invoke("-c", workspace, "config", "show", "--json").output)
    rows = {row["setting"]: row for row in shown}
    assert rows["database_url"]["value"] == "postgresql://gw:***@127.0.0.1:1/gw"
    assert rows["database_password_file"]["from"] == str(config)
    assert (rows["dispatch.batch"]["value"], rows["dispatch.batch"]["from"]) == ("50", "default")


def test_a_bad_value_from_the_environment_names_the_variable(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_DISPATCH__BATCH", "lots")
    result = invoke("-c", workspace, "config", "show")
    assert result.exit_code == 1
    assert "dispatch.batch (from $GATEWAY_DISPATCH__BATCH)" in result.output
    assert "Traceback" not in result.output


def test_a_gateway_toml_that_is_not_utf8_is_one_line(workspace: Path) -> None:
    (workspace / "gateway.toml").write_bytes(b'bank_name = "\xff\xfe"\n')
    result = invoke("-c", workspace, "config", "show")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "not UTF-8" in result.output
