"""The sftp_batch adapter against a real SFTP server on 127.0.0.1 (asyncssh's own,
started here): batches with a signed manifest out, signed status files in, a kill
mid-upload, a duplicate and a forged status file, a wrong host key."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwcrypto import jwe, jwk, jws, jwt

from gateway.cli.placement import read_case
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.errors import NotSent, PartnerUnavailable
from gateway.inbound import pipeline, poller
from gateway.onboarding import registry
from gateway.onboarding.jwk import generate_encryption_key
from gateway.placement import service as placement
from gateway.plugin.adapter import OutboundPackage, slot_held
from tests.partners import CASE, REPO, init_workspace, rows

EXAMPLE = REPO / "examples" / "channels" / "files-agency.toml"
PARTNER = "files-agency"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Agency:
    """The file partner: its SFTP server (rooted in a folder, the bank's key authorized,
    a host key of its own) and its keys. ``hold`` makes the server stall the first write
    to a temporary upload file, so that a test can kill the gateway mid-upload."""

    root: Path
    bank_key: asyncssh.SSHKey = field(default_factory=lambda: asyncssh.generate_private_key("ssh-ed25519"))
    host_key: asyncssh.SSHKey = field(default_factory=lambda: asyncssh.generate_private_key("ssh-ed25519"))
    enc_key: Any = field(default_factory=lambda: generate_encryption_key("P-256"))
    sig_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    hold: bool = False
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    def jwks(self) -> dict[str, Any]:
        raw = self.sig_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        sig = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "use": "sig", "kid": "status-1"}
        return {"keys": [self.enc_key.as_dict(private=False), sig]}

    def sftp_server(self) -> type[asyncssh.SFTPServer]:
        agency = self

        class Jail(asyncssh.SFTPServer):
            def __init__(self, chan: asyncssh.SSHServerChannel) -> None:
                super().__init__(chan, chroot=os.fsencode(agency.root))

            async def write(self, file_obj: Any, offset: int, data: bytes) -> Any:
                if agency.hold and os.fsdecode(file_obj.name).endswith(".part"):
                    agency.holding.set()
                    await agency.released.wait()  # stalled until the test lets go
                return super().write(file_obj, offset, data)

        return Jail

    def write_status(
        self, name: str, events: list[dict[str, Any]], signer: Ed25519PrivateKey | None = None
    ) -> None:
        """Leave a status file and its detached JWS (made with jwcrypto) in outbound/."""
        content = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        raw = (signer or self.sig_key).private_bytes_raw()
        key = jwk.JWK(kty="OKP", crv="Ed25519", d=b64url(raw),
                      x=b64url(Ed25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()))
        token = jws.JWS(content)
        token.add_signature(key, alg="EdDSA", protected=json.dumps({"alg": "EdDSA", "kid": "status-1"}))
        header, _, signature = token.serialize(compact=True).split(".")
        (self.root / "outbound" / name).write_bytes(content)
        (self.root / "outbound" / f"{name}.jws").write_text(f"{header}..{signature}\n")

    def batches(self) -> dict[str, dict[str, Any]]:
        """Each batch in inbound/, by id: its manifest, records, detached signature."""
        out = {}
        for manifest in sorted((self.root / "inbound").glob("*.manifest.json")):
            batch_id = manifest.name.removesuffix(".manifest.json")
            out[batch_id] = {
                "manifest_bytes": manifest.read_bytes(),
                "signature": (self.root / "inbound" / f"{batch_id}.manifest.json.jws").read_text().strip(),
                "data": (self.root / "inbound" / f"{batch_id}.jsonl").read_bytes(),
            }
        return out


@asynccontextmanager
async def serving(agency: Agency) -> AsyncIterator[Agency]:
    for folder in ("inbound", "outbound"):
        (agency.root / folder).mkdir(parents=True, exist_ok=True)
    authorized = asyncssh.import_authorized_keys(agency.bank_key.export_public_key().decode())
    acceptor = await asyncssh.listen(
        "127.0.0.1", agency.port, server_host_keys=[agency.host_key], authorized_client_keys=authorized,
        sftp_factory=agency.sftp_server(), allow_scp=False,
    )
    agency.port = acceptor.get_port()
    try:
        yield agency
    finally:
        acceptor.close()
        await acceptor.wait_closed()


def onboard_files(ws: Path, agency: Agency, *, pinned: asyncssh.SSHKey | None = None) -> Path:
    """The example profile pointed at ``agency``: its key set, the bank's SSH key (0600),
    the host key pinned (``pinned`` instead, for the wrong-key test)."""
    partners = ws / "keys" / "partners"
    (partners / f"{PARTNER}.jwks.json").write_text(json.dumps(agency.jwks()))
    key_file = partners / f"{PARTNER}.key"
    key_file.write_bytes(agency.bank_key.export_private_key())
    key_file.chmod(0o600)
    text = EXAMPLE.read_text().replace("sftp.files-agency.example:22", f"127.0.0.1:{agency.port}")
    host = (pinned or agency.host_key).export_public_key().decode().strip()
    text = re.sub(r'host_keys = \[".*"\]', f'host_keys = ["{host}"]', text)
    text = text.replace("concurrency = 200", "concurrency = 10")
    text = text.replace("max_records = 200", "max_records = 10")
    text = text.replace("max_wait = 20", "max_wait = 0.5").replace("timeout = 60", "timeout = 10")
    profile = ws / "files-agency.toml"
    profile.write_text(text)
    return profile


@asynccontextmanager
async def files_partner(tmp_path: Path, **kwargs: Any) -> AsyncIterator[tuple[Gateway, Agency]]:
    agency = Agency(tmp_path / "agency")
    async with serving(agency):
        ws = init_workspace(tmp_path / "ws")
        profile = onboard_files(ws, agency, **kwargs)
        async with await Gateway.open(load_settings(ws)) as gw:
            await registry.add(gw, profile, actor="t")
            yield gw, agency


async def place(gw: Gateway, count: int) -> list[placement.Placement]:
    case = read_case(CASE)
    cases = [case.model_copy(update={"case_id": f"C-F-{n}"}) for n in range(count)]
    return [await placement.place(gw, c, PARTNER, "collection", actor="t") for c in cases]


def check_batch(gw: Gateway, agency: Agency, batch: dict[str, Any]) -> list[dict[str, Any]]:
    """What the partner does with a batch, with jwcrypto: the manifest's signature (the
    bank's published key set), count and digests, then each JWE opened. Its claims."""
    bank = jwk.JWKSet.from_json((Path(gw.settings.keys_dir) / "bank" / "jwks.json").read_text())
    header, _, signature = batch["signature"].split(".")
    token = jws.JWS()
    token.deserialize(f"{header}.{b64url(batch['manifest_bytes'])}.{signature}")
    token.verify(bank)
    manifest = json.loads(token.payload)
    records = [json.loads(line) for line in batch["data"].splitlines()]
    assert manifest["count"] == len(records) and manifest["partner"] == PARTNER
    assert manifest["sha256"] == hashlib.sha256(batch["data"]).hexdigest()
    assert [p["package_id"] for p in manifest["packages"]] == [r["package_id"] for r in records]
    opened = []
    for record in records:
        sealed = jwe.JWE()
        sealed.deserialize(record["jwe"], key=jwk.JWK(**agency.enc_key.as_dict(private=True)))
        claims = json.loads(jwt.JWT(jwt=sealed.payload.decode(), key=bank).claims)
        assert claims["jti"] == record["package_id"] and claims["case_ref"] == record["case_ref"]
        opened.append(claims)
    return opened


