"""Keys in an HSM: ``key_custody = "pkcs11"`` against a SoftHSM2 token. `gateway init`
makes the audit log key and the package-signing key inside the token (sensitive, never
extractable, never a file); checkpoints and packages verify with the published public
keys; a rotation makes the next key in the token."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkcs11 import Attribute

from gateway.audit.checkpoint import parse_and_verify
from gateway.config import load_settings, render_config
from gateway.core import Gateway
from gateway.onboarding.hsm import AUDIT_KEY_ID, Pkcs11Custody
from gateway.placement.seal import verify_signed
from tests.helpers import EXAMPLES, SAMPLE_KEY_CURVES, invoke, sample_case, stored_package, write_partner_keys
from tests.softhsm import LABEL, PIN, SoftToken

_workspaces = itertools.count(1)


@pytest.fixture(scope="module")
def token() -> Iterator[SoftToken]:
    soft = SoftToken()
    yield soft
    soft.close()


def ok(*args: str | Path) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(params=["ES256", "EdDSA"])
def hsm_workspace(
    request: pytest.FixtureRequest, token: SoftToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A workspace initialised with its keys in the token (labels of its own)."""
    monkeypatch.setenv("GATEWAY_PKCS11_PIN", PIN)
    n = next(_workspaces)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "gateway.toml").write_text(
        render_config("example-bank", "Example Bank", request.param).replace(
            'key_custody = "files"', 'key_custody = "pkcs11"'
        )
        + "\n[pkcs11]\n"
        + f'module = "{token.module}"\ntoken = "{LABEL}"\n'
        + f'signing_label = "signing-{n}"\naudit_label = "audit-{n}"\n'
    )
    out = ok("init", ws)
    assert f"audit log key (in token {LABEL})" in out and f"signing key (in token {LABEL})" in out
    return ws


def test_init_makes_the_keys_in_the_token_and_no_private_key_file(hsm_workspace: Path) -> None:
    bank = hsm_workspace / "keys" / "bank"
    # The storage key-encryption key is a file under every custody so far (see docs/data-protection.md).
    files = ["audit-log.vkey", "jwks.json", "pseudonym.key", "storage.kek"]
    assert sorted(p.name for p in bank.iterdir()) == files
    custody = Pkcs11Custody(load_settings(hsm_workspace))
    kid = json.loads((bank / "jwks.json").read_text())["keys"][0]["kid"]
    labels = ((custody.config.audit_label, AUDIT_KEY_ID), (custody.config.signing_label, kid.encode()))
    for label, key_id in labels:
        private = custody.token.find(True, label, key_id)
        assert private is not None, label
        assert private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE]
    # Again: nothing is made twice.
    assert "all present, kept" in ok("init", hsm_workspace)


def test_checkpoints_and_packages_verify_with_the_published_keys(hsm_workspace: Path) -> None:
    for pid, crv in SAMPLE_KEY_CURVES.items():
        write_partner_keys(hsm_workspace / "keys", pid, crv)
    ok("-c", hsm_workspace, "partners", "add", EXAMPLES / "partners" / "acme-collect.toml")
    place = ("place", sample_case(), "--partner", "acme-collect", "--purpose", "collection")
    first = ok("-c", hsm_workspace, *place).strip()
    note = ok("-c", hsm_workspace, "audit", "checkpoint")
    vkey = (hsm_workspace / "keys" / "bank" / "audit-log.vkey").read_text().strip()
    assert parse_and_verify(note, vkey).size == 2
    assert ok("-c", hsm_workspace, "audit", "verify", "--vkey", vkey).startswith("OK: 2 entries")

    ok("-c", hsm_workspace, "keys", "rotate")
    jwks = json.loads((hsm_workspace / "keys" / "bank" / "jwks.json").read_text())
    assert len(jwks["keys"]) == 2
    second = ok("-c", hsm_workspace, "place", sample_case("case-1002.json"), *place[2:]).strip()

    async def signed_tokens() -> list[str]:
        async with await Gateway.open(load_settings(hsm_workspace)) as gw:
            return [(await stored_package(gw, package))["signed"] for package in (first, second)]

    signed = asyncio.run(signed_tokens())
    assert len(signed) == 2
    kids = []
    for token in signed:
        assert verify_signed(token, jwks)["iss"] == "example-bank"
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        kids.append(header["kid"])
    assert kids == [jwks["keys"][1]["kid"], jwks["keys"][0]["kid"]]  # the old key, then the new one
    # No private key file anywhere in the workspace (the pseudonymization key aside).
    assert not list(hsm_workspace.rglob("*.pem")) and not list(hsm_workspace.rglob("signing.jwk"))
