"""`gateway audit ...` as an auditor and an operator use it."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from gateway.audit import merkle, proofcheck
from gateway.audit.checkpoint import parse_and_verify
from gateway.cli.main import cli
from gateway.config import load_settings
from gateway.onboarding.keys import KeyStore
from gateway.placement.service import subject_token
from schemas.case import Case
from tests.helpers import invoke, sample_case


def ok(*args: str | Path) -> str:
    """What a command prints on standard output (warnings go to standard error)."""
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def placed(onboarded: Path) -> Path:
    """Four onboardings, then case 1001 to the agency and the arbitration body, 1002 to the agency."""
    for name, partner, purpose in (
        ("case-1001.json", "acme-collect", "collection"),
        ("case-1001.json", "sz-arbitration", "arbitration"),
        ("case-1002.json", "acme-collect", "collection"),
    ):
        ok("-c", onboarded, "place", sample_case(name), "--partner", partner, "--purpose", purpose)
    return onboarded


def vkey_of(ws: Path) -> str:
    return (ws / "keys" / "bank" / "audit-log.vkey").read_text().strip()


def test_every_audit_command_has_help() -> None:
    group = cli.commands["audit"]
    assert group.help
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help, name
        assert ok("audit", name, "--help").startswith("Usage: ")


def test_checkpoint_signs_once_per_size_and_verify_checks_it(placed: Path) -> None:
    note = ok("-c", placed, "audit", "checkpoint")
    assert note == ok("-c", placed, "audit", "checkpoint")  # nothing new: the same note
    cp = parse_and_verify(note, vkey_of(placed))
    assert (cp.origin, cp.size) == ("example-bank/gateway-audit", 7)
    assert "OK: 7 entries, 1 checkpoints verified, signed up to size 7" in ok("-c", placed, "audit", "verify")


def test_verify_without_a_checkpoint_says_what_is_unsigned(placed: Path) -> None:
    out = ok("-c", placed, "audit", "verify", "--json")
    summary = json.loads(out)
    assert (summary["entries"], summary["unsigned"], summary["latest_size"]) == (7, 7, None)


def test_log_filters_by_partner_case_event_and_time(placed: Path) -> None:
    every = json.loads(ok("-c", placed, "audit", "log", "--json"))
    assert [e["idx"] for e in every] == list(range(7))
    agency = json.loads(ok("-c", placed, "audit", "log", "--partner", "acme-collect", "--json"))
    assert [e["idx"] for e in agency] == [0, 4, 6]
    case = json.loads(ok("-c", placed, "audit", "log", "--case", "C-2026-1001", "--json"))
    assert [(e["idx"], e["entry"]["partner"]) for e in case] == [(4, "acme-collect"), (5, "sz-arbitration")]
    disclosures = json.loads(ok("-c", placed, "audit", "log", "--event", "disclosure", "--json"))
    assert [e["idx"] for e in disclosures] == [4, 5, 6]
    cut = every[5]["entry"]["at"]
    since = json.loads(ok("-c", placed, "audit", "log", "--since", cut, "--json"))
    until = json.loads(ok("-c", placed, "audit", "log", "--until", cut, "--json"))
    assert ([e["idx"] for e in since], until[-1]["idx"]) == ([5, 6], 4)
    assert "disclosure" in ok("-c", placed, "audit", "log", "--event", "disclosure")


def test_subject_report_lists_every_disclosure_about_the_person(placed: Path) -> None:
    case = Case.model_validate_json(sample_case("case-1001.json").read_bytes())
    person = ("--id-type", case.debtor.id_type, "--id-number", case.debtor.id_number)
    out = ok("-c", placed, "audit", "subject", *person, "--json")
    report = json.loads(out)
    # The same token placement writes into each disclosure (only gw.keys is used).
    keys_only = SimpleNamespace(keys=KeyStore(load_settings(placed).keys_dir))
    assert report["subject"] == subject_token(keys_only, case)  # type: ignore[arg-type]
    assert [(d["partner"], d["purpose"]) for d in report["disclosures"]] == [
        ("acme-collect", "collection"),
        ("sz-arbitration", "arbitration"),
    ]
    assert all(d["fields"] and d["legal_basis"] for d in report["disclosures"])
    table = ok("-c", placed, "audit", "subject", *person)
    assert table.startswith("2 disclosures about subj_")
    assert case.debtor.id_number not in out + table
    nobody = ok("-c", placed, "audit", "subject", "--id-type", "passport", "--id-number", "X000")
    assert nobody.startswith("no disclosures about subj_")
    # Kept off the command line: the number read from standard input gives the same report.
    piped = CliRunner().invoke(
        cli, ["-c", str(placed), "audit", "subject", "--id-type", case.debtor.id_type, "--id-number", "-",
              "--json"], input=case.debtor.id_number + "\n",
    )  # fmt: skip
    assert piped.exit_code == 0 and json.loads(piped.output) == report
    empty = CliRunner().invoke(
        cli, ["-c", str(placed), "audit", "subject", "--id-type", "passport", "--id-number", "-"], input="\n"
    )
    assert empty.exit_code == 2 and "no number on standard input" in empty.output


def test_prove_prints_a_proof_anyone_can_check(placed: Path) -> None:
    ok("-c", placed, "audit", "checkpoint")
    proof = json.loads(ok("-c", placed, "audit", "prove", "5"))
    cp = parse_and_verify(proof["checkpoint"], vkey_of(placed))
    leaf_hash = merkle.leaf_hash(proof["leaf"].encode())
    assert base64.b64encode(leaf_hash).decode() == proof["leaf_hash"]
    proofcheck.verify_inclusion(leaf_hash, 5, cp.size, [base64.b64decode(h) for h in proof["proof"]], cp.root)
    older = json.loads(ok("-c", placed, "audit", "prove", "1", "--size", "3"))
    assert (older["size"], older["checkpoint"]) == (3, None)


def test_consistency_links_an_old_size_to_the_latest_checkpoint(placed: Path) -> None:
    ok("-c", placed, "audit", "checkpoint")
    got = json.loads(ok("-c", placed, "audit", "consistency", "3"))
    proofcheck.verify_consistency(
        3,
        7,
        [base64.b64decode(h) for h in got["proof"]],
        base64.b64decode(got["old_root"]),
        parse_and_verify(got["new_checkpoint"], vkey_of(placed)).root,
    )


def test_errors_are_one_line_with_exit_status_1(placed: Path, tmp_path: Path) -> None:
    for args, message in (
        (("audit", "prove", "3"), "no signed checkpoint yet: run `gateway audit checkpoint`"),
        (("audit", "prove", "30", "--size", "7"), "entry 30 is not in the log at size 7"),
        (("audit", "consistency", "0", "5"), "need 0 < OLD <= NEW"),
    ):
        result = invoke("-c", placed, *args)
        assert result.exit_code == 1
        assert result.output.strip() == f"Error: {message}" or message in result.output.strip()
        assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    result = invoke("-c", placed, "audit", "export", tmp_path / "full")
    assert result.exit_code == 1 and "is not empty" in result.output
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_verify_bundle_needs_no_workspace(
    placed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ok("-c", placed, "audit", "export", tmp_path / "bundle")
    assert out.startswith("exported 7 entries and 1 checkpoints to ")
    assert {p.name for p in (tmp_path / "bundle").iterdir()} == {
        "entries.jsonl",
        "checkpoints",
        "audit-log.vkey",
        "jwks.json",
        "README.txt",
    }
    elsewhere = tmp_path / "auditor"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    vkey_file = elsewhere / "bank.vkey"
    vkey_file.write_text(vkey_of(placed) + "\n")
    summary = json.loads(ok("audit", "verify-bundle", tmp_path / "bundle", "--vkey", vkey_file, "--json"))
    assert (summary["entries"], summary["latest_size"], summary["unsigned"]) == (7, 7, 0)


def test_a_verifier_key_that_is_not_one_is_a_usage_error(placed: Path, tmp_path: Path) -> None:
    ok("-c", placed, "audit", "export", tmp_path / "bundle")
    good = vkey_of(placed)
    for value, problem in (
        ("nonsense", "'nonsense' is neither a verifier key (name+id+key) nor a file holding one"),
        (str(tmp_path / "no-such.vkey"), "nor a file holding one"),
        (good[:-2] + ("AA" if not good.endswith("AA") else "BB"), "does not match the key"),
    ):
        for command in (("-c", placed, "audit", "verify"), ("audit", "verify-bundle", tmp_path / "bundle")):
            result = invoke(*command, "--vkey", value)
            assert result.exit_code == 2, result.output
            assert "Error: Invalid value for --vkey: " in result.output and problem in result.output
            assert "Traceback" not in result.output
    assert ok("-c", placed, "audit", "verify", "--vkey", good).startswith("OK: 7 entries")


def test_log_times_are_instants_in_any_offset(placed: Path) -> None:
    every = json.loads(ok("-c", placed, "audit", "log", "--json"))
    at = datetime.fromisoformat(every[5]["entry"]["at"].replace("Z", "+00:00"))
    seconds = at.replace(microsecond=0)  # a time given to the second, before the entry
    for given in (seconds.isoformat(), seconds.astimezone(timezone(timedelta(hours=8))).isoformat()):
        since = json.loads(ok("-c", placed, "audit", "log", "--since", given, "--json"))
        assert since[0]["idx"] <= 5 and since[-1]["idx"] == 6
        until = json.loads(ok("-c", placed, "audit", "log", "--until", given, "--json"))
        assert all(datetime.fromisoformat(e["entry"]["at"].replace("Z", "+00:00")) < seconds for e in until)
    bad = invoke("-c", placed, "audit", "log", "--since", "garbage")
    assert bad.exit_code == 1 and "since: 'garbage' is not an RFC 3339 date or time" in bad.output
