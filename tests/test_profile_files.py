"""Profiles that could never deliver are refused at onboarding, with one line.

A TLS file the profile names (a CA bundle, a client certificate or key) that is missing
or not PEM, and an e-mail subject holding a line break, failed every attempt the same
way (logged as an adapter's bug); now onboarding says so, and a file that disappears
after onboarding stops the partner's lane with one line, no traceback.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.delivery.dispatch import Dispatcher
from tests.helpers import copy_profile, invoke
from tests.partners import agency_workspace, place_many, rows

ACME = "acme-collect.toml"
PACKAGES = 'packages_path = "/packages"'
SUBJECT = 'subject = "Payment reminder"'


def cases(tmp_path: Path) -> dict[str, tuple[str, dict[str, str], str, str]]:
    """By name: (sample profile, replacements, field named, words of the refusal); the
    files named are in ``tmp_path``: garbage.pem holds no PEM, nowhere.pem is not there."""
    garbage = tmp_path / "garbage.pem"
    missing = tmp_path / "nowhere.pem"
    return {
        "missing ca_file": (ACME, {PACKAGES: f'{PACKAGES}\nca_file = "{missing}"'},
                            "adapter_config.ca_file", "No such file"),
        "missing client_cert": (ACME, {PACKAGES: f'{PACKAGES}\nclient_cert = "{missing}"'},
                                "adapter_config.client_cert", "No such file"),
        "missing client_key": (
            ACME, {PACKAGES: f'{PACKAGES}\nclient_cert = "{garbage}"\nclient_key = "{missing}"'},
            "adapter_config.client_key", "No such file",
        ),
        "key without cert": (ACME, {PACKAGES: f'{PACKAGES}\nclient_key = "{garbage}"'},
                             "adapter_config", "client_key is set without client_cert"),
        "ca_file not PEM": (ACME, {PACKAGES: f'{PACKAGES}\nca_file = "{garbage}"'},
                            "adapter_config", "is not a PEM CA bundle"),
        "client pair not PEM": (ACME, {PACKAGES: f'{PACKAGES}\nclient_cert = "{garbage}"'},
                                "adapter_config", "cannot be loaded as a PEM pair"),
        "ca_file a directory": (ACME, {PACKAGES: f'{PACKAGES}\nca_file = "{tmp_path}"'},
                                "adapter_config.ca_file", "cannot read"),
        "mail ca_file missing": (
            "notify-mail.toml", {'tls = "starttls"': f'tls = "starttls"\nca_file = "{missing}"'},
            "adapter_config.ca_file", "No such file",
        ),
        "subject with CR LF": (
            "notify-mail.toml", {SUBJECT: 'subject = "Payment reminder\\r\\nBcc: someone@elsewhere.example"'},
            "adapter_config.templates.reminder.subject", "holds a control character (U+000D)",
        ),
        "subject with LF": ("notify-mail.toml", {SUBJECT: 'subject = "Payment\\nreminder"'},
                            "adapter_config.templates.reminder.subject", "(U+000A)"),
        "subject with bidi override": ("notify-mail.toml", {SUBJECT: 'subject = "Payment \\u202ereminder"'},
                                       "adapter_config.templates.reminder.subject", "(U+202E)"),
    }  # fmt: skip


CASES = list(cases(Path("/nonexistent")))


@pytest.mark.parametrize("case", CASES)
def test_a_profile_that_cannot_deliver_is_refused_with_one_line(
    case: str, workspace: Path, partner_keys: dict, tmp_path: Path
) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    name, replace, field, words = cases(tmp_path)[case]
    profile = copy_profile(name, tmp_path, replace)
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert f"{profile}: {field}: " in result.output and words in result.output, result.output
    assert json.loads(invoke("-c", workspace, "partners", "list", "--json").output) == []


async def test_a_ca_file_gone_after_onboarding_stops_the_lane_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with agency_workspace(tmp_path) as (gw, agency, ca):
        ca.ca_file.rename(ca.ca_file.with_suffix(".moved"))
        await place_many(gw, 1)
        with caplog.at_level(logging.INFO):
            await Dispatcher(gw).run_once()
        assert not agency.requests
        [package] = await rows(gw, "SELECT state, attempts FROM packages")
        assert package["state"] == "queued" and package["attempts"] == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all("Traceback" not in r.getMessage() and not r.exc_info for r in errors)
    assert any("ca_file" in r.getMessage() and "skipped" in r.getMessage() for r in errors)