async def test_packages_go_in_batches_with_a_signed_manifest(tmp_path: Path) -> None:
    async with files_partner(tmp_path) as (gw, agency):
        placed = await place(gw, 25)
        stats = await Dispatcher(gw).run_once()
        packages = await rows(gw, "SELECT id, state, partner_ref FROM packages")
    assert stats.delivered == 25
    batches = agency.batches()
    assert sorted(len(check_batch(gw, agency, b)) for b in batches.values()) == [5, 10, 10]
    in_files = {r["package_id"]: batch_id for batch_id, b in batches.items()
                for r in map(json.loads, b["data"].splitlines())}
    assert in_files == {p["id"]: p["partner_ref"] for p in packages}
    assert {p["state"] for p in packages} == {"delivered"} and set(in_files) == {p.package_id for p in placed}
    assert not [p for p in (agency.root / "inbound").iterdir() if p.name.startswith(".")]


async def kill_mid_upload(gw: Gateway, agency: Agency) -> str:
    """Run ``gateway dispatch --once`` (leases of 1 s) until the agency holds its upload,
    SIGKILL it there, and return the name of the one file left in the inbound folder."""
    agency.hold = True
    env = {**os.environ, "GATEWAY_DISPATCH__LEASE_SECONDS": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(gw.settings.base_dir), "dispatch", "--once", "--quiet",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        await agency.holding.wait()
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    [partial] = [p.name for p in (agency.root / "inbound").iterdir()]
    return partial


async def test_a_batch_killed_mid_upload_is_resent_whole_under_the_same_id(tmp_path: Path) -> None:
    async with files_partner(tmp_path) as (gw, agency):
        placed = await place(gw, 7)
        partial = await kill_mid_upload(gw, agency)
        interrupted = re.fullmatch(r"\.(B[0-9TZ-]+-[0-9a-f]{8})\.jsonl\.part", partial)
        assert interrupted, partial
        assert (await rows(gw, "SELECT DISTINCT state FROM packages")) == [{"state": "sending"}]
        agency.hold = False
        agency.released.set()
        await asyncio.sleep(1.2)  # the dead dispatcher's leases expire
        stats = await Dispatcher(gw).run_once()
        packages = await rows(gw, "SELECT id, state, partner_ref FROM packages")
    assert stats.delivered == 7
    [(batch_id, batch)] = agency.batches().items()
    assert batch_id == interrupted[1]  # the same batch, whole, under the same id
    assert sorted(c["jti"] for c in check_batch(gw, agency, batch)) == sorted(p.package_id for p in placed)
    assert {(p["state"], p["partner_ref"]) for p in packages} == {("delivered", batch_id)}
    assert sorted(p.name for p in (agency.root / "inbound").iterdir()) == [
        f"{batch_id}.jsonl", f"{batch_id}.manifest.json", f"{batch_id}.manifest.json.jws"
    ]


async def test_a_batch_whose_slot_lapsed_is_not_uploaded_and_goes_again_whole(tmp_path: Path) -> None:
    """The dispatcher's check once the SFTP session is open, before the first file
    leaves (the process may have stalled past its concurrency slots while the window
    was open): nothing reaches the partner, the package gets NotSent (no attempt is
    counted), and its next attempt uploads the batch the journal kept, under its id."""
    async with files_partner(tmp_path) as (gw, agency):
        record = await registry.get(gw, PARTNER)
        adapter = gw.adapters[record.profile.adapter].for_profile(record.profile, gw.adapter_resources)
        package = OutboundPackage("pkg_lapsed", "C-1", "collection", "jwe", "a.b.c.d.e", {})
        try:
            with slot_held(lambda: False), pytest.raises(NotSent):
                await adapter.deliver(package)
            assert list((agency.root / "inbound").iterdir()) == []
            journalled = adapter.spool().batch_of("pkg_lapsed")
            assert journalled is not None and not adapter.spool().is_sent(journalled)
            with slot_held(lambda: True):
                receipt = await adapter.deliver(package)
        finally:
            await adapter.aclose()
    assert receipt.partner_ref == journalled and list(agency.batches()) == [journalled]
    [record_line] = agency.batches()[journalled]["data"].splitlines()
    assert json.loads(record_line)["package_id"] == "pkg_lapsed"


def accepted(case_ref: str, n: int, at: str) -> dict[str, Any]:
    return {"id": f"ACC-{n}", "type": "accepted", "case_ref": case_ref, "occurred_at": at,
            "partner_reference": f"FA-{n}"}


async def delivered_cases(gw: Gateway, count: int) -> list[str]:
    refs = [p.case_ref for p in await place(gw, count)]
    await Dispatcher(gw).run_once()
    return refs


async def adapter_of(gw: Gateway) -> Any:
    record = await registry.get(gw, PARTNER)
    adapter = poller.pollable(gw, record)
    assert adapter is not None
    return adapter


async def test_status_files_are_taken_in_once_and_filed_away(tmp_path: Path) -> None:
    async with files_partner(tmp_path) as (gw, agency):
        refs = await delivered_cases(gw, 1)
        at = gw.now().isoformat()
        agency.write_status("status-0001.jsonl", [accepted(refs[0], 1, at)])
        async with await adapter_of(gw) as adapter:
            first = await poller.poll_partner(gw, adapter)
            assert (first.accepted, first.duplicates) == (1, 0)
            agency.write_status("status-0002.jsonl", [accepted(refs[0], 1, at)])  # the same, sent again
            second = await poller.poll_partner(gw, adapter)
            third = await poller.poll_partner(gw, adapter)
        events = await rows(gw, "SELECT type, source, webhook_id FROM events")
        [assignment] = await rows(gw, "SELECT state FROM assignments")
        audited = await rows(gw, "SELECT idx FROM audit_entries WHERE kind = 'callback'")
    assert (second.accepted, second.duplicates) == (0, 1) and (third.accepted, third.duplicates) == (0, 0)
    assert events == [{"type": "accepted", "source": "poll", "webhook_id": "poll:ACC-1"}]
    assert assignment["state"] == "active" and len(audited) == 1
    assert sorted(p.name for p in (agency.root / "outbound" / "processed").iterdir()) == [
        "status-0001.jsonl", "status-0001.jsonl.jws", "status-0002.jsonl", "status-0002.jsonl.jws"
    ]
    assert sorted(p.name for p in (agency.root / "outbound").iterdir()) == ["processed"]


async def test_a_status_file_read_when_the_gateway_died_is_applied_once(tmp_path: Path) -> None:
    async with files_partner(tmp_path) as (gw, agency):
        refs = await delivered_cases(gw, 3)
        at = gw.now().isoformat()
        agency.write_status("status-0001.jsonl", [accepted(ref, n, at) for n, ref in enumerate(refs)])
        async with await adapter_of(gw) as adapter:
            # The poller read the file and took in its first event, then the process died:
            # its cursor was never stored and the file was not moved.
            page = await adapter.poll(None)
            event = {k: v for k, v in page.events[0].items() if k != "id"}
            await pipeline.ingest(gw, PARTNER, json.dumps(event).encode(), channel="poll",
                                  webhook_id=f"poll:{page.events[0]['id']}")
        async with await adapter_of(gw) as adapter:  # the restarted gateway
            again = await poller.poll_partner(gw, adapter)
            await poller.poll_partner(gw, adapter)
        events = await rows(gw, "SELECT webhook_id FROM events ORDER BY webhook_id")
    assert (again.accepted, again.duplicates) == (2, 1)
    assert [e["webhook_id"] for e in events] == ["poll:ACC-0", "poll:ACC-1", "poll:ACC-2"]
    assert (agency.root / "outbound" / "processed" / "status-0001.jsonl").exists()


async def test_a_status_file_with_a_bad_signature_is_refused_and_nothing_applied(tmp_path: Path) -> None:
    async with files_partner(tmp_path) as (gw, agency):
        refs = await delivered_cases(gw, 1)
        at = gw.now().isoformat()
        agency.write_status("forged.jsonl", [accepted(refs[0], 1, at)], signer=Ed25519PrivateKey.generate())
        agency.write_status("tampered.jsonl", [accepted(refs[0], 2, at)])
        tampered = agency.root / "outbound" / "tampered.jsonl"
        tampered.write_bytes(tampered.read_bytes().replace(b"FA-2", b"FA-9"))
        async with await adapter_of(gw) as adapter:
            stats = await poller.poll_partner(gw, adapter)
        events = await rows(gw, "SELECT id FROM events")
        [assignment] = await rows(gw, "SELECT state FROM assignments")
    assert stats.accepted == 0 and events == [] and assignment["state"] == "placed"
    assert sorted(p.name for p in (agency.root / "outbound" / "rejected").iterdir()) == [
        "forged.jsonl", "forged.jsonl.jws", "tampered.jsonl", "tampered.jsonl.jws"
    ]


async def test_a_server_with_another_host_key_is_refused(tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    async with files_partner(tmp_path, pinned=other) as (gw, agency):
        await place(gw, 2)
        await Dispatcher(gw).run_once()
        packages = await rows(gw, "SELECT state, last_error FROM packages")
        async with await adapter_of(gw) as adapter:
            try:
                await adapter.poll(None)
                raise AssertionError("polled a server whose host key is not pinned")
            except PartnerUnavailable as exc:
                refused = str(exc)
    assert {p["state"] for p in packages} == {"retry_wait"}
    assert all("host key is not one adapter_config.host_keys pins" in p["last_error"] for p in packages)
    assert "host key is not one adapter_config.host_keys pins" in refused
    assert list((agency.root / "inbound").iterdir()) == []
