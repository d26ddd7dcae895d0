"""OpenPGP keys on their own: the bank's key, made or imported on the command line, each
change an audit entry written together with the key's files (or neither); and partner
keys that onboarding refuses for their encryption subkeys, made by GnuPG
(tests/gnupg.py) as a partner makes them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_settings
from gateway.core import open_database
from tests.gnupg import Gpg
from tests.helpers import fail_audit_inserts, invoke, workspace_sql
from tests.partners import init_workspace
from tests.test_sftp_batch import Agency
from tests.test_sftp_openpgp import pgp_workspace

KINDS = ("openpgp_key_generated", "openpgp_key_imported")


def entries(ws: Path) -> list[dict[str, Any]]:
    with workspace_sql(ws) as sql:
        rows = sql("SELECT leaf FROM audit_entries WHERE kind IN (?, ?) ORDER BY idx", KINDS)
    return [json.loads(row["leaf"]) for row in rows]


def bank_fingerprint_of(ws: Path) -> str:
    return invoke("-c", ws, "keys", "openpgp", "export").stderr.split()[-1]


def fingerprint_said(output: str) -> str:
    return output.split("key generated: ")[-1].split("key imported: ")[-1].split()[0].rstrip(",")


def test_the_bank_key_is_private_and_a_gpg_key_can_be_imported(tmp_path: Path, gpg: Gpg) -> None:
    ws = init_workspace(tmp_path / "ws")
    made = invoke("-c", ws, "keys", "openpgp", "generate")
    secret = ws / "keys" / "bank" / "openpgp.key"
    assert made.exit_code == 0 and "PRIVATE" not in made.output
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.parent.stat().st_mode & 0o777 == 0o700
    again = invoke("-c", ws, "keys", "openpgp", "generate")
    assert again.exit_code == 1 and "--replace" in again.output
    exported = tmp_path / "bank-secret.asc"
    exported.write_bytes(gpg("--armor", "--export-secret-keys", gpg.partner).stdout)
    imported = invoke("-c", ws, "keys", "openpgp", "import", "--replace", exported)
    assert imported.exit_code == 0 and gpg.partner in imported.output
    assert bank_fingerprint_of(ws) == gpg.partner and secret.stat().st_mode & 0o777 == 0o600
    lapsed = tmp_path / "lapsed.asc"
    lapsed.write_bytes(gpg("--armor", "--export-secret-keys", gpg.expired).stdout)
    refused = invoke("-c", ws, "keys", "openpgp", "import", "--replace", lapsed)
    assert refused.exit_code == 1 and "expired" in refused.output and bank_fingerprint_of(ws) == gpg.partner
    public_only = tmp_path / "public.asc"
    public_only.write_bytes(gpg.export(gpg.expired))
    assert invoke("-c", ws, "keys", "openpgp", "import", "--replace", public_only).exit_code == 1


def test_every_key_the_bank_takes_is_an_audit_entry_by_fingerprint(tmp_path: Path, gpg: Gpg) -> None:
    ws = init_workspace(tmp_path / "ws")
    made = invoke("-c", ws, "keys", "openpgp", "generate")
    assert made.exit_code == 0, made.output
    first = bank_fingerprint_of(ws)
    assert fingerprint_said(made.output) == first and "recorded in the audit log" in made.output
    assert invoke("-c", ws, "keys", "openpgp", "generate").exit_code == 1  # no --replace: no entry
    exported = tmp_path / "bank-secret.asc"
    exported.write_bytes(gpg("--armor", "--export-secret-keys", gpg.partner).stdout)
    imported = invoke("-c", ws, "keys", "openpgp", "import", "--replace", exported)
    assert imported.exit_code == 0 and f"(replacing {first})" in imported.output
    lapsed = tmp_path / "lapsed.asc"
    lapsed.write_bytes(gpg("--armor", "--export-secret-keys", gpg.expired).stdout)
    assert invoke("-c", ws, "keys", "openpgp", "import", "--replace", lapsed).exit_code == 1
    replaced = invoke("-c", ws, "keys", "openpgp", "generate", "--replace")
    assert replaced.exit_code == 0, replaced.output
    last = bank_fingerprint_of(ws)

    logged = entries(ws)
    common = {"actor", "at", "key", "v"}
    assert [{k: v for k, v in e.items() if k not in common} for e in logged] == [
        {"kind": "openpgp_key_generated", "fingerprint": first, "replaced": False},
        {"kind": "openpgp_key_imported", "fingerprint": gpg.partner, "previous_fingerprint": first,
         "replaced": True},
        {"kind": "openpgp_key_generated", "fingerprint": last, "previous_fingerprint": gpg.partner,
         "replaced": True},
    ]  # fmt: skip
    assert all(e["key"] == "bank-openpgp" and e["v"] == 1 and e["actor"].startswith("cli:") for e in logged)
    text = json.dumps(logged)
    assert "PGP" not in text and "Test Bank" not in text and "pgp-agency.example" not in text


def sabotage_audit_log(ws: Path) -> None:
    """Play a full disk under the audit log: every append from now on fails."""

    async def sabotage() -> None:
        async with await open_database(load_settings(ws).database_url) as db, db.transaction() as tx:
            await fail_audit_inserts(tx)

    asyncio.run(sabotage())


def refused_line(*args: str | Path) -> str:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    return line


def test_a_first_key_the_audit_log_cannot_record_is_not_set(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    sabotage_audit_log(ws)
    line = refused_line("-c", ws, "keys", "openpgp", "generate")
    assert "the audit log could not record the new OpenPGP key" in line and "disk full" in line
    assert line.endswith("so it was not set; the bank still has no OpenPGP key")
    bank = ws / "keys" / "bank"
    assert not (bank / "openpgp.key").exists() and not (bank / "openpgp.asc").exists()


def test_a_replacement_the_audit_log_cannot_record_leaves_the_old_key(tmp_path: Path, gpg: Gpg) -> None:
    ws = init_workspace(tmp_path / "ws")
    assert invoke("-c", ws, "keys", "openpgp", "generate").exit_code == 0
    bank = ws / "keys" / "bank"
    before = {name: (bank / name).read_bytes() for name in ("openpgp.key", "openpgp.asc")}
    old = bank_fingerprint_of(ws)
    sabotage_audit_log(ws)
    line = refused_line("-c", ws, "keys", "openpgp", "generate", "--replace")
    assert "disk full" in line and line.endswith(f"so it was not set; the bank's OpenPGP key is still {old}")
    exported = tmp_path / "bank-secret.asc"
    exported.write_bytes(gpg("--armor", "--export-secret-keys", gpg.partner).stdout)
    line = refused_line("-c", ws, "keys", "openpgp", "import", "--replace", exported)
    assert f"could not record the new OpenPGP key {gpg.partner} (" in line and "disk full" in line
    assert {name: (bank / name).read_bytes() for name in before} == before
    assert (bank / "openpgp.key").stat().st_mode & 0o777 == 0o600
    assert [e["fingerprint"] for e in entries(ws)] == [old]


def test_key_files_that_cannot_be_written_are_put_back_and_not_recorded(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    assert invoke("-c", ws, "keys", "openpgp", "generate").exit_code == 0
    bank = ws / "keys" / "bank"
    public = (bank / "openpgp.asc").read_bytes()
    old = bank_fingerprint_of(ws)
    # The secret key's file cannot be written (a directory is in its place): the public
    # key, written first, is put back, and the entry goes with the rolled-back transaction.
    (bank / "openpgp.key").unlink()
    (bank / "openpgp.key").mkdir()
    line = refused_line("-c", ws, "keys", "openpgp", "generate", "--replace")
    assert "was not set" in line and "Is a directory" in line
    assert line.endswith(f"nothing was recorded and the bank's OpenPGP key is still {old}")
    assert (bank / "openpgp.asc").read_bytes() == public
    assert [e["fingerprint"] for e in entries(ws)] == [old]


def test_commands_at_once_set_one_key_and_one_entry(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    with workspace_sql(ws) as sql:  # the database made and migrated: the commands start alike
        if load_settings(ws).database_url.startswith("postgres"):
            # Slow appends, so that each command finds the others mid-way: one that read
            # what is in place before taking its turn on the log would find no key too.
            # (SQLite runs writers one at a time from their first statement.)
            sql("CREATE FUNCTION slow_append() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$")
            sql("CREATE TRIGGER slow BEFORE INSERT ON audit_entries"
                " FOR EACH ROW EXECUTE FUNCTION slow_append()")
    command = [sys.executable, "-m", "gateway", "-c", str(ws), "keys", "openpgp", "generate"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [(run.wait(120), run.communicate()[1].decode()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 1, 1], results
    assert all("the bank already has an OpenPGP key" in err for code, err in results if code)
    [entry] = entries(ws)
    assert entry["fingerprint"] == bank_fingerprint_of(ws) and entry["replaced"] is False


# -- partners' keys whose encryption subkeys are revoked --------------------------------


@pytest.fixture(scope="module")
def revoked(gpg: Gpg) -> dict[str, tuple[str, list[str]]]:
    """Partner keys as GnuPG makes them, by name: (fingerprint, the subkeys' fingerprints).
    ``only``: its one encryption subkey revoked. ``mixed``: one encryption subkey expired
    (made in 2020 for a year), a newer one revoked: on main, the revoked one passed as live
    and the library encrypted to the expired one without a word."""
    only = gpg.new_key("Revoked Subkey <revoked@pgp-agency.example>", "cert,sign", subkey=True)
    gpg.revoke_subkey(only, 1)
    mixed = gpg.new_key("Mixed Subkeys <mixed@pgp-agency.example>", "cert,sign", subkey=True,
                        at="20200101T000000", expires="never")  # fmt: skip
    gpg("--quick-add-key", mixed, "cv25519", "encr", "1y")
    gpg.revoke_subkey(mixed, 2)
    return {name: (fpr, gpg.fingerprints(fpr)[1:]) for name, fpr in (("only", only), ("mixed", mixed))}


@pytest.mark.parametrize("name", ["only", "mixed"])
def test_onboarding_refuses_a_partner_key_whose_encryption_subkey_is_revoked(
    tmp_path: Path, gpg: Gpg, revoked: dict[str, tuple[str, list[str]]], name: str
) -> None:
    fingerprint, subkeys = revoked[name]
    listing = gpg("--with-colons", "--list-keys", fingerprint).stdout.decode()
    assert [line.split(":")[1] for line in listing.splitlines() if line.startswith("sub:")] == (
        ["r"] if name == "only" else ["e", "r"]  # GnuPG's own view: revoked; expired, revoked
    )
    ws = tmp_path / "ws"
    profile = pgp_workspace(ws, gpg, 22, Agency(tmp_path / "agency", port=22), key=fingerprint,
                            fingerprint=fingerprint)  # fmt: skip
    line = refused_line("-c", ws, "partners", "add", profile)
    assert line.startswith(f"Error: {profile}: adapter_config: openpgp.key: ")
    assert f"the partner's key {fingerprint} has no live encryption-capable subkey" in line
    assert f"encryption subkey {subkeys[-1]} is revoked" in line
    if name == "mixed":
        assert f"encryption subkey {subkeys[0]} expired on 2020-12-31" in line
    assert invoke("-c", ws, "partners", "list", "--json").stdout.strip() == "[]"
