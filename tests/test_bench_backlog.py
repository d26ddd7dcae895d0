"""The backlog the dispatch benches drain (bench/scale.py, bench/outbound.py --backlog):
packages copied from a few placed ones under new ids must be packages the gateway can
send, their encrypted columns sealed for their own rows, on either database."""

from __future__ import annotations

import pytest

from bench.common import copy_packages
from gateway.core import Gateway
from gateway.errors import StorageError
from gateway.placement import service as placement
from schemas.case import Case
from tests.helpers import sample_case, stored_package


async def test_copied_packages_open_as_their_seeds_under_their_own_ids(gw: Gateway) -> None:
    case = Case.model_validate_json(sample_case().read_text())
    seeds = [await placement.place(gw, case, "acme-collect", "collection", actor="test") for _ in range(2)]
    await copy_packages(gw, [s.package_id for s in seeds], 5, step=2)

    async with gw.db.transaction() as tx:
        ids = [
            r["id"] for r in await tx.fetchall("SELECT id FROM packages WHERE state = 'queued' ORDER BY id")
        ]
    assert len(ids) == 7
    originals = {s.package_id: await stored_package(gw, s.package_id) for s in seeds}
    forms = {(o["signed"], o["sealed"]) for o in originals.values()}
    for package_id in set(ids) - set(originals):
        copy = await stored_package(gw, package_id)
        assert (copy["signed"], copy["sealed"]) in forms, "a copy holds what one of its seeds holds"
        assert copy["subject_token"] == next(iter(originals.values()))["subject_token"]


async def test_a_value_copied_as_it_is_to_another_row_does_not_open(gw: Gateway) -> None:
    """Why the benches seal each copy anew: stored values are bound to their row."""
    case = Case.model_validate_json(sample_case().read_text())
    seed = await placement.place(gw, case, "acme-collect", "collection", actor="test")
    await copy_packages(gw, [seed.package_id], 1)
    async with gw.db.transaction() as tx:
        copy_id = await tx.fetchval("SELECT id FROM packages WHERE id != ?", (seed.package_id,))
        await tx.execute(
            "UPDATE package_bodies SET signed = (SELECT signed FROM package_bodies WHERE package_id = ?)"
            " WHERE package_id = ?",
            (seed.package_id, copy_id),
        )
    with pytest.raises(StorageError, match="does not decrypt"):
        await stored_package(gw, copy_id)
