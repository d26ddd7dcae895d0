"""An auditor who kept a checkpoint: `verify --known` and `verify-bundle --known` fail,
naming the sizes, when the log was rolled back or forked since; without a pinned key
they say loudly which key they trusted; `export` refuses a log that does not verify and
dates its README by the export."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.checkpoint import parse_and_verify, sign_checkpoint
from tests.helpers import audit_tree_row, invoke, roll_back_audit_log, workspace_sql


def ok(*args: str | Path) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def fails(*args: str | Path) -> str:
    """The one-line error of a command that must exit 1."""
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    return line


def grow(ws: Path, n: int, label: str = "t") -> None:
    """n audit entries, each a token created by the operator's command."""
    for i in range(n):
        ok("-c", ws, "tokens", "create", "--role", "operator", "--label", f"{label}{i}")


def vkey_of(ws: Path) -> str:
    return (ws / "keys" / "bank" / "audit-log.vkey").read_text().strip()


def keep_checkpoint(ws: Path, path: Path) -> Path:
    """`gateway audit checkpoint` as the auditor asks for it, kept in a file."""
    path.write_text(ok("-c", ws, "audit", "checkpoint"))
    return path


@pytest.fixture
def kept(onboarded: Path, tmp_path: Path) -> tuple[Path, Path, tuple[int, bytes]]:
    """A workspace whose log the auditor checked at size 6 (kept.note), grown to 9 and
    signed since; and the tree state at 6, for the rollback."""
    grow(onboarded, 2)
    note = keep_checkpoint(onboarded, tmp_path / "kept.note")
    assert parse_and_verify(note.read_text(), vkey_of(onboarded)).size == 6
    with workspace_sql(onboarded) as sql:
        at_six = audit_tree_row(sql)
    grow(onboarded, 3)
    ok("-c", onboarded, "audit", "checkpoint")
    return onboarded, note, at_six


def test_a_log_that_extends_the_kept_checkpoint_verifies(
    kept: tuple[Path, Path, tuple[int, bytes]], tmp_path: Path
) -> None:
    ws, note, _ = kept
    out = ok("-c", ws, "audit", "verify", "--vkey", vkey_of(ws), "--known", note)
    assert out.startswith("OK: 9 entries") and "extends the checkpoint you kept (size 6)" in out
    ok("-c", ws, "audit", "export", tmp_path / "bundle")
    out = ok("audit", "verify-bundle", tmp_path / "bundle", "--vkey", vkey_of(ws), "--known", note)
    assert "extends the checkpoint you kept (size 6)" in out


def test_a_rollback_below_the_kept_checkpoint_fails_naming_the_sizes(
    onboarded: Path, tmp_path: Path
) -> None:
    grow(onboarded, 2)
    ok("-c", onboarded, "audit", "checkpoint")
    with workspace_sql(onboarded) as sql:
        at_six = audit_tree_row(sql)
    grow(onboarded, 3)
    note = keep_checkpoint(onboarded, tmp_path / "kept.note")  # the auditor saw 9
    with workspace_sql(onboarded) as sql:
        roll_back_audit_log(sql, at_six)
    assert ok("-c", onboarded, "audit", "verify", "--vkey", vkey_of(onboarded)).startswith("OK: 6 entries")
    expected = (
        "Error: audit log does not verify: rollback: the log is signed up to size 6 (6 entries) but "
        "the checkpoint you kept signs size 9: entries you have seen are gone"
    )
    pinned = ("--vkey", vkey_of(onboarded), "--known", note)
    assert fails("-c", onboarded, "audit", "verify", *pinned) == expected
    ok("-c", onboarded, "audit", "export", tmp_path / "bundle")
    bundle = ("audit", "verify-bundle", tmp_path / "bundle", "--vkey", vkey_of(onboarded), "--known", note)
    assert fails(*bundle) == expected


