"""Reading an HTTP answer from outside (a partner, a witness) without trusting its size."""

from __future__ import annotations

import aiohttp


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """The answer's body, at most `limit` bytes of it, and whether there was more. A
    body sent as it is (no Content-Encoding) whose Content-Length is within the limit is
    read at once (the parser reads no more than that length: the usual small answer);
    any other, a chunk at a time until the limit. A compressed body always goes by
    chunks: its Content-Length says nothing of what it inflates to (64 KiB of gzip can
    be 64 MiB)."""
    length = resp.content_length
    plain = resp.headers.get("Content-Encoding", "identity") == "identity"
    if plain and length is not None and length <= limit:
        return await resp.read(), False
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[:limit]), len(body) > limit
