"""The stand-alone verifier in AUDITING.md (one copy, extracted here) accepts an exported
bundle and rejects tampered ones, with no gateway code on its path."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.canonical import canonical_json
from gateway.audit.checkpoint import format_vkey
from tests.helpers import REPO, invoke, sample_case

ALLOWED_IMPORTS = {"base64", "hashlib", "json", "sys", "pathlib", "cryptography"}


def extract_script() -> str:
    text = (REPO / "AUDITING.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- verify-bundle.py begin -->\n```python\n(.*?)```\n<!-- verify-bundle.py end -->",
        text,
        re.DOTALL,
    )
    assert match, "AUDITING.md lost its verify-bundle.py markers"
    return match.group(1)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    source = extract_script()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert {n.split(".")[0] for n in names} <= ALLOWED_IMPORTS, names
    path = tmp_path / "verify_bundle.py"
    path.write_text(source, encoding="utf-8")
    return path


@pytest.fixture
def bundle(onboarded: Path, tmp_path: Path) -> Path:
    for name in ("case-1001.json", "case-1002.json"):
        place = ("place", sample_case(name), "--partner", "acme-collect", "--purpose", "collection")
        result = invoke("-c", onboarded, *place)
        assert result.exit_code == 0, result.output
    result = invoke("-c", onboarded, "audit", "export", tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    return tmp_path / "bundle"


def run(script: Path, bundle: Path, *vkey: str) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, so the repository (and the gateway package) is not importable.
    return subprocess.run(
        [sys.executable, "-I", str(script), str(bundle), *vkey],
        capture_output=True,
        text=True,
        cwd=bundle,
        timeout=60,
    )


def test_the_script_accepts_an_exported_bundle(script: Path, bundle: Path, onboarded: Path) -> None:
    pinned = (onboarded / "keys" / "bank" / "audit-log.vkey").read_text().strip()
    done = run(script, bundle, pinned)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: 6 entries match the checkpoint signed by example-bank/gateway-audit+")


def edit_entry(bundle: Path, index: int, **changes: object) -> None:
    path = bundle / "entries.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[index])
    leaf = canonical_json({**json.loads(record["leaf"]), **changes}).decode()
    lines[index] = json.dumps({"idx": index, "leaf": leaf}, ensure_ascii=False)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_the_script_rejects_a_changed_entry(script: Path, bundle: Path) -> None:
    edit_entry(bundle, 4, purpose="legal")
    done = run(script, bundle)
    assert done.returncode != 0
    assert "FAILED: the entries do not hash to the root signed at size 6" in done.stderr


def test_the_script_rejects_a_removed_entry(script: Path, bundle: Path) -> None:
    path = bundle / "entries.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("".join(line + "\n" for line in lines[:-1]), encoding="utf-8")
    done = run(script, bundle)
    assert done.returncode != 0
    assert "the checkpoint signs 6 entries, the bundle has 5" in done.stderr


def test_the_script_rejects_a_key_other_than_the_pinned_one(script: Path, bundle: Path) -> None:
    other = format_vkey("example-bank/gateway-audit", Ed25519PrivateKey.generate().public_key())
    done = run(script, bundle, other)
    assert done.returncode != 0
    assert "no signature by example-bank/gateway-audit+" in done.stderr


def edit_lines(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        path = bundle / "entries.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("".join(line + "\n" for line in change(lines)), encoding="utf-8")

    return apply


def with_record(index: int, **changes: object) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        lines[index] = json.dumps({**json.loads(lines[index]), **changes})
        return lines

    return change


def set_vkey(text: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / "audit-log.vkey").write_text(text)


MALFORMED: list[tuple[str, Callable[[Path], None], str]] = [
    ("truncated last line", edit_lines(lambda ls: [*ls[:-1], ls[-1][:20]]), "entry 5: line 6 is not JSON"),
    ("blank line", edit_lines(lambda ls: [*ls[:3], "", *ls[3:]]), "entry 3: line 4 is not JSON"),
    ("index as text", edit_lines(with_record(3, idx="3")), 'entry 3: line 4 is not {"idx": N, "leaf"'),
    ("index as float", edit_lines(with_record(3, idx=3.0)), 'entry 3: line 4 is not {"idx": N'),
    ("extra member", edit_lines(with_record(3, note="x")), 'entry 3: line 4 is not {"idx": N'),
    ("lines swapped", edit_lines(lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]]),
     "entry 2: line 3 says index 3 (missing, added or moved)"),
    ("garbage key", set_vkey("garbage"), "the verifier key is not name+id+base64 key"),
    ("key not base64", set_vkey("a+b+!!!"), "the verifier key is not name+id+base64 key"),
]


@pytest.mark.parametrize(("name", "damage", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_the_script_names_what_is_malformed_in_one_line(
    script: Path, bundle: Path, name: str, damage: Callable[[Path], None], message: str
) -> None:
    damage(bundle)
    done = run(script, bundle)
    assert done.returncode == 1
    assert done.stderr == f"FAILED: {message}\n" or done.stderr.startswith(f"FAILED: {message}"), done.stderr
    assert "Traceback" not in done.stderr
