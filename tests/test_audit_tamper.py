"""Tampering with the audit log is caught by `audit verify` (database) and by
`audit verify-bundle` (exported files), naming the first bad index; and the log holds
no raw personal data.

The sample log is signed after every entry, so a changed entry whose stored hash was
recomputed too is pinned to its exact index by the first checkpoint that disagrees.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.canonical import canonical_json
from gateway.audit.checkpoint import Checkpoint, format_vkey, sign_checkpoint
from gateway.audit.merkle import leaf_hash
from tests.conftest import Templates
from tests.helpers import (
    EXAMPLES,
    SAMPLE_KEY_CURVES,
    Sql,
    invoke,
    sample_case,
    workspace_sql,
    write_partner_keys,
)

ORIGIN = "example-bank/gateway-audit"


def ok(*args: str | Path) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, templates: Templates) -> Iterator[Path]:
    """A workspace whose log has 8 entries (onboardings, disclosures, a suspension and
    a reinstatement), with a checkpoint after each one."""
    ws = tmp_path_factory.mktemp("audit") / "ws"
    with templates.building(ws):
        build(ws)
    yield ws


def build(ws: Path) -> None:
    ok("init", ws)
    for pid, crv in SAMPLE_KEY_CURVES.items():
        write_partner_keys(ws / "keys", pid, crv)
    for profile in sorted((EXAMPLES / "partners").glob("*.toml")):
        ok("-c", ws, "partners", "add", profile)
        ok("-c", ws, "audit", "checkpoint")
    for args in (
        ("place", sample_case("case-1001.json"), "--partner", "acme-collect", "--purpose", "collection"),
        ("place", sample_case("case-1002.json"), "--partner", "acme-collect", "--purpose", "collection"),
        ("partners", "suspend", "acme-collect", "--reason", "complaint under review"),
        ("partners", "reinstate", "acme-collect", "--reason", "review closed"),
    ):
        ok("-c", ws, *args)
        ok("-c", ws, "audit", "checkpoint")


@pytest.fixture
def ws(template: Path, tmp_path: Path, templates: Templates) -> Path:
    return templates.copy(template, tmp_path / "ws")


def leaves(ws: Path) -> list[str]:
    with workspace_sql(ws) as sql:
        return [row["leaf"] for row in sql("SELECT leaf FROM audit_entries ORDER BY idx")]


def rewrite(leaf: str, **changes: object) -> str:
    """The leaf with fields changed, still canonical and schema-valid."""
    return canonical_json({**json.loads(leaf), **changes}).decode()


def _name(value: object) -> str:
    return getattr(value, "__name__", "")


def refuse(result_args: tuple[str | Path, ...], *expected: str) -> str:
    result = invoke(*result_args)
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    for text in expected:
        assert text in message, message
    return message


def test_the_untouched_log_and_its_bundle_verify(ws: Path, tmp_path: Path) -> None:
    assert "OK: 8 entries, 8 checkpoints verified" in ok("-c", ws, "audit", "verify")
    vkey = (ws / "keys" / "bank" / "audit-log.vkey").read_text().strip()
    ok("-c", ws, "audit", "export", tmp_path / "bundle")
    out = ok("audit", "verify-bundle", tmp_path / "bundle", "--vkey", vkey)
    assert "OK: 8 entries" in out


# -- the database ----------------------------------------------------------------------

Tamper = Callable[[Sql, list[str]], None]


def change_leaf_only(sql: Sql, old: list[str]) -> None:
    sql("UPDATE audit_entries SET leaf = ? WHERE idx = 5", (rewrite(old[5], purpose="legal"),))


def change_leaf_and_hash(sql: Sql, old: list[str]) -> None:
    new = rewrite(old[5], partner="sz-arbitration")
    sql(
        "UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = 5",
        (new, leaf_hash(new.encode())),
    )


def non_canonical(sql: Sql, old: list[str]) -> None:
    spaced = json.dumps(json.loads(old[5]), sort_keys=True, ensure_ascii=False)
    sql(
        "UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = 5",
        (spaced, leaf_hash(spaced.encode())),
    )


def not_an_entry(sql: Sql, old: list[str]) -> None:
    bad = rewrite(old[5], kind="coffee_break")
    sql("UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = 5", (bad, leaf_hash(bad.encode())))


def not_json(sql: Sql, old: list[str]) -> None:
    sql("UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = 5", ("{oops", leaf_hash(b"{oops")))


def delete_middle(sql: Sql, old: list[str]) -> None:
    sql("DELETE FROM audit_entries WHERE idx = 5")


def delete_and_renumber(sql: Sql, old: list[str]) -> None:
    sql("DELETE FROM audit_entries WHERE idx = 5")
    sql("UPDATE audit_entries SET idx = idx - 1 WHERE idx > 5")


def delete_last(sql: Sql, old: list[str]) -> None:
    sql("DELETE FROM audit_entries WHERE idx = 7")


def insert_middle(sql: Sql, old: list[str]) -> None:
    for idx in range(7, 4, -1):
        sql("UPDATE audit_entries SET idx = idx + 1 WHERE idx = ?", (idx,))
    forged = rewrite(old[4], package_id="pkg_forged")
    sql(
        "INSERT INTO audit_entries (idx, leaf, leaf_hash, kind, at) VALUES (5, ?, ?, 'disclosure', '')",
        (forged, leaf_hash(forged.encode())),
    )


def insert_at_end(sql: Sql, old: list[str]) -> None:
    forged = rewrite(old[4], package_id="pkg_forged")
    sql(
        "INSERT INTO audit_entries (idx, leaf, leaf_hash, kind, at) VALUES (8, ?, ?, 'disclosure', '')",
        (forged, leaf_hash(forged.encode())),
    )


def swap(sql: Sql, old: list[str]) -> None:
    for idx, source in ((5, 6), (6, 5)):
        sql(
            "UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = ?",
            (old[source], leaf_hash(old[source].encode()), idx),
        )


def lookup_column(column: str, value: str) -> Tamper:
    """Change a column searches filter on, leaving the leaf (and so the tree) intact."""

    def tamper(sql: Sql, old: list[str]) -> None:
        sql(f"UPDATE audit_entries SET {column} = ? WHERE idx = 5", (value,))

    tamper.__name__ = f"lookup_{column}"
    return tamper


DB_TAMPERING: list[tuple[Tamper, str, tuple[str, ...]]] = [
    (lookup_column("partner_id", "notify-mail"), "entry 5:", ("the partner_id column reads 'notify-mail'",)),
    (lookup_column("case_token", "case_other"), "entry 5:", ("the case_token column reads 'case_other'",)),
    (lookup_column("kind", "callback_received"), "entry 5:", ("the kind column reads",)),
    (lookup_column("at", "2020-01-01T00:00:00.000000Z"), "entry 5:", ("the at column reads",)),
    (change_leaf_only, "entry 5:", ("stored leaf hash does not match",)),
    (change_leaf_and_hash, "entry 5:", ("root signed at size 6",)),
    (non_canonical, "entry 5:", ("canonical",)),
    (not_an_entry, "entry 5:", ("not a valid audit entry",)),
    (not_json, "entry 5:", ("JSON",)),
    (delete_middle, "entry 5:", ("missing",)),
    (delete_and_renumber, "entry 5:", ("root signed at size 6",)),
    (delete_last, "entry 7:", ("missing",)),
    (insert_middle, "entry 5:", ("root signed at size 6",)),
    (insert_at_end, "entry 8:", ("added outside the gateway",)),
    (swap, "entry 5:", ("root signed at size 6",)),
]


@pytest.mark.parametrize(("tamper", "where", "why"), DB_TAMPERING, ids=_name)
def test_verify_names_the_first_bad_entry_in_the_database(
    ws: Path, tamper: Tamper, where: str, why: tuple[str, ...]
) -> None:
    old = leaves(ws)
    with workspace_sql(ws) as sql:
        tamper(sql, old)
    refuse(("-c", ws, "audit", "verify"), where, *why)


@pytest.mark.parametrize(
    ("tamper", "where", "why"),
    [t for t in DB_TAMPERING if t[0] in (change_leaf_only, change_leaf_and_hash, delete_middle, swap)],
    ids=_name,
)
def test_hashes_only_keeps_every_cryptographic_check(
    ws: Path, tamper: Tamper, where: str, why: tuple[str, ...]
) -> None:
    assert ok("-c", ws, "audit", "verify", "--hashes-only").startswith("OK: 8 entries")
    old = leaves(ws)
    with workspace_sql(ws) as sql:
        tamper(sql, old)
    refuse(("-c", ws, "audit", "verify", "--hashes-only"), where, *why)


@pytest.mark.parametrize(
    ("column", "why"),
    [("leaf", "the leaf is missing (NULL)"), ("leaf_hash", "the stored leaf hash does not match the leaf")],
)
@pytest.mark.parametrize("hashes_only", [False, True], ids=["deep", "hashes"])
def test_a_column_emptied_to_null_is_named(
    ws: Path, database_url: str | None, column: str, why: str, hashes_only: bool
) -> None:
    """Someone with the owner's rights drops a NOT NULL and empties a cell: verify names
    the entry (it used to end in a TypeError)."""
    with workspace_sql(ws) as sql:
        if database_url is None:
            # SQLite cannot alter a column: the table is made again, keyed as before.
            sql(
                "CREATE TABLE loose (idx INTEGER PRIMARY KEY, leaf TEXT, leaf_hash BLOB, kind TEXT,"
                " partner_id TEXT, case_token TEXT, at TEXT)"
            )
            sql("INSERT INTO loose SELECT * FROM audit_entries")
            sql("DROP TABLE audit_entries")
            sql("ALTER TABLE loose RENAME TO audit_entries")
        else:
            sql(f"ALTER TABLE audit_entries ALTER COLUMN {column} DROP NOT NULL")
        sql(f"UPDATE audit_entries SET {column} = NULL WHERE idx = 5")
    refuse(("-c", ws, "audit", "verify", *(["--hashes-only"] if hashes_only else [])), "entry 5:", why)


def test_a_bad_checkpoint_is_named_before_a_search_column(ws: Path) -> None:
    """Both a checkpoint signed by another key and a changed column: the checkpoint, which
    concerns the whole log, is what verify names, as with a wrong --vkey."""
    with workspace_sql(ws) as sql:
        last = sql("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")[0]
        size, note = last["size"], last["note"]
        sql("UPDATE audit_checkpoints SET note = ? WHERE size = ?", (foreign_note(size, root_of(note)), size))
        sql("UPDATE audit_entries SET partner_id = 'zzz' WHERE idx = 7")
    refuse(("-c", ws, "audit", "verify"), f"checkpoint at size {size}", "no signature by")
    other = format_vkey(ORIGIN, Ed25519PrivateKey.generate().public_key())
    refuse(("-c", ws, "audit", "verify", "--vkey", other), "checkpoint at size", "no signature by")


def foreign_note(size: int, root: bytes) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, root), ORIGIN, Ed25519PrivateKey.generate())


def root_of(note: str) -> bytes:
    return Checkpoint.from_text(note[: note.index("\n\n") + 1]).root


def test_a_checkpoint_signed_by_another_key_is_refused(ws: Path) -> None:
    with workspace_sql(ws) as sql:
        note = sql("SELECT note FROM audit_checkpoints WHERE size = 6")[0]["note"]
        forged = foreign_note(6, root_of(note))
        sql("UPDATE audit_checkpoints SET note = ? WHERE size = 6", (forged,))
    refuse(("-c", ws, "audit", "verify"), "checkpoint at size 6", "no signature by " + ORIGIN)


def test_a_pinned_key_refuses_the_workspace_key(ws: Path) -> None:
    other = format_vkey(ORIGIN, Ed25519PrivateKey.generate().public_key())
    refuse(("-c", ws, "audit", "verify", "--vkey", other), "checkpoint at size 1")


def test_sparse_checkpoints_narrow_a_change_to_a_range(ws: Path) -> None:
    old = leaves(ws)
    with workspace_sql(ws) as sql:
        sql("DELETE FROM audit_checkpoints WHERE size IN (5, 6, 7)")
        change_leaf_and_hash(sql, old)
    refuse(("-c", ws, "audit", "verify"), "entries 4..7:", "root signed at size 8", "at 4 matches")


# -- the bundle ------------------------------------------------------------------------

BundleTamper = Callable[[Path], None]


def edit_lines(bundle: Path, edit: Callable[[list[str]], list[str]]) -> None:
    path = bundle / "entries.jsonl"
    path.write_text("".join(line + "\n" for line in edit(path.read_text().splitlines())))


def line(idx: int, leaf: str) -> str:
    return json.dumps({"idx": idx, "leaf": leaf}, ensure_ascii=False)


def leaf_at(lines: list[str], i: int) -> str:
    return json.loads(lines[i])["leaf"]


def b_change(bundle: Path) -> None:
    edit_lines(bundle, lambda ls: ls[:5] + [line(5, rewrite(leaf_at(ls, 5), purpose="legal"))] + ls[6:])


def b_non_canonical(bundle: Path) -> None:
    edit_lines(bundle, lambda ls: ls[:5] + [line(5, leaf_at(ls, 5).replace(",", ", ", 1))] + ls[6:])


def b_delete(bundle: Path) -> None:
    edit_lines(bundle, lambda ls: ls[:5] + ls[6:])


def b_delete_renumber(bundle: Path) -> None:
    edit_lines(bundle, lambda ls: ls[:5] + [line(i - 1, leaf_at(ls, i)) for i in range(6, len(ls))])


def b_delete_last(bundle: Path) -> None:
    edit_lines(bundle, lambda ls: ls[:-1])


def b_insert(bundle: Path) -> None:
    forged = rewrite(leaf_at(*_lines(bundle), 4), package_id="pkg_forged")
    edit_lines(
        bundle,
        lambda ls: ls[:5] + [line(5, forged)] + [line(i + 1, leaf_at(ls, i)) for i in range(5, len(ls))],
    )


def b_append(bundle: Path) -> None:
    forged = rewrite(leaf_at(*_lines(bundle), 4), package_id="pkg_forged")
    edit_lines(bundle, lambda ls: [*ls, line(len(ls), forged)])


def b_swap(bundle: Path) -> None:
    edit_lines(bundle, lambda ls: ls[:5] + [line(5, leaf_at(ls, 6)), line(6, leaf_at(ls, 5))] + ls[7:])


def b_garbage_line(bundle: Path) -> None:
    edit_lines(bundle, lambda ls: ls[:5] + ["not json"] + ls[6:])


def _lines(bundle: Path) -> tuple[list[str]]:
    return ((bundle / "entries.jsonl").read_text().splitlines(),)


BUNDLE_TAMPERING: list[tuple[BundleTamper, str, tuple[str, ...]]] = [
    (b_change, "entry 5:", ("root signed at size 6",)),
    (b_non_canonical, "entry 5:", ("canonical",)),
    (b_delete, "entry 5:", ("missing",)),
    (b_delete_renumber, "entry 5:", ("root signed at size 6",)),
    (b_delete_last, "entry 7:", ("missing",)),
    (b_insert, "entry 5:", ("root signed at size 6",)),
    (b_append, "entry 8:", ("not covered by any signed checkpoint",)),
    (b_swap, "entry 5:", ("root signed at size 6",)),
    (b_garbage_line, "entry 5:", ("line 6 of entries.jsonl",)),
]


@pytest.fixture
def bundle(ws: Path, tmp_path: Path) -> Path:
    ok("-c", ws, "audit", "export", tmp_path / "bundle")
    return tmp_path / "bundle"


@pytest.mark.parametrize(("tamper", "where", "why"), BUNDLE_TAMPERING, ids=_name)
def test_verify_bundle_names_the_first_bad_entry(
    bundle: Path, tamper: BundleTamper, where: str, why: tuple[str, ...]
) -> None:
    tamper(bundle)
    refuse(("audit", "verify-bundle", bundle), where, *why)


def test_verify_bundle_refuses_a_checkpoint_by_another_key(bundle: Path) -> None:
    path = bundle / "checkpoints" / "000000000006.note"
    path.write_text(foreign_note(6, root_of(path.read_text())))
    refuse(("audit", "verify-bundle", bundle), "checkpoint at size 6", "no signature by")


def test_verify_bundle_with_its_own_key_replaced_fails_against_the_pinned_key(ws: Path, bundle: Path) -> None:
    """A forger who re-signs everything with a new key and ships that key in the bundle
    is stopped by the key the auditor pinned."""
    pinned = (ws / "keys" / "bank" / "audit-log.vkey").read_text().strip()
    key = Ed25519PrivateKey.generate()
    (bundle / "audit-log.vkey").write_text(format_vkey(ORIGIN, key.public_key()) + "\n")
    for path in (bundle / "checkpoints").iterdir():
        path.write_text(
            sign_checkpoint(Checkpoint(ORIGIN, int(path.stem), root_of(path.read_text())), ORIGIN, key)
        )
    assert "OK" in ok("audit", "verify-bundle", bundle)  # consistent, but with the forger's key
    refuse(("audit", "verify-bundle", bundle, "--vkey", pinned), "checkpoint at size 1", "no signature")


def test_verify_bundle_warns_when_the_shipped_key_is_not_the_pinned_one(ws: Path, bundle: Path) -> None:
    """The log is the bank's (signed by the pinned key) but the key file sent with it is
    another: the auditor is told, since the bundle's preparer sent a wrong key."""
    pinned = (ws / "keys" / "bank" / "audit-log.vkey").read_text().strip()
    assert "warning" not in invoke("audit", "verify-bundle", bundle, "--vkey", pinned).output
    (bundle / "audit-log.vkey").write_text(format_vkey(ORIGIN, Ed25519PrivateKey.generate().public_key()))
    result = invoke("audit", "verify-bundle", bundle, "--vkey", pinned)
    assert result.exit_code == 0 and "OK: 8 entries" in result.output
    assert "warning: the bundle's audit-log.vkey is not the pinned key" in result.output


