"""Malformed HTTP for the fuzz bench, sent as bytes over a socket (no client library
would send it): bad request lines, huge and broken headers, invalid chunking, bytes
that are not UTF-8, bodies shorter than announced, requests trickled in a few bytes at
a time, and requests cut off half-way. Each builder takes a random generator and a
path of a real route, and returns a `Request` with ``raw`` set."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

HOST = b"Host: 127.0.0.1\r\n"


@dataclass
class Request:
    """One request of the fuzz bench: an HTTP request, or bytes for a raw socket."""

    kind: str
    method: str = "GET"
    path: str = "/"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes | None = None
    """Sent as these bytes over a socket instead."""
    trickle: float = 0.0
    """raw: seconds over which the bytes are sent, a few at a time."""
    hangup: bool = False
    """raw: close once sent, without waiting for an answer."""
    message: tuple[str, str] | None = None
    """(partner, message id) of an authentic report: the id it is stored under."""


def _request(kind: str, raw: bytes, *, trickle: float = 0.0, hangup: bool = False) -> Request:
    return Request(kind, raw=raw, trickle=trickle, hangup=hangup)


def bad_request_line(rng: random.Random, path: str) -> Request:
    p = path.encode()
    lines = [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET " + p + b"\r\n\r\n",
        b"GET " + p + b" HTTP/9.9\r\n\r\n",
        b"GET " + p + b" HTTP/1.1 extra\r\n\r\n",
        b"G\x00T " + p + b" HTTP/1.1\r\n\r\n",
        b"GET /\xff\xfe\xfd HTTP/1.1\r\n\r\n",
        b"GET /a b c HTTP/1.1\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"GET " + p + b"?" + b"q=" * 6000 + b" HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET http://evil.example" + p + b" HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n",
        b"GET " + p + b" HTTP/1.1\n\n",
        rng.randbytes(300),
    ]
    return _request("raw: bad request line", rng.choice(lines))


def bad_headers(rng: random.Random, path: str) -> Request:
    start = b"GET " + path.encode() + b" HTTP/1.1\r\n" + HOST
    headers = [
        b"X-Big: " + b"a" * rng.choice([8190, 9000, 70000]) + b"\r\n",
        b"".join(b"X-%d: v\r\n" % i for i in range(rng.choice([200, 2000]))),
        b"no colon here\r\n", b": empty name\r\n", b"X-Bad\x00Name: v\r\n", b"X-Bin: \xff\xfe\x80\r\n",
        b"X-Fold: a\r\n folded\r\n", b"Content-Length: -1\r\n", b"Content-Length: 1\r\nContent-Length: 2\r\n",
        b"Content-Length: 99999999999999999999\r\n", b"Host: a\r\nHost: b\r\n", b"X-CR: a\rb\r\n",
        b"Authorization: Bearer \xe9\xe9\r\n", b"Cookie: gw_session=\xff\r\n", b"Expect: 100-continue\r\n",
        b"Content-Type: application/json; charset=\xff\r\n", b"Transfer-Encoding: gzip, chunked\r\n",
    ]  # fmt: skip
    return _request("raw: bad headers", start + rng.choice(headers) + b"Connection: close\r\n\r\n")


def bad_chunks(rng: random.Random, path: str) -> Request:
    start = b"POST " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
    te = b"Transfer-Encoding: chunked\r\n"
    bodies = [
        te + b"\r\nzz\r\n{}\r\n0\r\n\r\n",
        te + b"\r\n-5\r\n{}\r\n0\r\n\r\n",
        te + b"\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        te + b"\r\n2\r\n{}",
        te + b"\r\n5\r\n{}\r\n0\r\n\r\n",
        te + b"Content-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        te + b"\r\n2;ext=\xff\r\n{}\r\n0\r\n\r\n",
        te + b"\r\n2\r\n{}\r\n0\r\nX-Trailer: \x00\r\n\r\n",
        b"Transfer-Encoding: identity\r\n\r\n{}",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]
    return _request("raw: bad chunking", start + rng.choice(bodies), hangup=rng.random() < 0.3)


def bad_body(rng: random.Random, path: str) -> Request:
    body = rng.choice(
        [b'\xff\xfe\x00{"a":1}', b'{"case_ref": "\xc3\x28"}', rng.randbytes(500), b"\x00" * 100]
    )
    length = len(body) + rng.choice([0, 0, 10, 1000])  # some announce more than comes
    head = (b"POST " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
            b"webhook-id: msg_1\r\nwebhook-timestamp: \xd9\xa1\xd9\xa2\r\nwebhook-signature: v1,\xff\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % length)  # fmt: skip
    return _request("raw: non-UTF-8 and short bodies", head + body, hangup=length != len(body))


def trickled(rng: random.Random, path: str) -> Request:
    """A whole, well-formed request sent a few bytes at a time: slow, not malicious."""
    raw = b"GET " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    return _request("raw: trickled", raw, trickle=rng.uniform(0.2, 1.5))


def cut_off(rng: random.Random, path: str) -> Request:
    """A request that stops part-way and hangs up (slowloris that gives up)."""
    raw = b"POST " + path.encode() + b" HTTP/1.1\r\n" + HOST + b'Content-Length: 100\r\n\r\n{"a":'
    return _request(
        "raw: cut off", raw[: rng.randrange(1, len(raw))], trickle=rng.uniform(0, 0.5), hangup=True
    )


RAW_BUILDERS: list[Callable[[random.Random, str], Request]] = [
    bad_request_line,
    bad_request_line,
    bad_headers,
    bad_headers,
    bad_chunks,
    bad_body,
    trickled,
    cut_off,
]
