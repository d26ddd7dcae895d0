"""Every hook, used by a plugin installed the way banks install theirs: a distribution
on the path with a ``gateway`` entry point (a dist-info directory, as pip writes it)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import log as audit_log
from gateway.audit.checkpoint import format_vkey, parse_and_verify
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.errors import GatewayError, SealingError
from gateway.http import create_app
from gateway.placement import service as placement
from gateway.placement.seal import verify_signed
from schemas.case import Case
from tests.helpers import EXAMPLES, copy_profile, invoke, sample_case, stored_package, write_partner_keys
from tests.partners import PARTNER, agency_workspace, place_many

PLUGIN = '''
import hashlib
import hmac
import json
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import hookimpl
from gateway.cli.common import with_gateway
from gateway.errors import Unauthorized
from gateway.inbound.formats import CallbackFormat
from gateway.onboarding import registry
from gateway.onboarding.custody import JwkSigner, KeyCustody
from gateway.onboarding.keys import generate_signing_key
from gateway.placement.transforms import Transform

EVENTS = []


class Receipts(CallbackFormat):
    """A partner's own acknowledgements: HMAC-SHA256 of the body, hex, in a header."""

    name = "acme-receipts"

    def verify(self, headers, body, credentials, now):
        given = headers.get("X-Acme-Signature", "")
        for secret in credentials.secrets:
            if hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).hexdigest(), given):
                return "acme-" + json.loads(body)["receipt_id"]
        raise Unauthorized("no valid X-Acme-Signature")

    def event_json(self, body):
        receipt = json.loads(body)
        event = {"type": "accepted", "case_ref": receipt["ref"], "occurred_at": receipt["done"],
                 "partner_reference": receipt["file"]}
        return json.dumps(event).encode()


@hookimpl
def gateway_register_callback_formats(register):
    register(Receipts())


@click.command("acme-partners")
@with_gateway
async def acme_partners(gw):
    """Print the ids of the workspace's partners."""
    click.echo("partners: " + ",".join(r.id for r in await registry.list_all(gw)))


@hookimpl
def gateway_register_commands(cli):
    cli.add_command(acme_partners)


@hookimpl
def gateway_register_rule_packs(register):
    register("acme-strict", Path(__file__).with_name("acme-strict.toml"))


class IdRegion(Transform):
    """Keeps the region code of a resident ID, tokenizes the rest."""

    name = "cn-id-region"
    kinds = frozenset({"text"})

    def check(self, rule):
        if set(rule.options) - {"keep"} or not isinstance(rule.options.get("keep", 6), int):
            raise ValueError("cn-id-region takes one option, keep = <number of characters>")

    def apply(self, value, rule, tokens):
        keep = rule.options.get("keep", 6)
        return value[:keep] + "/" + tokens.token(value[keep:])


@hookimpl
def gateway_register_transforms(register):
    register(IdRegion())


@hookimpl
def gateway_event(event):
    EVENTS.append(event)


class Vault(KeyCustody):
    """Keys that never touch the disk; every signature is counted."""

    name = "acme-vault"

    def __init__(self):
        self.signing = generate_signing_key("ES256")
        self.audit = Ed25519PrivateKey.generate()
        self.signed = 0

    def package_signer(self):
        vault = self

        class Counting(JwkSigner):
            def sign(self, signing_input):
                vault.signed += 1
                return super().sign(signing_input)

        return Counting(self.signing)

    def audit_log_key(self):
        return self.audit

    def public_jwks(self):
        return {"keys": [self.signing.as_dict(private=False)]}


VAULT = []


@hookimpl
def gateway_key_custody(settings):
    if settings.key_custody != "acme-vault":
        return None
    if not VAULT:
        VAULT.append(Vault())
    return VAULT[0]
'''

FAILING_SUBSCRIBER = '''
from gateway import hookimpl


@hookimpl
def gateway_event(event):
    raise RuntimeError("the SIEM is down")