# -- no personal data ------------------------------------------------------------------


def test_the_log_holds_no_raw_personal_data(ws: Path, bundle: Path) -> None:
    with workspace_sql(ws) as sql:
        stored = "\n".join(
            [row["leaf"] for row in sql("SELECT leaf FROM audit_entries")]
            + [row["note"] for row in sql("SELECT note FROM audit_checkpoints")]
        )
    exported = "\n".join(p.read_text() for p in bundle.rglob("*") if p.is_file())
    for name in ("case-1001.json", "case-1002.json"):
        case = json.loads(sample_case(name).read_text())
        debtor = case["debtor"]
        secrets = [
            case["case_id"],
            debtor["name"],
            debtor["id_number"],
            debtor["email"],
            case["loan"]["account_number"],
            *(phone["number"] for phone in debtor["phones"]),
            *(c["name"] for c in case.get("emergency_contacts", [])),
            *(c["phone"] for c in case.get("emergency_contacts", [])),
        ]
        address = debtor.get("address") or {}
        secrets += [address[k] for k in ("line", "postcode") if address.get(k)]
        for secret in secrets:
            assert secret not in stored, secret
            assert secret not in exported, secret
    assert '"kind":"disclosure"' in stored  # the disclosures are there, pseudonymized


def test_a_damaged_tree_state_is_named_by_verify_and_refused_by_the_writer(ws: Path) -> None:
    # The writer's tree state claims one entry more than its stored hashes make.
    with workspace_sql(ws) as sql:
        sql("UPDATE audit_tree SET size = size + 1 WHERE id = 1")
    for args in (("-c", ws, "audit", "verify"),
                 ("-c", ws, "partners", "suspend", "acme-collect", "--reason", "review")):
        refuse(args, "audit log tree state is damaged", "changed outside the gateway")
    with workspace_sql(ws) as sql:
        assert sql("SELECT status FROM partners WHERE id = 'acme-collect'")[0]["status"] == "active"


