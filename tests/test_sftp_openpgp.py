"""File partners that take only OpenPGP: GnuPG's own ``gpg`` command plays the partner
(as a partner's operator would run it, tests/gnupg.py) against batches the gateway
leaves on a real SFTP server on 127.0.0.1, and signs the status files it sends back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway import hookimpl
from gateway.cli.placement import read_case
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.inbound import poller
from gateway.onboarding import registry
from gateway.ops.alerts import alert_of
from gateway.placement import recall
from gateway.placement import service as placement
from gateway.plugin.events import Event
from tests.gnupg import Gpg
from tests.helpers import invoke
from tests.partners import CASE, REPO, init_workspace, rows
from tests.test_sftp_batch import Agency, accepted, kill_mid_upload, serving

EXAMPLE = REPO / "examples" / "channels" / "files-agency-pgp.toml"
PARTNER = "pgp-agency"
#: What the example profile discloses for collection: the partner must get these leaves, no more
#: (the numbers it receives in clear come with their tokens beside them, to report back).
DISCLOSED = {
    "debtor.name", "debtor.phones[].number", "debtor.phones[].number_token", "debtor.id_number",
    "debtor.timezone", "loan.currency", "loan.outstanding", "loan.overdue_since",
}  # fmt: skip


def pgp_workspace(ws: Path, gpg: Gpg, port: int, agency: Agency, *, key: str | None = None,
                  fingerprint: str | None = None) -> Path:  # fmt: skip
    """A workspace with the bank's OpenPGP key (made with the CLI) and the example PGP
    profile pointed at ``agency``: ``key`` is the partner key given, ``fingerprint`` the
    one the profile pins (both the partner's complete key by default)."""
    init_workspace(ws)
    made = invoke("-c", ws, "keys", "openpgp", "generate")
    assert made.exit_code == 0, made.output
    partners = ws / "keys" / "partners"
    (partners / f"{PARTNER}.asc").write_bytes(gpg.export(key or gpg.partner))
    ssh_key = partners / f"{PARTNER}.key"
    ssh_key.write_bytes(agency.bank_key.export_private_key())
    ssh_key.chmod(0o600)
    text = EXAMPLE.read_text().replace("sftp.pgp-agency.example:22", f"127.0.0.1:{port}")
    host = agency.host_key.export_public_key().decode().strip()
    text = re.sub(r'host_keys = \[".*"\]', f'host_keys = ["{host}"]', text)
    text = re.sub(r'fingerprint = ".*"', f'fingerprint = "{fingerprint or gpg.partner}"', text)
    text = text.replace("concurrency = 200", "concurrency = 10")
    text = text.replace("max_records = 200", "max_records = 10")
    text = text.replace("max_wait = 20", "max_wait = 0.5").replace("timeout = 60", "timeout = 10")
    profile = ws / f"{PARTNER}.toml"
    profile.write_text(text)
    return profile


class Seen:
    """A `gateway_event` subscriber: the events the gateway raised."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def gateway_event(self, event: Event) -> None:
        self.events.append(event)


@asynccontextmanager
async def pgp_partner(tmp_path: Path, gpg: Gpg) -> AsyncIterator[tuple[Gateway, Agency, Seen]]:
    agency = Agency(tmp_path / "agency")
    async with serving(agency):
        ws = tmp_path / "ws"
        profile = await asyncio.to_thread(pgp_workspace, ws, gpg, agency.port, agency)  # the CLI runs a loop
        bank_public = invoke("-c", ws, "keys", "openpgp", "export")
        assert bank_public.exit_code == 0 and "PRIVATE" not in bank_public.stdout
        (tmp_path / "bank.asc").write_text(bank_public.stdout)
        gpg("--import", tmp_path / "bank.asc")  # what the partner does with the bank's key
        async with await Gateway.open(load_settings(ws)) as gw:
            await registry.add(gw, profile, actor="t")  # the CLI cannot run in the test's loop
            seen = Seen()
            gw.pm.register(seen)
            yield gw, agency, seen


def bank_fingerprint(gw: Gateway) -> str:
    shown = invoke("-c", gw.settings.base_dir, "keys", "openpgp", "export")
    return shown.stderr.split()[-1]


def open_batches(gpg: Gpg, gw: Gateway, agency: Agency) -> dict[str, list[dict[str, Any]]]:
    """What the partner does with each batch, with gpg: verify the manifest's signature
    (the bank's key), check the encrypted file's digest, decrypt and verify it."""
    inbound = agency.root / "inbound"
    bank = bank_fingerprint(gw)
    opened = {}
    for manifest_file in sorted(inbound.glob("*.manifest.json")):
        verified = gpg("--verify", f"{manifest_file}.asc", manifest_file)
        assert gpg.signed_by(verified) == [bank]
        manifest = json.loads(manifest_file.read_bytes())
        encrypted = inbound / manifest["file"]
        assert manifest["sha256"] == hashlib.sha256(encrypted.read_bytes()).hexdigest()
        decrypted = gpg("--decrypt", encrypted)
        assert gpg.signed_by(decrypted) == [bank] and b"DECRYPTION_OKAY" in decrypted.stderr
        records = [json.loads(line) for line in decrypted.stdout.decode().splitlines()]
        assert manifest["count"] == len(records) and manifest["signer"] == bank
        assert [p["package_id"] for p in manifest["packages"]] == [r["package_id"] for r in records]
        opened[manifest["batch_id"]] = records
    return opened


def leaves(data: Any, prefix: str = "") -> set[str]:
    if isinstance(data, dict):
        return set().union(*(leaves(v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()))
    if isinstance(data, list):
        return set().union(*(leaves(v, prefix + "[]") for v in data))
    return {prefix}


async def place(gw: Gateway, count: int) -> list[placement.Placement]:
    case = read_case(CASE)
    cases = [case.model_copy(update={"case_id": f"C-P-{n}"}) for n in range(count)]
    return [await placement.place(gw, c, PARTNER, "collection", actor="t") for c in cases]


async def test_the_partner_decrypts_and_verifies_a_batch_and_gets_only_the_minimized_fields(
    tmp_path: Path, gpg: Gpg
) -> None:
    async with pgp_partner(tmp_path, gpg) as (gw, agency, _):
        placed = await place(gw, 3)
        stats = await Dispatcher(gw).run_once()
        packages = await rows(gw, "SELECT id, state, partner_ref, sealing FROM packages")
        [opened] = open_batches(gpg, gw, agency).values()
    assert stats.delivered == 3
    assert {(p["state"], p["sealing"]) for p in packages} == {("delivered", "openpgp")}
    assert sorted(r["package_id"] for r in opened) == sorted(p.package_id for p in placed)
    case = read_case(CASE)
    for record in opened:
        package = record["package"]
        named = (package["jti"], package["aud"], package["purpose"])
        assert named == (record["package_id"], PARTNER, "collection")
        assert leaves(package["data"]) == DISCLOSED
        assert package["data"]["debtor"]["id_number"].endswith(case.debtor.id_number[-4:])
        assert case.debtor.id_number not in json.dumps(record)
        assert case.debtor.email not in json.dumps(record)  # not listed: never leaves
    files = sorted(p.name for p in (agency.root / "inbound").iterdir())
    batch_id = packages[0]["partner_ref"]
    assert files == [f"{batch_id}.jsonl.pgp", f"{batch_id}.manifest.json", f"{batch_id}.manifest.json.asc"]
    assert b"debtor" not in (agency.root / "inbound" / f"{batch_id}.jsonl.pgp").read_bytes()


async def test_an_openpgp_batch_killed_mid_upload_is_resent_whole_and_still_opens(
    tmp_path: Path, gpg: Gpg
) -> None:
    async with pgp_partner(tmp_path, gpg) as (gw, agency, _):
        placed = await place(gw, 4)
        partial = await kill_mid_upload(gw, agency)
        agency.hold = False
        agency.released.set()
        await asyncio.sleep(1.2)  # the dead dispatcher's leases expire
        stats = await Dispatcher(gw).run_once()
        [(batch_id, records)] = open_batches(gpg, gw, agency).items()
    assert partial == f".{batch_id}.jsonl.pgp.part" and stats.delivered == 4
    assert sorted(r["package_id"] for r in records) == sorted(p.package_id for p in placed)


async def test_a_recall_notice_goes_to_the_partner_as_an_openpgp_file(tmp_path: Path, gpg: Gpg) -> None:
    async with pgp_partner(tmp_path, gpg) as (gw, agency, _):
        [first] = await place(gw, 1)
        await Dispatcher(gw).run_once()
        done = await recall.recall(gw, "C-P-0", PARTNER, "debt settled with the bank", actor="t")
        stats = await Dispatcher(gw).run_once()
        batches = open_batches(gpg, gw, agency)
    assert stats.delivered == 1 and len(batches) == 2
    [notice] = [r for records in batches.values() for r in records if r["purpose"] == "recall"]
    assert notice["package_id"] == done.notice_package_id and notice["case_ref"] == first.case_ref
    assert notice["package"]["data"]["recall"]["reason"] == "debt settled with the bank"


def sign_status(gpg: Gpg, folder: Path, name: str, events: list[dict[str, Any]], signer: str) -> Path:
    """The partner writes a status file and signs it: ``gpg --armor --detach-sign``."""
    path = folder / name
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events))
    gpg("--local-user", signer, "--armor", "--detach-sign", "--output", f"{path}.asc", path)
    return path


async def test_a_signed_status_file_is_applied_once(tmp_path: Path, gpg: Gpg) -> None:
    async with pgp_partner(tmp_path, gpg) as (gw, agency, seen):
        [placed] = await place(gw, 1)
        await Dispatcher(gw).run_once()
        at = gw.now().isoformat()
        outbound = agency.root / "outbound"
        sign_status(gpg, outbound, "status-0001.jsonl", [accepted(placed.case_ref, 1, at)], gpg.partner)
        record = await registry.get(gw, PARTNER)
        adapter = poller.pollable(gw, record)
        assert adapter is not None
        async with adapter:
            first = await poller.poll_partner(gw, adapter)
            sign_status(gpg, outbound, "status-0002.jsonl", [accepted(placed.case_ref, 1, at)], gpg.partner)
            second = await poller.poll_partner(gw, adapter)
            third = await poller.poll_partner(gw, adapter)
        events = await rows(gw, "SELECT type, webhook_id FROM events")
        [assignment] = await rows(gw, "SELECT state FROM assignments")
        audited = await rows(gw, "SELECT idx FROM audit_entries WHERE kind = 'callback'")
    assert (first.accepted, second.duplicates, third.accepted) == (1, 1, 0)
    assert events == [{"type": "accepted", "webhook_id": "poll:ACC-1"}]
    assert assignment["state"] == "active" and len(audited) == 1
    assert sorted(p.name for p in (outbound / "processed").iterdir()) == [
        "status-0001.jsonl", "status-0001.jsonl.asc", "status-0002.jsonl", "status-0002.jsonl.asc"
    ]
    assert not [e for e in seen.events if e.kind == "status_file_refused"]


async def test_a_status_file_with_a_bad_or_missing_signature_is_refused_with_an_alert(
    tmp_path: Path, gpg: Gpg
) -> None:
    async with pgp_partner(tmp_path, gpg) as (gw, agency, seen):
        [placed] = await place(gw, 1)
        await Dispatcher(gw).run_once()
        at = gw.now().isoformat()
        outbound = agency.root / "outbound"
        sign_status(gpg, outbound, "forged.jsonl", [accepted(placed.case_ref, 1, at)], gpg.sign_only)
        tampered = sign_status(
            gpg, outbound, "tampered.jsonl", [accepted(placed.case_ref, 2, at)], gpg.partner
        )
        tampered.write_bytes(tampered.read_bytes().replace(b"FA-2", b"FA-9"))
        unsigned = outbound / "unsigned.jsonl"
        unsigned.write_bytes(json.dumps(accepted(placed.case_ref, 3, at)).encode() + b"\n")
        os.utime(unsigned, (unsigned.stat().st_atime, unsigned.stat().st_mtime - 3600))  # its .asc never came
        waiting = outbound / "waiting.jsonl"  # just written: its signature may still be on its way
        waiting.write_bytes(json.dumps(accepted(placed.case_ref, 4, at)).encode() + b"\n")
        record = await registry.get(gw, PARTNER)
        adapter = poller.pollable(gw, record)
        assert adapter is not None
        async with adapter:
            stats = await poller.poll_partner(gw, adapter)
        events = await rows(gw, "SELECT id FROM events")
        [assignment] = await rows(gw, "SELECT state FROM assignments")
    assert stats.accepted == 0 and events == [] and assignment["state"] == "placed"
    assert sorted(p.name for p in (outbound / "rejected").iterdir()) == [
        "forged.jsonl", "forged.jsonl.asc", "tampered.jsonl", "tampered.jsonl.asc", "unsigned.jsonl"
    ]
    assert (outbound / "waiting.jsonl").exists()
    refused = {e.detail["file"]: e for e in seen.events if e.kind == "status_file_refused"}
    assert sorted(refused) == ["forged.jsonl", "tampered.jsonl", "unsigned.jsonl"]
    assert "does not verify with the partner's OpenPGP key" in refused["forged.jsonl"].detail["reason"]
    assert refused["unsigned.jsonl"].detail["reason"] == "no unsigned.jsonl.asc after 900 s"
    alerts = [alert_of(e) for e in refused.values()]
    assert all(a is not None and a.kind == "status_file_refused" and PARTNER in a.summary for a in alerts)
    assert placed.case_ref not in json.dumps([e.detail for e in refused.values()])


@pytest.mark.parametrize(
    ("given", "pinned", "problem"),
    [
        ("partner", "sign_only", "not the {pinned} the profile names"),
        ("expired", "expired", "expired on 2020-12-31"),
        ("sign_only", "sign_only", "has no live encryption-capable subkey"),
    ],
)
def test_onboarding_refuses_a_partner_key_that_cannot_be_used(
    tmp_path: Path, gpg: Gpg, given: str, pinned: str, problem: str
) -> None:
    agency = Agency(tmp_path / "agency", port=22)
    ws = tmp_path / "ws"
    fingerprint = getattr(gpg, pinned)
    profile = pgp_workspace(ws, gpg, 22, agency, key=getattr(gpg, given), fingerprint=fingerprint)
    refused = invoke("-c", ws, "partners", "add", profile)
    assert refused.exit_code == 1
    [line] = refused.output.splitlines()
    assert line.startswith(f"Error: {profile}: adapter_config: openpgp.key: ")
    assert problem.format(pinned=fingerprint) in line
    assert invoke("-c", ws, "partners", "list", "--json").stdout.strip() == "[]"


def test_onboarding_refuses_an_openpgp_partner_before_the_bank_has_its_key(tmp_path: Path, gpg: Gpg) -> None:
    ws = tmp_path / "ws"
    profile = pgp_workspace(ws, gpg, 22, Agency(tmp_path / "agency", port=22))
    (ws / "keys" / "bank" / "openpgp.key").unlink()
    refused = invoke("-c", ws, "partners", "add", profile)
    assert refused.exit_code == 1 and len(refused.output.splitlines()) == 1
    assert "the bank's OpenPGP key" in refused.output and "gateway keys openpgp generate" in refused.output


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda t: t.replace('adapter = "sftp_batch"', 'adapter = "agency_http"'), "sealing",
         "adapter 'agency_http' cannot deliver 'openpgp' packages"),
        (lambda t: t.split("[adapter_config.openpgp]")[0], "adapter_config",
         "sealing 'openpgp' needs [adapter_config.openpgp]"),
        (lambda t: t.replace('sealing = "openpgp"', 'sealing = "jwe"\njwks = "partners/x.jwks.json"'),
         "adapter_config", "[adapter_config.openpgp] is for sealing = 'openpgp'"),
    ],
)  # fmt: skip
def test_openpgp_sealing_goes_only_with_an_adapter_that_encrypts_and_a_pinned_key(
    tmp_path: Path, gpg: Gpg, change: Any, field: str, problem: str
) -> None:
    ws = tmp_path / "ws"
    profile = pgp_workspace(ws, gpg, 22, Agency(tmp_path / "agency", port=22))
    profile.write_text(change(profile.read_text()))
    refused = invoke("-c", ws, "partners", "add", profile)
    assert refused.exit_code == 1
    [line] = refused.output.splitlines()
    assert line.startswith(f"Error: {profile}: {field}: ") and problem in line
