"""The public checkpoint and the C2SP tlog-tiles endpoints over real HTTP: every tile
holds the log's own hashes, a follower rebuilds the signed root from tiles alone, and
entries stay behind the auditor role."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.audit import log as audit_log
from gateway.audit import merkle, tiles
from gateway.audit.checkpoint import parse_and_verify
from gateway.core import Gateway
from gateway.http import create_app
from gateway.onboarding import tokens
from tests.helpers import audit_entry

#: Past 256**2, so that the log has tiles at levels 0, 1 and 2, full and partial.
SIZE = 65_536 + 300


@pytest.fixture
async def grown(gw: Gateway, aiohttp_client: Any) -> tuple[Gateway, TestClient, merkle.MerkleTree]:
    """A log of SIZE entries with a checkpoint at SIZE, served; and its tree as the
    test computes it from the stored leaf hashes."""
    have = (await audit_log.checkpoint_now(gw.db, gw.audit_signer)).size
    batch = 5000
    for first in range(have, SIZE, batch):
        async with gw.db.transaction() as tx:
            entries = [audit_entry(n) for n in range(first, min(first + batch, SIZE))]
            await audit_log.append(tx, entries, signer=gw.audit_signer)
    await audit_log.checkpoint_now(gw.db, gw.audit_signer)
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall("SELECT leaf_hash FROM audit_entries ORDER BY idx")
    tree = merkle.MerkleTree(bytes(r["leaf_hash"]) for r in rows)
    assert len(tree) == SIZE
    return gw, await aiohttp_client(create_app(gw.settings, gateway=gw)), tree


async def fetch(client: TestClient, path: str, **headers: str) -> bytes:
    response = await client.get(f"/v1/audit/{path}", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/octet-stream"
    assert "immutable" in response.headers["Cache-Control"]
    return await response.read()


def expected(tree: merkle.MerkleTree, tile: tiles.Tile) -> bytes:
    span = 1 << tile.height
    first = tile.index * tiles.WIDTH
    return b"".join(tree.subtree_hash(i * span, (i + 1) * span) for i in range(first, first + tile.width))


async def test_every_tile_holds_the_logs_own_hashes(
    grown: tuple[Gateway, TestClient, merkle.MerkleTree],
) -> None:
    _, client, tree = grown
    wanted = [
        tiles.Tile(0, 0),
        tiles.Tile(0, 100),
        tiles.Tile(0, 256),  # the last full tile of level 0
        tiles.Tile(0, 257, SIZE % 256),  # the partial one at the checkpoint's size
        tiles.Tile(0, 257, 10),  # a narrower view of it: an older size's
        tiles.Tile(1, 0),
        tiles.Tile(1, 1, 1),
        tiles.Tile(2, 0, 1),
    ]
    for tile in wanted:
        assert await fetch(client, tiles.path(tile)) == expected(tree, tile), tiles.path(tile)


async def test_a_follower_rebuilds_the_signed_root_from_tiles_alone(
    grown: tuple[Gateway, TestClient, merkle.MerkleTree],
) -> None:
    gw, client, _ = grown
    note = await (await client.get("/v1/audit/checkpoint")).text()
    checkpoint = parse_and_verify(note, gw.audit_signer.vkey)
    assert checkpoint.size == SIZE
    # SIZE = 1 * 256**2 + 1 * 256 + 44: the right edge is one node of each level.
    top = await fetch(client, "tile/2/000.p/1")
    middle = await fetch(client, "tile/1/001.p/1")
    bottom = await fetch(client, f"tile/0/257.p/{SIZE % 256}")
    leaves = [bottom[i : i + 32] for i in range(0, len(bottom), 32)]
    root = merkle.node_hash(top, merkle.node_hash(middle, merkle.root_from_leaf_hashes(leaves)))
    assert root == checkpoint.root


async def test_entries_stay_behind_the_auditor_role(
    grown: tuple[Gateway, TestClient, merkle.MerkleTree],
) -> None:
    gw, client, tree = grown
    assert (await client.get("/v1/audit/tile/entries/001")).status == 401
    auditor = {"Authorization": "Bearer " + await tokens.create(gw, "auditor", "a", actor="t")}
    bundle = await fetch(client, "tile/entries/001", **auditor)
    leaves = []
    while bundle:
        (length,) = struct.unpack(">H", bundle[:2])
        leaves.append(bundle[2 : 2 + length])
        bundle = bundle[2 + length :]
    assert b"".join(merkle.leaf_hash(leaf) for leaf in leaves) == expected(tree, tiles.Tile(0, 1))


async def test_tiles_beyond_the_signed_log_or_badly_named_are_refused(
    grown: tuple[Gateway, TestClient, merkle.MerkleTree],
) -> None:
    gw, client, _ = grown
    async with gw.db.transaction() as tx:  # an entry not yet signed
        await audit_log.append(tx, [audit_entry(SIZE)])
    for path, status in (
        ("tile/0/257", 404),  # full only once 65,792 entries are signed
        (f"tile/0/257.p/{SIZE % 256 + 1}", 404),  # the unsigned entry
        ("tile/1/001", 404),
        ("tile/3/000.p/1", 404),
        ("tile/0/x000/001", 400),
        ("tile/0/1", 400),
        ("tile/64/000", 400),
        ("tile/0/000.p/256", 400),
        ("tile/0/000.p/0", 400),
        ("tile/01/000", 400),
    ):
        response = await client.get(f"/v1/audit/{path}")
        assert response.status == status, (path, await response.text())


def test_tile_paths_are_written_as_the_spec_writes_them() -> None:
    assert tiles.path(tiles.Tile(0, 1234067)) == "tile/0/x001/x234/067"
    assert tiles.path(tiles.Tile(2, 5, 17)) == "tile/2/005.p/17"
    assert tiles.path(tiles.Tile(None, 0)) == "tile/entries/000"
    assert tiles.parse("0", "x001/x234/067") == tiles.Tile(0, 1234067)
    assert tiles.parse("entries", "005.p/3") == tiles.Tile(None, 5, 3)