'''


def _distribution(root: Path, module: str, source: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[gateway]\n{module} = {module}\n")


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "site"
    root.mkdir()
    _distribution(root, "acme_hooks", PLUGIN)
    _distribution(root, "acme_failing_siem", FAILING_SUBSCRIBER)
    pack = (Path(__file__).parents[1] / "gateway" / "supervision" / "rulepacks" / "cn.toml").read_text()
    # The bank's stricter pack: the cn pack, under its own name, banning one more phrase.
    stricter = pack.replace('name = "cn"', 'name = "acme-strict"', 1).replace(
        'phrases = ["坐牢",', 'phrases = ["Payment reminder", "坐牢",', 1
    )
    assert stricter.count("acme-strict") == 1 and "Payment reminder" in stricter
    (root / "acme-strict.toml").write_text(stricter)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in ("acme_hooks", "acme_failing_siem"):
        sys.modules.pop(name, None)


def _set(ws: Path, key: str, value: str) -> None:
    """Set a top-level setting of gateway.toml (first, ahead of its tables)."""
    config = ws / "gateway.toml"
    lines = [line for line in config.read_text().splitlines() if not line.startswith(f"{key} =")]
    config.write_text(f'{key} = "{value}"\n' + "\n".join(lines) + "\n")


def test_a_plugin_command_runs_in_a_fresh_process(plugin_path: Path, onboarded: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"], env=env, capture_output=True, text=True, check=True
    )
    assert "acme-partners" in listed.stdout
    ran = subprocess.run(
        [sys.executable, "-m", "gateway", "-c", str(onboarded), "acme-partners"],
        env=env, capture_output=True, text=True,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "partners: acme-collect,notify-mail,notify-sms,sz-arbitration"


def test_a_plugin_rule_pack_is_the_one_enforced(plugin_path: Path, workspace: Path) -> None:
    # Under the built-in pack the email reminder is fine; under the bank's stricter pack
    # its subject ("Payment reminder") is banned wording, refused when onboarding.
    added = invoke("-c", workspace, "partners", "add", EXAMPLES / "partners" / "notify-mail.toml")
    assert added.exit_code == 0, added.output
    _set(workspace, "rule_pack", "acme-strict")
    renewed = copy_profile("notify-mail.toml", workspace, {"MAIL-2026-009": "MAIL-2026-010"})
    result = invoke("-c", workspace, "partners", "add", "--update", renewed)
    assert result.exit_code == 1
    assert "adapter_config.templates.reminder" in result.output and "Payment reminder" in result.output


async def test_a_plugin_transform_shapes_what_leaves(
    plugin_path: Path, workspace: Path, tmp_path: Path
) -> None:
    write_partner_keys(workspace / "keys", "acme-collect", "P-256")
    profile = copy_profile(
        "acme-collect.toml",
        tmp_path,
        {'"debtor.id_number" = { transform = "mask", first = 0, last = 4 }':
         '"debtor.id_number" = { transform = "cn-id-region", options = { keep = 6 } }'},
    )
    assert (await asyncio.to_thread(invoke, "-c", workspace, "partners", "add", profile)).exit_code == 0
    async with await Gateway.open(load_settings(workspace)) as gw:
        case = Case.model_validate_json(sample_case().read_bytes())
        placed = await placement.place(gw, case, "acme-collect", "collection", actor="test")
        shown = await placement.show(gw, placed.package_id)
    region, _, token = shown["claims"]["data"]["debtor"]["id_number"].partition("/")
    assert region == "110101" and token.startswith("tok_") and "19900307" not in token

    (tmp_path / "bad").mkdir()
    bad = copy_profile(
        "acme-collect.toml",
        tmp_path / "bad",
        {'"debtor.id_number" = { transform = "mask", first = 0, last = 4 }':
         '"debtor.id_number" = { transform = "cn-id-region", options = { digits = 6 } }'},
    )
    refused = await asyncio.to_thread(invoke, "-c", workspace, "partners", "add", "--update", bad)
    assert refused.exit_code == 1 and "cn-id-region takes one option" in refused.output


async def test_events_reach_subscribers_after_commit_and_a_failing_one_blocks_nothing(
    plugin_path: Path, onboarded: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import acme_hooks  # type: ignore[import-not-found]

    acme_hooks.EVENTS.clear()
    async with await Gateway.open(load_settings(onboarded)) as gw:
        case = Case.model_validate_json(sample_case().read_bytes())
        placed = await placement.place(gw, case, "acme-collect", "collection", actor="test")
        with pytest.raises(GatewayError):  # the contract does not cover litigation: nothing happened
            await placement.place(gw, case, "acme-collect", "litigation", actor="test")
    kinds = [e.kind for e in acme_hooks.EVENTS]
    assert kinds == ["disclosure"], kinds
    event = acme_hooks.EVENTS[0]
    assert event.partner == "acme-collect" and event.case and event.case.startswith("case_")
    assert event.detail["package_id"] == placed.package_id
    assert "张伟" not in repr(event) and "13812341999" not in repr(event)
    failures = [r.getMessage() for r in caplog.records if "acme_failing_siem" in r.getMessage()]
    assert failures == ["event subscriber acme_failing_siem failed on disclosure: RuntimeError"]


async def test_a_key_custody_plugin_signs_packages_and_checkpoints(
    plugin_path: Path, onboarded: Path
) -> None:
    import acme_hooks

    _set(onboarded, "key_custody", "acme-vault")
    (onboarded / "keys" / "bank" / "audit-log.vkey").unlink()  # the vault's key is another one
    async with await Gateway.open(load_settings(onboarded)) as gw:
        case = Case.model_validate_json(sample_case().read_bytes())
        placed = await placement.place(gw, case, "acme-collect", "collection", actor="test")
        signed = (await stored_package(gw, placed.package_id))["signed"]
        vault = acme_hooks.VAULT[0]
        assert vault.signed == 1
        assert verify_signed(signed, vault.public_jwks())["jti"] == placed.package_id
        with pytest.raises(SealingError):  # not the key on disk
            verify_signed(signed, gw.keys.public_jwks())
        vkey = format_vkey(gw.audit_signer.origin, vault.audit.public_key())
        assert gw.audit_signer.vkey == vkey
        note = (await audit_log.checkpoint_now(gw.db, gw.audit_signer)).note
    assert parse_and_verify(note, vkey).size >= 1



async def test_deliveries_and_dead_packages_reach_event_subscribers(
    plugin_path: Path, tmp_path: Path
) -> None:
    import acme_hooks

    acme_hooks.EVENTS.clear()
    async with agency_workspace(tmp_path) as (gw, agency, _):
        delivered, rejected = await place_many(gw, 2)
        agency.script.extend(["ok", "reject"])
        stats = await Dispatcher(gw).run_once()
    assert (stats.delivered, stats.dead) == (1, 1)
    by_kind = {e.kind: e for e in acme_hooks.EVENTS if e.kind in ("delivered", "dead")}
    assert by_kind["delivered"].detail["package_id"] in (delivered, rejected)
    dead = by_kind["dead"]
    assert dead.partner == PARTNER and dead.detail["status"] == "422"
    assert {by_kind["delivered"].detail["package_id"], dead.detail["package_id"]} == {delivered, rejected}


async def test_a_plugin_callback_format_takes_reports_in_its_own_shape(
    plugin_path: Path, onboarded: Path, tmp_path: Path, aiohttp_client: Any
) -> None:
    own_format = {'sealing = "jwe"': 'sealing = "jwe"\ncallback_format = "acme-receipts"'}
    profile = copy_profile("acme-collect.toml", tmp_path, own_format)
    updated = await asyncio.to_thread(invoke, "-c", onboarded, "partners", "add", "--update", profile)
    assert updated.exit_code == 0, updated.output
    async with await Gateway.open(load_settings(onboarded)) as gw:
        case = Case.model_validate_json(sample_case().read_bytes())
        placed = await placement.place(gw, case, "acme-collect", "collection", actor="test")
        gw.keys.add_webhook_secret("acme-collect")
        [secret] = gw.keys.webhook_secrets("acme-collect")
        client = await aiohttp_client(create_app(gw.settings, gateway=gw))
        receipt = {"receipt_id": "R-1", "ref": placed.case_ref, "file": "ACME-F-9",
                   "done": datetime.now(UTC).isoformat()}
        body = json.dumps(receipt).encode()

        async def post(partner: str, signature: str) -> Any:
            return await client.post(
                f"/v1/partners/{partner}/callbacks/acme-receipts", data=body,
                headers={"X-Acme-Signature": signature, "Content-Type": "application/json"},
            )

        good = hmac.new(secret, body, hashlib.sha256).hexdigest()
        taken = await post("acme-collect", good)
        assert taken.status == 202, await taken.text()
        assert (await taken.json())["state"] == "active"
        assert (await post("acme-collect", good)).status == 409  # the same receipt id again
        assert (await post("acme-collect", "0" * 64)).status == 401
        # A partner whose profile does not name the format cannot use it.
        assert (await post("sz-arbitration", good)).status == 401
        async with gw.db.transaction() as tx:
            stored = await tx.fetchall("SELECT type, partner_id FROM events")
    assert stored == [{"type": "accepted", "partner_id": "acme-collect"}]
