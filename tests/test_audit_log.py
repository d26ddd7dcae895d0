"""The audit log's writer: canonical leaves, incremental tree state in the caller's
transaction, checkpoints every N entries, proofs served from stored subtrees."""

from __future__ import annotations

import base64

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import log, merkle, proofcheck, proofs, query
from gateway.audit.canonical import canonical_json, parse_canonical
from gateway.audit.checkpoint import parse_and_verify
from gateway.audit.errors import AuditError
from gateway.audit.signer import LogSigner
from gateway.storage import Database, migrations
from tests.helpers import audit_entry as entry

ORIGIN = "test-bank/gateway-audit"

SAFE = 2**53 - 1
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-SAFE, SAFE)
    | st.text()
    | st.floats(-1e15, 1e15, allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(json_values)
def test_fast_canonical_json_is_rfc8785(value: object) -> None:
    expected = rfc8785.dumps(value)
    assert canonical_json(value) == expected
    assert parse_canonical(expected) == value


def test_integers_beyond_the_safe_range_are_refused_as_rfc8785_does() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json({"n": 2**60})
    with pytest.raises(ValueError, match="no RFC 8785 form"):
        parse_canonical(b'{"n":1152921504606846976}')


@pytest.mark.parametrize(
    "leaf", [b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b'{"a":1,"a":1}', b'{"a":"\\u0041"}', b"nope"]
)
def test_non_canonical_leaves_are_refused(leaf: bytes) -> None:
    with pytest.raises(ValueError):
        parse_canonical(leaf)


@pytest.fixture
def signer() -> LogSigner:
    return LogSigner(ORIGIN, Ed25519PrivateKey.generate(), every=50)


async def fill(db: Database, signer: LogSigner | None, sizes: list[int]) -> list[bytes]:
    hashes: list[bytes] = []
    for size in sizes:
        batch = [entry(len(hashes) + i) for i in range(size)]
        async with db.transaction() as tx:
            indices = await log.append(tx, batch, signer=signer)
        assert indices == list(range(len(hashes), len(hashes) + size))
        hashes += [merkle.leaf_hash(log.canonical(e)) for e in batch]
    return hashes


async def test_the_stored_tree_state_is_the_root_of_every_leaf(db: Database, signer: LogSigner) -> None:
    hashes = await fill(db, signer, [1, 7, 30, 64, 3, 129])
    async with db.transaction() as tx:
        tree = await log.load_tree(tx)
    assert tree.size == len(hashes)
    assert tree.root() == merkle.root_from_leaf_hashes(hashes)


async def test_a_checkpoint_is_signed_when_the_size_crosses_a_multiple_of_n(
    db: Database, signer: LogSigner
) -> None:
    hashes = await fill(db, signer, [30, 30, 5, 100, 10])
    records = await query.checkpoints(db)
    assert [r.size for r in records] == [60, 165]  # 30 no, 60 crosses 50, 65 no, 165 crosses 100 and 150
    for record in records:
        cp = parse_and_verify(record.note, signer.vkey)
        assert (cp.origin, cp.root) == (ORIGIN, merkle.root_from_leaf_hashes(hashes[: cp.size]))


async def test_a_rolled_back_action_leaves_no_entry_and_no_tree_change(
    db: Database, signer: LogSigner
) -> None:
    await fill(db, signer, [10])
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await log.append(tx, [entry(i) for i in range(60)], signer=signer)
            raise RuntimeError("the action failed after its entries were written")
    async with db.transaction() as tx:
        assert (await log.load_tree(tx)).size == 10
        assert await tx.fetchval("SELECT COUNT(*) FROM audit_entries") == 10
        assert await tx.fetchval("SELECT COUNT(*) FROM audit_checkpoints") == 0


async def test_appends_refuse_a_log_changed_behind_the_gateway(db: Database) -> None:
    await fill(db, None, [3])
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM audit_entries WHERE idx = 2")
    with pytest.raises(AuditError, match="records 3 entries but the table holds 2"):
        async with db.transaction() as tx:
            await log.append(tx, [entry(9)])


async def test_a_missing_tree_state_is_rebuilt_from_the_entries(db: Database) -> None:
    hashes = await fill(db, None, [70, 70])
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM audit_tree")
        await tx.execute("DELETE FROM audit_nodes")
    hashes += await fill(db, None, [0])  # an empty batch still loads the state
    async with db.transaction() as tx:
        await log.append(tx, [entry(140)])
        tree = await log.load_tree(tx)
    hashes.append(merkle.leaf_hash(log.canonical(entry(140))))
    assert tree.root() == merkle.root_from_leaf_hashes(hashes)
    proof = await proofs.inclusion_proof(db, 3, len(hashes))
    assert proof.proof == merkle.MerkleTree(hashes).inclusion_proof(3)


async def test_proofs_from_the_database_match_the_in_memory_tree(db: Database, signer: LogSigner) -> None:
    hashes = await fill(db, signer, [1, 63, 1, 64, 100, 171])
    tree = merkle.MerkleTree(hashes)
    for size in (1, 2, 15, 16, 17, 31, 33, 63, 64, 65, 128, 129, 300, len(hashes)):
        for index in {0, size // 2, size - 1, min(16, size - 1), min(64, size - 1)}:
            got = await proofs.inclusion_proof(db, index, size)
            assert got.proof == tree.inclusion_proof(index, size)
            proofcheck.verify_inclusion(got.leaf_hash, index, size, got.proof, tree.root(size))
        for old in {1, max(1, size // 3), size}:
            consistency = await proofs.consistency_proof(db, old, size)
            assert consistency.proof == tree.consistency_proof(old, size)


async def test_a_log_stored_with_subtrees_of_64_and_up_gets_those_of_16_and_32(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a log written before subtrees of 16 leaves were stored looks like, at the
    # schema version before the migration that stores them (later versions set aside).
    hashes = await fill(db, None, [700, 300, 45])
    monkeypatch.setattr(log, "_REBUILD_BATCH", 200)  # read in several batches, the last partial
    step = migrations.DataStep("audit-subtrees-16-32")
    version = next(n for n, steps in enumerate(migrations.MIGRATIONS, start=1) if step in steps)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:version])
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM audit_nodes WHERE height < 6")
        await tx.execute("DELETE FROM schema_version WHERE version >= ?", (version,))
    assert await migrations.migrate(db, log.DATA_STEPS) == version
    tree = merkle.MerkleTree(hashes)
    async with db.transaction() as tx:
        rows = await tx.fetchall("SELECT height, idx, hash FROM audit_nodes WHERE height < 6")
    assert sorted((r["height"], r["idx"], bytes(r["hash"])) for r in rows) == [
        (h, i, tree.subtree_hash(i << h, (i + 1) << h)) for h in (4, 5) for i in range(len(hashes) >> h)
    ]
    for index in (0, 17, 500, 1000, len(hashes) - 1):
        got = await proofs.inclusion_proof(db, index, len(hashes))
        assert got.proof == tree.inclusion_proof(index)
    more = [entry(len(hashes) + i) for i in range(40)]
    async with db.transaction() as tx:
        await log.append(tx, more)  # and appends go on storing them
    hashes += [merkle.leaf_hash(log.canonical(e)) for e in more]
    got = await proofs.inclusion_proof(db, len(hashes) - 1, len(hashes))
    assert got.proof == merkle.MerkleTree(hashes).inclusion_proof(len(hashes) - 1)


async def test_storing_subtrees_refuses_a_log_with_a_gap(db: Database) -> None:
    await fill(db, None, [40])
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM audit_entries WHERE idx = 20")
    with pytest.raises(AuditError, match="gap after entry -1"):
        async with db.transaction() as tx:
            await log.store_subtrees(tx, 4, 6)


async def test_a_default_proof_is_against_the_latest_checkpoint(db: Database, signer: LogSigner) -> None:
    await fill(db, signer, [120])
    got = (await proofs.inclusion_proof(db, 7)).as_dict()
    assert got["size"] == 120
    cp = parse_and_verify(got["checkpoint"], signer.vkey)
    proofcheck.verify_inclusion(
        base64.b64decode(got["leaf_hash"]), 7, 120, [base64.b64decode(p) for p in got["proof"]], cp.root
    )
    assert merkle.leaf_hash(got["leaf"].encode()) == base64.b64decode(got["leaf_hash"])


async def test_proofs_explain_what_is_missing(db: Database) -> None:
    await fill(db, None, [5])
    with pytest.raises(AuditError, match="no signed checkpoint yet"):
        await proofs.inclusion_proof(db, 1)
    with pytest.raises(AuditError, match="entry 9 is not in the log at size 5"):
        await proofs.inclusion_proof(db, 9, 5)
    with pytest.raises(AuditError, match="tree size 6 outside 0..5"):
        await proofs.consistency_proof(db, 1, 6)
