"""Every kind of audit entry the models define is one the auditors' docs explain, and
every entry model one the canonical-form tests serialize: a new kind cannot be added
without both."""

from __future__ import annotations

import re
import typing

from schemas.audit import Entry
from tests.helpers import REPO
from tests.test_audit_canonical_fast import every_kind


def kinds() -> set[str]:
    found: set[str] = set()
    for model in typing.get_args(Entry):
        found.update(typing.get_args(model.model_fields["kind"].annotation))
    return found


def test_the_models_define_the_kinds_this_test_knows_of() -> None:
    assert {"disclosure", "key_rotated", "openpgp_key_generated", "openpgp_key_imported"} <= kinds()


def test_the_auditors_docs_list_every_kind() -> None:
    text = (REPO / "docs" / "auditing.md").read_text()
    table = text.split("| `kind` | written when | further fields |")[1].split("\n\n")[0]
    rows = [row.split("|")[1] for row in table.strip().splitlines()]
    listed = {kind for row in rows for kind in re.findall(r"`([a-z_]+)`", row)}
    assert kinds() - listed == set(), "add a row to the table of kinds in docs/auditing.md"
    assert listed - kinds() == set(), "docs/auditing.md lists a kind the models do not define"


def test_the_canonical_form_tests_cover_every_entry_model() -> None:
    covered = {type(entry) for entry in every_kind("x", 1)}
    missing = {model.__name__ for model in typing.get_args(Entry)} - {model.__name__ for model in covered}
    assert missing == set(), "add an entry of that model to every_kind in test_audit_canonical_fast.py"
