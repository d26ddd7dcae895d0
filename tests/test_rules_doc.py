"""docs/rules.md names every rule of every pack, and every test it names exists."""

from __future__ import annotations

import ast
import re

import pytest

from gateway.supervision.rules import load_rule_pack
from tests.helpers import REPO

DOC = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["cn", "us-reg-f"])
def test_every_rule_has_a_row(name: str) -> None:
    rows = {m.group(1) for m in re.finditer(r"^\| `([a-z]+\.[a-z0-9-]+)`", DOC, flags=re.M)}
    missing = {rule.id for rule in load_rule_pack(name).rules()} - rows
    assert not missing, f"docs/rules.md has no row for {sorted(missing)}"


def test_every_test_named_exists() -> None:
    named = set(re.findall(r"`(tests/[a-z_]+\.py)::([a-z0-9_]+)`", DOC))
    assert len(named) > 30
    for path, function in sorted(named):
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert function in defined, f"docs/rules.md names {path}::{function}, which does not exist"