def test_a_fork_at_the_kept_size_fails_naming_the_size(
    kept: tuple[Path, Path, tuple[int, bytes]], tmp_path: Path
) -> None:
    ws, _, at_six = kept
    later = keep_checkpoint(ws, tmp_path / "later.note")  # the auditor saw 9
    with workspace_sql(ws) as sql:
        roll_back_audit_log(sql, at_six)
    grow(ws, 4, label="other")  # another history from 6 on, signed at 10
    ok("-c", ws, "audit", "checkpoint")
    assert ok("-c", ws, "audit", "verify", "--vkey", vkey_of(ws)).startswith("OK: 10 entries")
    line = fails("-c", ws, "audit", "verify", "--vkey", vkey_of(ws), "--known", later)
    assert re.fullmatch(
        r"Error: audit log does not verify: fork: the log's root at size 9 is \S+ but the checkpoint you "
        r"kept signs \S+ for that size: the log was rewritten, or shows you another history",
        line,
    ), line
    ok("-c", ws, "audit", "export", tmp_path / "bundle")
    pinned = ("--vkey", vkey_of(ws), "--known", later)
    assert fails("audit", "verify-bundle", tmp_path / "bundle", *pinned) == line


def test_a_kept_checkpoint_by_another_key_is_refused(
    kept: tuple[Path, Path, tuple[int, bytes]], tmp_path: Path
) -> None:
    ws, note, _ = kept
    # The same log's checkpoint at size 6, as signed by another key (say, the bank's
    # key was replaced since the auditor kept theirs).
    kept_cp = parse_and_verify(note.read_text(), vkey_of(ws))
    foreign = tmp_path / "foreign.note"
    foreign.write_text(sign_checkpoint(kept_cp, kept_cp.origin, Ed25519PrivateKey.generate()))
    line = fails("-c", ws, "audit", "verify", "--vkey", vkey_of(ws), "--known", foreign)
    assert line.startswith(
        "Error: audit log does not verify: the checkpoint you kept does not verify with the key trusted:"
    )


def test_without_a_pinned_key_the_trusted_key_is_named_on_stderr(
    kept: tuple[Path, Path, tuple[int, bytes]], tmp_path: Path
) -> None:
    ws, _, _ = kept
    result = invoke("-c", ws, "audit", "verify")
    assert result.exit_code == 0 and result.stdout.startswith("OK: 9 entries")
    fingerprint = "example-bank/gateway-audit+" + vkey_of(ws).split("+")[1]
    assert result.stderr.startswith(f"WARNING: no --vkey given: trusting {fingerprint} from the workspace (")
    ok("-c", ws, "audit", "export", tmp_path / "bundle")
    result = invoke("audit", "verify-bundle", tmp_path / "bundle")
    assert result.exit_code == 0
    assert result.stderr.startswith(
        f"WARNING: no --vkey given: trusting {fingerprint} from the bundle's own audit-log.vkey"
    )
    pinned = invoke("audit", "verify-bundle", tmp_path / "bundle", "--vkey", vkey_of(ws))
    assert pinned.exit_code == 0 and "WARNING" not in pinned.stderr


def test_export_refuses_a_log_that_does_not_verify(onboarded: Path, tmp_path: Path) -> None:
    grow(onboarded, 2)  # entries 4 and 5, not yet signed
    with workspace_sql(onboarded) as sql:
        leaf = sql("SELECT leaf FROM audit_entries WHERE idx = 5")[0]["leaf"]
        sql("UPDATE audit_entries SET leaf = ? WHERE idx = 5", (leaf.replace('"operator"', '"admin"'),))
    line = fails("-c", onboarded, "audit", "export", tmp_path / "bundle")
    assert line == (
        "Error: refusing to export: audit log does not verify: entry 5: "
        "the stored leaf hash does not match the leaf"
    )
    assert not (tmp_path / "bundle").exists()
    with workspace_sql(onboarded) as sql:  # and no checkpoint was signed over it
        assert sql("SELECT COUNT(*) AS n FROM audit_checkpoints")[0]["n"] == 0


def test_the_readme_gives_the_time_of_the_export(onboarded: Path, tmp_path: Path) -> None:
    ok("-c", onboarded, "audit", "checkpoint")
    time.sleep(1.1)  # the export signs nothing new: its time is not the checkpoint's
    ok("-c", onboarded, "audit", "export", tmp_path / "bundle")
    readme = (tmp_path / "bundle" / "README.txt").read_text()
    found = re.search(
        r"Exported (\S+): 4 entries, 1 signed checkpoints \(the latest signed (\S+)\)\.", readme
    )
    assert found, readme
    exported, signed = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in found.groups())
    assert (exported - signed).total_seconds() >= 1
