"""A profile's paths and endpoint name one host: requests never leave it.

A path under the endpoint is joined onto the endpoint's origin; one that does not
start with a single ``/``, or holds ``@``, ``//``, ``\\``, control characters or their
percent-encoded forms, is refused at onboarding, as is an endpoint without a host or
with user information. A profile stored before these rules is skipped, never sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from gateway.delivery.dispatch import Dispatcher
from tests.helpers import copy_profile, invoke
from tests.partners import PARTNER, agency_workspace, place_many, rows

ACME = "acme-collect.toml"
PACKAGES = 'packages_path = "/packages"'
TEMPLATES = "[adapter_config.templates.reminder]"

# (profile, replacement, field named, words of the problem)
BAD_URLS = {
    "path to another port": (ACME, {PACKAGES: 'packages_path = "@127.0.0.1:18702/steal"'},
                             "adapter_config.packages_path", "must start with a single '/'"),
    "relative path": (ACME, {PACKAGES: 'packages_path = "packages"'},
                      "adapter_config.packages_path", "must start with a single '/'"),
    "empty path": (ACME, {PACKAGES: 'packages_path = ""'}, "adapter_config.packages_path", "single '/'"),
    "scheme-relative": (ACME, {PACKAGES: 'packages_path = "//evil.example/x"'},
                        "adapter_config.packages_path", "holds '//'"),
    "at sign": (ACME, {PACKAGES: 'packages_path = "/x@evil.example"'},
                "adapter_config.packages_path", "holds '@'"),
    "backslash": (ACME, {PACKAGES: "packages_path = '/\\evil.example'"},
                  "adapter_config.packages_path", "holds a backslash"),
    "CR LF": (ACME, {PACKAGES: 'packages_path = "/p\\r\\nHost: evil"'},
              "adapter_config.packages_path", "holds a control character (U+000D)"),
    "NUL": (ACME, {PACKAGES: 'packages_path = "/p\\u0000"'}, "adapter_config.packages_path", "holds"),
    "C1 control": (ACME, {PACKAGES: 'packages_path = "/p\\u0085"'}, "adapter_config.packages_path", "holds"),
    "encoded slashes": (ACME, {PACKAGES: 'packages_path = "/%2f%2Fevil.example"'},
                        "adapter_config.packages_path", "(percent-encoded)"),
    "encoded at": (ACME, {PACKAGES: 'packages_path = "/%40evil"'}, "adapter_config.packages_path", "'@'"),
    "encoded backslash": (ACME, {PACKAGES: 'packages_path = "/%5Cevil"'},
                          "adapter_config.packages_path", "(percent-encoded)"),
    "encoded CR": (ACME, {PACKAGES: 'packages_path = "/p%0d%0a"'},
                   "adapter_config.packages_path", "a control character (U+000D) (percent-encoded)"),
    "encoded twice": (ACME, {PACKAGES: 'packages_path = "/%252f/evil"'},
                      "adapter_config.packages_path", "(percent-encoded)"),
    "status feed path": (ACME, {PACKAGES: f'{PACKAGES}\nstatus_feed_path = "@evil.example/feed"'},
                         "adapter_config.status_feed_path", "single '/'"),
    "filings path": ("shenzhen-arbitration.toml", {'filings_path = "/filings"': 'filings_path = "@x:1/f"'},
                     "adapter_config.filings_path", "single '/'"),
    "arbitration status path": (
        "shenzhen-arbitration.toml",
        {'filings_path = "/filings"': 'filings_path = "/filings"\nstatus_path = "/s//x"'},
        "adapter_config.status_path", "'//'",
    ),
    "sms send path": (
        "notify-sms.toml", {TEMPLATES: f'[adapter_config]\nsend_path = "@127.0.0.1:1/x"\n{TEMPLATES}'},
        "adapter_config.send_path", "single '/'",
    ),
    "endpoint without host": (ACME, {'endpoint = "https://127.0.0.1:18441"': 'endpoint = "https://"'},
                              "endpoint", "names no host"),
    "endpoint with only a port": (ACME, {'endpoint = "https://127.0.0.1:18441"': 'endpoint = "https://:18441"'},
                                  "endpoint", "names no host"),
    "endpoint with userinfo": (
        ACME, {'endpoint = "https://127.0.0.1:18441"': 'endpoint = "https://u:p@127.0.0.1:18441"'},
        "endpoint", "user information",
    ),
    "endpoint host hidden as userinfo": (
        ACME, {'endpoint = "https://127.0.0.1:18441"': 'endpoint = "https://127.0.0.1:18441@evil.example"'},
        "endpoint", "user information",
    ),
    "endpoint with backslash": (
        ACME, {'endpoint = "https://127.0.0.1:18441"': "endpoint = 'https://evil.example\\@127.0.0.1:18441'"},
        "endpoint", "holds a backslash",
    ),
    "smtp endpoint with userinfo": (
        "notify-mail.toml", {'endpoint = "smtp://127.0.0.1:18025"': 'endpoint = "smtp://a@127.0.0.1:18025"'},
        "endpoint", "user information",
    ),
}


@pytest.mark.parametrize("case", BAD_URLS, ids=list(BAD_URLS))
def test_a_path_or_endpoint_that_could_leave_the_host_is_refused(
    case: str, workspace: Path, partner_keys: dict, tmp_path: Path
) -> None:
    name, replace, field, words = BAD_URLS[case]
    profile = copy_profile(name, tmp_path, replace)
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1, result.output
    assert f"{profile}: {field}: " in result.output and words in result.output, result.output
    assert json.loads(invoke("-c", workspace, "partners", "list", "--json").output) == []


def test_a_plain_path_and_a_base_path_on_the_endpoint_are_accepted(
    workspace: Path, partner_keys: dict, tmp_path: Path
) -> None:
    profile = copy_profile(ACME, tmp_path, {
        'endpoint = "https://127.0.0.1:18441"': 'endpoint = "https://127.0.0.1:18441/api/v2/"',
        PACKAGES: 'packages_path = "/cases/new-packages?v=2"',
    })  # fmt: skip
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 0, result.output


async def test_a_stored_path_naming_another_host_sends_nothing_there(tmp_path: Path) -> None:
    """A profile stored before the rule, its path turning the endpoint into user
    information: the package must reach neither the other port nor anywhere else."""
    stolen: list[str] = []

    async def steal(request: web.Request) -> web.Response:
        stolen.append(await request.text())
        return web.json_response({"reference": "STOLEN"}, status=201)

    async with agency_workspace(tmp_path) as (gw, agency, ca):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", steal)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ca.server_context("thief"))
        await site.start()
        thief_port = runner.addresses[0][1]
        try:
            [row] = await rows(gw, "SELECT profile FROM partners WHERE id = ?", (PARTNER,))
            profile = json.loads(row["profile"])
            profile["adapter_config"]["packages_path"] = f"@127.0.0.1:{thief_port}/steal"
            async with gw.db.transaction() as tx:
                await tx.execute(
                    "UPDATE partners SET profile = ? WHERE id = ?", (json.dumps(profile), PARTNER)
                )
            [package_id] = await place_many(gw, 1)
            await Dispatcher(gw).run_once()
        finally:
            await runner.cleanup()
        assert stolen == []
        assert agency.requests[package_id] == 0
        [package] = await rows(gw, "SELECT state FROM packages")
        assert package["state"] != "delivered"