# -- hostile bundle files ----------------------------------------------------------------


def h_note_to_dev_zero(bundle: Path) -> None:
    note = bundle / "checkpoints" / "000000000008.note"
    note.unlink()
    note.symlink_to("/dev/zero")


def h_note_to_a_file_outside(bundle: Path) -> None:
    note = bundle / "checkpoints" / "000000000008.note"
    outside = bundle.parent / "elsewhere.note"
    note.rename(outside)
    note.symlink_to(outside)


def h_note_fifo(bundle: Path) -> None:
    note = bundle / "checkpoints" / "000000000008.note"
    note.unlink()
    os.mkfifo(note)


def h_note_huge(bundle: Path) -> None:
    note = bundle / "checkpoints" / "000000000008.note"
    note.write_text(note.read_text() + "x" * 200_000)


def h_checkpoints_linked(bundle: Path) -> None:
    (bundle / "checkpoints").rename(bundle.parent / "checkpoints-elsewhere")
    (bundle / "checkpoints").symlink_to(bundle.parent / "checkpoints-elsewhere")


def h_entries_to_dev_zero(bundle: Path) -> None:
    (bundle / "entries.jsonl").unlink()
    (bundle / "entries.jsonl").symlink_to("/dev/zero")


def h_entries_fifo(bundle: Path) -> None:
    (bundle / "entries.jsonl").unlink()
    os.mkfifo(bundle / "entries.jsonl")


