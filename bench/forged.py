"""What unauthenticated callers can make the callback endpoint spend, and what they learn.

    .venv/bin/python bench/forged.py [--rounds 3] [--probes 20]

A gateway (``create_app``, in a child process as in `bench/inbound.py`) with the agency
onboarded and one case placed. Three measurements, each printed with the statuses seen:

- **a forged callback with 2,047 signature items**: a body of 1 MiB (an ``accepted``
  report padded with JSON whitespace) and ``webhook-signature: v1, v1, ...`` as long as
  aiohttp takes a header (8190 bytes), sent ``--rounds`` times one after the other: the
  time to the answer and the server's CPU per request;
- **a forged callback with 8 signatures of the right lengths** (4 ``v1`` of 32 bytes,
  4 well-formed ``v1a`` of 64), the most the gateway takes, the same way;
- **a genuine callback behind forged ones**: four forged callbacks of either kind in
  flight, then a correctly signed report; the time until the signed report is answered;
- **an unknown partner next to a bad signature**: ``--probes`` pairs, alternating, each a
  1 MiB body with one well-formed but wrong ``v1`` signature, to a partner id that does
  not exist and to the agency; the median time of each and whether the answers match.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on the path, where bench/email.py would hide
# the standard library's email package: the checkout takes the folder's place.
REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
else:  # imported (by the tests, another bench)
    sys.path.insert(0, str(REPO))

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.callbacks_load import PARTNER, build_workspace, place_cases, sign
from bench.common import cpu_used, keys_settled
from bench.inbound import Server

MIB = 1024 * 1024
#: ``v1,`` items separated by spaces that fit aiohttp's default header size (8190 bytes).
ITEMS = 2047


def padded(ref: str, size: int) -> bytes:
    """An ``accepted`` report whose JSON is padded with whitespace to ``size`` bytes."""
    event = {"type": "accepted", "case_ref": ref,
             "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    text = json.dumps(event).encode()
    return text[:-1] + b" " * (size - len(text)) + b"}"


def forged_headers(items: int) -> dict[str, str]:
    return {
        "webhook-id": "msg_" + os.urandom(8).hex(),
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": " ".join(["v1,"] * items),
        "content-type": "application/json",
    }


def well_formed_headers() -> dict[str, str]:
    """Eight signatures that pass every check of form: four v1, four v1a made by a key
    of nobody's (a valid point and scalar, so that verifying hashes the whole body)."""
    key = Ed25519PrivateKey.generate()
    v1 = ["v1," + base64.b64encode(os.urandom(32)).decode() for _ in range(4)]
    v1a = ["v1a," + base64.b64encode(key.sign(os.urandom(16))).decode() for _ in range(4)]
    return {**forged_headers(0), "webhook-signature": " ".join(v1 + v1a)}


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
               ) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as answer:
        reply = await answer.read()
    return time.perf_counter() - start, answer.status, reply


async def forged_one_by_one(port: int, body: bytes, rounds: int, well_formed: bool = False
                            ) -> list[tuple[float, int]]:
    url = f"http://127.0.0.1:{port}/v1/partners/{PARTNER}/callbacks"
    async with aiohttp.ClientSession() as session:
        out = []
        for _ in range(rounds):
            headers = well_formed_headers() if well_formed else forged_headers(ITEMS)
            seconds, status, _ = await post(session, url, body, headers)
            out.append((seconds, status))
        return out


async def genuine_behind_forged(port: int, body: bytes, good: bytes, secret: str, well_formed: bool
                                ) -> tuple[float, int, list[int]]:
    url = f"http://127.0.0.1:{port}/v1/partners/{PARTNER}/callbacks"
    async with aiohttp.ClientSession() as session:
        forged = [
            asyncio.ensure_future(
                post(session, url, body, well_formed_headers() if well_formed else forged_headers(ITEMS))
            )
            for _ in range(4)
        ]
        await asyncio.sleep(0.2)  # the forged ones are in
        seconds, status, _ = await post(session, url, good, sign(secret, good))
        return seconds, status, [status for _, status, _ in await asyncio.gather(*forged)]


async def probes(port: int, body: bytes, pairs: int) -> dict[str, tuple[list[float], set[int], set[bytes]]]:
    wrong = "v1," + base64.b64encode(os.urandom(32)).decode()
    out: dict[str, tuple[list[float], set[int], set[bytes]]] = {}
    async with aiohttp.ClientSession() as session:
        for _ in range(pairs):
            for name, partner in (("unknown partner", "no-such-partner"), ("bad signature", PARTNER)):
                headers = {**forged_headers(0), "webhook-signature": wrong}
                seconds, status, reply = await post(
                    session, f"http://127.0.0.1:{port}/v1/partners/{partner}/callbacks", body, headers
                )
                times, statuses, replies = out.setdefault(name, ([], set(), set()))
                times.append(seconds)
                statuses.add(status)
                replies.add(reply)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="forged callbacks timed one by one")
    parser.add_argument("--probes", type=int, default=20, help="pairs of unknown-partner / bad-signature")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-forged-") as tmp:
        ws = build_workspace(Path(tmp))
        refs, secret = asyncio.run(place_cases(ws, 3))
        keys_settled()
        body = padded(refs[0], MIB - 64)
        with Server("gateway", ws) as server:
            assert server.proc.pid is not None
            with cpu_used(server.proc.pid) as cpu:
                one_by_one = asyncio.run(forged_one_by_one(server.port, body, args.rounds))
            with cpu_used(server.proc.pid) as eight_cpu:
                eight = asyncio.run(forged_one_by_one(server.port, body, args.rounds, well_formed=True))
            behind = [
                asyncio.run(genuine_behind_forged(server.port, body, padded(ref, 200), secret, well_formed))
                for ref, well_formed in ((refs[1], False), (refs[2], True))
            ]
            pairs = asyncio.run(probes(server.port, body, args.probes))

    shown = ", ".join(f"{s * 1000:.1f}" for s, _ in one_by_one)
    print(f"forged callback, 1 MiB body, {ITEMS} signature items, {args.rounds} one by one:"
          f" {shown} ms; statuses {sorted({st for _, st in one_by_one})};"
          f" server CPU {cpu.server / args.rounds * 1000:.1f} ms a request")
    shown = ", ".join(f"{s * 1000:.1f}" for s, _ in eight)
    print(f"forged callback, 1 MiB body, 8 well-formed signatures (4 v1, 4 v1a), {args.rounds} one by one:"
          f" {shown} ms; statuses {sorted({st for _, st in eight})};"
          f" server CPU {eight_cpu.server / args.rounds * 1000:.1f} ms a request")
    for kind, (seconds, status, forged) in zip((f"{ITEMS} items", "8 well-formed signatures"), behind,
                                               strict=True):
        print(f"signed callback sent behind 4 forged ones ({kind}): answered {status} after"
              f" {seconds * 1000:.1f} ms (the forged ones: {sorted(set(forged))})")
    for name, (times, statuses, replies) in pairs.items():
        print(f"{name}: median {statistics.median(times) * 1000:.2f} ms over {len(times)}"
              f" (min {min(times) * 1000:.2f}, max {max(times) * 1000:.2f}); statuses {sorted(statuses)};"
              f" {len(replies)} distinct answer bodies")
    bodies = [replies for _, _, replies in pairs.values()]
    print("unknown partner and bad signature answered alike: "
          + ("yes" if bodies[0] == bodies[1] and len(bodies[0]) == 1 else "no"))


if __name__ == "__main__":
    main()
