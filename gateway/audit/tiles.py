"""The log's Merkle tree as C2SP tlog-tiles, read from the stored hashes.

A tile at level L, index N holds the hashes of up to 256 consecutive nodes of height
8L, from node 256N on: at level 0 the leaf hashes (``audit_entries.leaf_hash``), above
it the perfect subtrees of 256**L leaves (``audit_nodes``, stored as they complete). A
full tile has 256 hashes; a partial one (``.p/W``) the first W. With them a monitor or
a witness rebuilds any root or proof itself. An entry bundle (level ``entries``) holds
the leaves of a level-0 tile, each as a big-endian uint16 length and the canonical JSON.

Only what the latest signed checkpoint covers is served, so everything a follower
fetches is committed to by a signature it can check; a tile is then immutable.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from gateway.audit.errors import AuditError
from gateway.errors import InvalidInput, NotFound
from gateway.storage import Database

TILE_HEIGHT = 8
WIDTH = 1 << TILE_HEIGHT
ENTRIES = "entries"
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_INDEX = re.compile(r"(?:x[0-9]{3}/)*[0-9]{3}")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_MAX_ENTRY = 0xFFFF


@dataclass(frozen=True)
class Tile:
    """A tile (level 0..63) or an entry bundle (level None): index and width."""

    level: int | None
    index: int
    width: int = WIDTH

    @property
    def height(self) -> int:
        return TILE_HEIGHT * (self.level or 0)

    def leaves_needed(self) -> int:
        """The tree size from which this tile's hashes all exist."""
        return (self.index * WIDTH + self.width) << self.height


def parse(level: str, rest: str) -> Tile:
    """The tile of ``tile/<level>/<rest>``: rest is N as x-prefixed groups of three
    digits, then ``.p/<W>`` for a partial tile. Anything else is InvalidInput (400)."""
    index, partial, width = rest.partition(".p/")
    if level != ENTRIES and not (_LEVEL.fullmatch(level) and int(level) <= 63):
        raise InvalidInput(f"tile level {level[:20]!r} is not a decimal from 0 to 63", status=400)
    if not _INDEX.fullmatch(index) or (len(index) > 3 and index.startswith("x000")):
        raise InvalidInput(f"tile index {index[:40]!r} is not zero-padded groups of three digits", status=400)
    if partial and not (_WIDTH.fullmatch(width) and int(width) < WIDTH):
        raise InvalidInput(f"partial tile width {width[:20]!r} is not from 1 to 255", status=400)
    return Tile(
        None if level == ENTRIES else int(level),
        int(index.replace("x", "").replace("/", "")),
        int(width) if partial else WIDTH,
    )


def path(tile: Tile) -> str:
    """``tile/<L>/<N>[.p/<W>]``, as `parse` reads it."""
    digits = f"{tile.index:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    name = "/".join([*("x" + g for g in groups[:-1]), groups[-1]])
    level = ENTRIES if tile.level is None else str(tile.level)
    return f"tile/{level}/{name}" + ("" if tile.width == WIDTH else f".p/{tile.width}")


async def read(db: Database, tile: Tile, signed_size: int) -> bytes:
    """The tile's hashes end to end, or its entry bundle; NotFound beyond `signed_size`."""
    if tile.leaves_needed() > signed_size:
        raise NotFound(
            f"{path(tile)} is beyond the latest signed checkpoint (size {signed_size}); "
            "fetch /v1/audit/checkpoint first"
        )
    first = tile.index * WIDTH
    async with db.transaction() as tx:
        if tile.level is None or tile.level == 0:
            column = "leaf" if tile.level is None else "leaf_hash"
            rows = await tx.fetchall(
                f"SELECT {column} AS value FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (first, first + tile.width),
            )
        else:
            rows = await tx.fetchall(
                "SELECT hash AS value FROM audit_nodes"
                " WHERE height = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (tile.height, first, first + tile.width),
            )
    if len(rows) != tile.width:
        raise AuditError(f"{path(tile)}: stored hashes are missing; run `gateway audit verify`")
    if tile.level is None:
        return b"".join(_bundled(row["value"]) for row in rows)
    return b"".join(bytes(row["value"]) for row in rows)


def _bundled(leaf: str | bytes) -> bytes:
    data = leaf.encode("utf-8") if isinstance(leaf, str) else bytes(leaf)
    if len(data) > _MAX_ENTRY:
        raise AuditError(f"an entry of {len(data)} bytes does not fit an entry bundle")
    return struct.pack(">H", len(data)) + data