def h_entries_long_line(bundle: Path) -> None:
    edit_lines(bundle, lambda ls: ls[:5] + [line(5, "x" * (3 << 20))] + ls[6:])


def h_entries_not_utf8(bundle: Path) -> None:
    path = bundle / "entries.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5] + [lines[5].replace(b'"leaf": "', b'"leaf": "\xff', 1)] + lines[6:]))


def h_vkey_fifo(bundle: Path) -> None:
    (bundle / "audit-log.vkey").unlink()
    os.mkfifo(bundle / "audit-log.vkey")


HOSTILE: list[tuple[BundleTamper, str]] = [
    (h_note_to_dev_zero, "000000000008.note: not a regular file (a symbolic link)"),
    (h_note_to_a_file_outside, "000000000008.note: not a regular file (a symbolic link)"),
    (h_note_fifo, "000000000008.note: not a regular file (a FIFO)"),
    (h_note_huge, "000000000008.note: larger than 65536 bytes"),
    (h_checkpoints_linked, "checkpoints: not a directory (a symbolic link)"),
    (h_entries_to_dev_zero, "entries.jsonl: not a regular file (a symbolic link)"),
    (h_entries_fifo, "entries.jsonl: not a regular file (a FIFO)"),
    (h_entries_long_line, "entry 5: line 6 of entries.jsonl is longer than 1048576 bytes"),
    (h_entries_not_utf8, "entry 5: line 6 of entries.jsonl is not UTF-8"),
    (h_vkey_fifo, "audit-log.vkey: not a regular file (a FIFO)"),
]


def _small_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize(("hostile", "said"), HOSTILE, ids=[h.__name__ for h, _ in HOSTILE])
def test_verify_bundle_reads_only_plain_files_of_bounded_size(
    bundle: Path, hostile: BundleTamper, said: str
) -> None:
    """The bundle comes from outside: a link, a device or a FIFO in it, or a file or line
    too large to hold, is one line and exit status 1, not a hang or a MemoryError."""
    hostile(bundle)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify-bundle", str(bundle)],
        capture_output=True, text=True, timeout=60, preexec_fn=_small_address_space,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    *warned, message = done.stderr.strip().splitlines()  # the key it trusted, unpinned
    assert len(warned) <= 1 and message.startswith("Error: ") and said in message, done.stderr
