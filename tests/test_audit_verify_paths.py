"""`verify_database` both ways: the bulk snapshot read (SQLite file) and the streamed
read, deep (canonical form and schema lint too) and hashes only; every way catches a
tampered log, and only the lint names a non-canonical leaf."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import log, merkle, verifydb
from gateway.audit.errors import VerificationFailed
from gateway.audit.signer import LogSigner
from gateway.storage import Database
from tests.helpers import audit_entry as entry

ORIGIN = "test-bank/gateway-audit"


@pytest.fixture
def signer() -> LogSigner:
    return LogSigner(ORIGIN, Ed25519PrivateKey.generate(), every=10)


async def fill(db: Database, signer: LogSigner, count: int, batch: int = 5) -> None:
    for first in range(0, count, batch):
        async with db.transaction() as tx:
            await log.append(tx, [entry(n) for n in range(first, min(count, first + batch))], signer=signer)


async def verify(db: Database, vkey: str, how: str) -> object:
    deep = how.endswith("deep")
    if how.startswith("streamed"):
        return await verifydb._verify_streamed(db, verifydb.Trust(vkey), None, deep)
    return await verifydb.verify_database(db, vkey, deep=deep)


HOWS = ["bulk-deep", "bulk-hashes", "streamed-deep", "streamed-hashes"]


@pytest.mark.parametrize("how", HOWS)
async def test_an_untouched_log_verifies_every_way(db: Database, signer: LogSigner, how: str) -> None:
    await fill(db, signer, 45)
    seen: list[int] = []
    summary = await verifydb.verify_database(db, signer.vkey, seen.append, deep=how.endswith("deep"))
    assert (summary.entries, summary.checkpoints, summary.unsigned) == (45, 4, 5)
    assert seen[-1] == 45
    again = await verify(db, signer.vkey, how)
    assert again.entries == 45  # type: ignore[attr-defined]


async def tamper(db: Database, sql: str, params: tuple[object, ...]) -> None:
    async with db.transaction() as tx:
        await tx.execute(sql, params)


def changed(leaf: bytes) -> bytes:
    return leaf.replace(b'"k13"', b'"k99"')


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("stale-hash", "entry 13: the stored leaf hash does not match"),
        ("rehashed", "entries 10..19: do not hash to the root signed at size 20"),
        ("deleted", "entry 13: missing"),
        ("unsigned", "entries 40..44: unsigned entries do not hash to the writer's tree state"),
    ],
)
async def test_tampering_is_caught_every_way(
    db: Database, signer: LogSigner, how: str, change: str, problem: str
) -> None:
    await fill(db, signer, 45)
    async with db.transaction() as tx:
        leaf13 = (await tx.fetchval("SELECT leaf FROM audit_entries WHERE idx = 13")).encode()
        leaf42 = (await tx.fetchval("SELECT leaf FROM audit_entries WHERE idx = 42")).encode()
    if change == "stale-hash":
        await tamper(db, "UPDATE audit_entries SET leaf = ? WHERE idx = 13", (changed(leaf13).decode(),))
    elif change == "rehashed":
        new = changed(leaf13)
        await tamper(
            db, "UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = 13",
            (new.decode(), merkle.leaf_hash(new)),
        )
    elif change == "deleted":
        await tamper(db, "DELETE FROM audit_entries WHERE idx = 13", ())
    else:
        new = leaf42.replace(b'"k42"', b'"k98"')
        await tamper(
            db, "UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = 42",
            (new.decode(), merkle.leaf_hash(new)),
        )
    with pytest.raises(VerificationFailed) as caught:
        await verify(db, signer.vkey, how)
    assert problem in str(caught.value)


@pytest.mark.parametrize("how", HOWS)
async def test_only_the_deep_pass_names_a_non_canonical_leaf(
    db: Database, signer: LogSigner, how: str
) -> None:
    await fill(db, signer, 20)
    async with db.transaction() as tx:
        leaf = (await tx.fetchval("SELECT leaf FROM audit_entries WHERE idx = 3")).encode()
    spaced = leaf.replace(b",", b", ", 1)
    await tamper(
        db, "UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE idx = 3",
        (spaced.decode(), merkle.leaf_hash(spaced)),
    )
    with pytest.raises(VerificationFailed) as caught:
        await verify(db, signer.vkey, how)
    if how.endswith("deep"):
        assert "entry 3: leaf is not in RFC 8785 canonical form" in str(caught.value)
    else:
        assert "do not hash to the root signed at size 10" in str(caught.value)
