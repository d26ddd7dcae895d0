"""Entries by partner and by case: the case index is laid out per block of entries
(migration 5), so a lookup must find every match in every block, on both backends."""

from __future__ import annotations

from gateway.audit import log, query
from gateway.storage import Database
from schemas.audit import DisclosedField, Disclosure, KeyRotated

CASES = ["case_" + f"{n:032x}" for n in range(5)]
PARTNERS = ["acme-collect", "sz-arbitration"]


def disclosure(n: int) -> Disclosure:
    return Disclosure(
        at=f"2026-01-{1 + n % 28:02d}T00:00:00.000000Z",
        actor="test",
        package_id=f"pkg_{n}",
        partner=PARTNERS[n % 2],
        purpose="collection",
        legal_basis="contract",
        subject="subj_" + f"{n:032x}",
        case=CASES[n % 5],
        fields=[DisclosedField(path="debtor.name", transform="keep")],
        package_digest="sha256:" + "0" * 64,
        sealing="jwe",
    )


async def test_lookups_by_case_and_partner_span_every_block(db: Database) -> None:
    size = 2 * query.CASE_BLOCK + 300
    made = [
        disclosure(n) if n % 97 else KeyRotated(at="2026-01-01T00:00:00.000000Z", actor="t",
                                                 key="bank-signing", old_kid=f"k{n}", new_kid="x")
        for n in range(size)
    ]
    for first in range(0, size, 1000):
        async with db.transaction() as tx:
            await log.append(tx, made[first : first + 1000])

    def expected(case: str | None, partner: str | None, start: int = 0, end: int = size) -> list[int]:
        return [
            n for n in range(start, end)
            if (case is None or getattr(made[n], "case", None) == case)
            and (partner is None or getattr(made[n], "partner", None) == partner)
        ]

    async def found(**kwargs: object) -> list[int]:
        rows = await query.entries(db, query.EntryFilter(**kwargs))  # type: ignore[arg-type]
        return [row["idx"] for row in rows]

    assert await found(case_token=CASES[2]) == expected(CASES[2], None)
    assert len(expected(CASES[2], None)) > 1500
    assert await found(partner=PARTNERS[1]) == expected(None, PARTNERS[1])
    assert await found(case_token=CASES[1], partner=PARTNERS[1]) == expected(CASES[1], PARTNERS[1])
    assert await found(case_token=CASES[3], start=4000, end=8200) == expected(CASES[3], None, 4000, 8200)
    assert await found(case_token=CASES[4], start=size) == []
    assert await found(case_token=CASES[4], start=5000, end=10) == []
    assert await found(case_token="case_" + "f" * 32) == []
    limited = await found(case_token=CASES[0], start=100, limit=7)
    assert limited == expected(CASES[0], None, 100)[:7]
    row = (await query.entries(db, query.EntryFilter(case_token=CASES[0], start=4096, limit=1)))[0]
    assert row["entry"]["case"] == CASES[0] and row["idx"] >= 4096


async def test_an_empty_log_has_no_entries_for_a_case(db: Database) -> None:
    assert await query.entries(db, query.EntryFilter(case_token=CASES[0])) == []
