"""What the fuzz bench (bench/fuzz.py) sends: requests for every route of the gateway's
``/openapi.json`` and of the dashboard, in two kinds.

``refused`` requests must store nothing: unauthenticated or wrongly authenticated calls
of every route, forged callbacks (wrong secret, stale or non-ASCII timestamps, repeated
signature headers, the signature of another body), forged provider receipts, garbage
methods, paths, bodies and media types, the dashboard without a session or CSRF token,
public routes with fuzzed parameters, and malformed HTTP sent over a raw socket.

``open`` requests are authenticated and may be taken in: callbacks signed with the
partner's real secret carrying hostile field values, provider receipts with a valid JWT,
operator and auditor calls with fuzzed bodies, paths and query parameters, the
dashboard with a signed-in session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import OctKey

from bench.fuzzraw import RAW_BUILDERS, Request
from bench.fuzztarget import Pools, Target, encode, segment
from gateway.http.ui.sessions import csrf_of

UI_PAGES = ["/ui", "/ui/", "/ui/login", "/ui/partners/{partner_id}", "/ui/violations", "/ui/violations.csv",
            "/ui/cases", "/ui/cases/{case_id}", "/ui/attestations", "/ui/audit"]  # fmt: skip
UI_ACTIONS = ["/ui/login", "/ui/logout", "/ui/partners/{partner_id}/status",
              "/ui/partners/{partner_id}/requeue", "/ui/audit/bundle"]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND", "get"]
MEDIA = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    'application/json; charset="',
    "",
    "*/*",
    "application/jsonx",
]
BAD_TOKENS = [
    "",
    "Bearer",
    "Bearer ",
    "Bearer gwt_",
    "Bearer gwt_000000000000_x",
    "Basic YTpi",
    "bearer x y",
    "Bearer " + "A" * 5000,
    "Bearer gwt_\u00e9_\u00e9",
    "Token abc",
    "Bearer null",
]


class Fuzzer:
    def __init__(self, target: Target, pools: Pools, seed: int) -> None:
        self.t, self.pools, self.rng = target, pools, random.Random(seed)
        self.sent_ids: list[tuple[str, str]] = []
        self.refused_makers: list[Callable[[], Request]] = [
            self.unauthenticated, self.unauthenticated, self.forged_callback, self.forged_callback,
            self.forged_receipt, self.garbage, self.raw, self.raw, self.ui_signed_out, self.public,
        ]  # fmt: skip
        self.open_makers: list[Callable[[], Request]] = [
            self.signed_callback, self.signed_callback, self.signed_callback, self.signed_receipt,
            self.operator_write, self.operator_write, self.authenticated_get, self.authenticated_get,
            self.ui_signed_in,
        ]  # fmt: skip

    def refused(self) -> Request:
        return self.rng.choice(self.refused_makers)()

    def open(self) -> Request:
        return self.rng.choice(self.open_makers)()

    # -- pieces --------------------------------------------------------------------------------

    def pick(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def fill(self, template: str, real: bool) -> str:
        """``template`` with each ``{name}`` a real id (when ``real``, mostly) or fuzz."""
        out = []
        for part in template.split("/"):
            if not (part.startswith("{") and part.endswith("}")):
                out.append(part)
                continue
            name = part[1:-1]
            ids = {
                "partner_id": self.t.partners,
                "case_id": self.t.case_ids,
                "package_id": self.t.package_ids,
                "format": ["vonage-messages"],
                "level": ["0", "1", "entries"],
                "index": ["000", "x001/234"],
            }
            pool = ids.get(name, [])
            if real and pool and self.chance(0.8):
                out.append(self.pick(pool))
            else:
                out.append(segment(self.pick(self.pools.strings)))
        return "/".join(out)

    def query(self, path: str, method: str, authentic: bool) -> str:
        """A query string from the route's documented parameters, fuzzed, and sometimes
        one it does not take."""
        operation = self.t.document["paths"].get(path, {}).get(method.lower(), {})
        params: dict[str, str] = {}
        for param in operation.get("parameters", []):
            if param["in"] == "query" and self.chance(0.5):
                schema = param.get("schema", {})
                value = self.pick(schema.get("enum", [])) if schema.get("enum") and self.chance(0.5) else None
                if value is None and schema.get("type") == "integer" and authentic and self.chance(0.5):
                    value = str(self.rng.randint(-5, 5000))
                params[param["name"]] = str(value if value is not None else self.pick(self.pools.values))
        if self.chance(0.15):
            params[str(self.pick(self.pools.strings))[:40] or "x"] = str(self.pick(self.pools.values))[:200]
        encoded = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in params.items()})
        return f"?{encoded}" if encoded else ""

    def body_for(self, key: str) -> bytes:
        roll = self.rng.random()
        if roll < 0.7 and key in self.pools.bodies:
            return encode(self.pick(self.pools.bodies[key]))
        if roll < 0.85:
            return encode(self.pick(self.pools.values))
        return self.rng.randbytes(self.rng.randrange(0, 400))

    def api_route(self, secured: bool | None = None) -> tuple[str, str, tuple[str, ...]]:
        while True:
            route = self.pick(self.t.routes)
            if secured is None or bool(route[2]) == secured:
                return route

    # -- refused -------------------------------------------------------------------------------

    def unauthenticated(self) -> Request:
        """A route that takes a bearer token, without a valid one (or with a role that may
        not call it)."""
        method, path, roles = self.api_route(secured=True)
        headers = [("Content-Type", "application/json")]
        wrong_roles = [r for r in ("operator", "auditor") if r not in roles]
        if wrong_roles and self.chance(0.3):
            headers.append(("Authorization", f"Bearer {self.t.tokens[self.pick(wrong_roles)]}"))
        elif (auth := self.pick(BAD_TOKENS)) or self.chance(0.5):
            headers.append(("Authorization", auth))
        full = self.fill(path, real=True) + self.query(path, method, authentic=False)
        return Request("unauthenticated", method, full, headers, self.body_for(f"{method} {path}"))

    def report(self, partner: str | None = None) -> tuple[str, bytes]:
        """A status event for a real case (so that one wrongly taken in would be stored)."""
        partner = partner or self.pick(list(self.t.secrets))
        data = self.pick(self.pools.bodies["POST /v1/partners/{partner_id}/callbacks"])
        if isinstance(data, dict) and self.chance(0.7) and partner in self.t.case_refs:
            data = {**data, "case_ref": self.pick(self.t.case_refs[partner])}
        elif isinstance(data, dict) and self.chance(0.3):
            data = {**data, "case_ref": self.pick(self.pools.strings)}
        return partner, encode(data)

    def signed(self, secret: bytes, msg_id: str, stamp: str, body: bytes) -> str:
        mac = hmac.new(secret, f"{msg_id}.{stamp}.".encode("utf-8", "surrogatepass") + body, hashlib.sha256)
        return "v1," + base64.b64encode(mac.digest()).decode()

    def forged_callback(self) -> Request:
        partner, body = self.report()
        msg_id, now = f"msg_{uuid.uuid4().hex}", int(time.time())
        stamp = str(now)
        secret = self.t.secrets[partner]
        signature = self.signed(secret, msg_id, stamp, body)
        trick = self.rng.randrange(9)
        if trick == 0:
            signature = self.signed(self.rng.randbytes(24), msg_id, stamp, body)  # someone else's secret
        elif trick == 1:
            stamp = self.pick(
                [str(now - 3600), str(now + 3600), "0", "-1", "99999999999999", "1e9", " 1", "", f"²{now}"]
            )
            signature = self.signed(secret, msg_id, stamp, body)
        elif trick == 2:
            signature = self.signed(secret, msg_id, stamp, body + b" ")  # another body
        elif trick == 3:
            partner = self.pick([p for p in self.t.secrets if p != partner] or ["nobody"])  # another partner
        elif trick == 4:
            signature = " ".join(["v1,AAAA"] * self.rng.randrange(2, 200))
        elif trick == 5:
            signature = "v1a," + base64.b64encode(self.rng.randbytes(64)).decode()
        headers = [("webhook-id", msg_id), ("webhook-timestamp", stamp), ("webhook-signature", signature),
                   ("Content-Type", self.pick(MEDIA[:2]))]  # fmt: skip
        if trick == 6:  # a second signature header, the valid one among them
            headers.append(("webhook-signature", self.signed(self.rng.randbytes(24), msg_id, stamp, body)))
        elif trick == 7:
            headers.append(("webhook-id", f"msg_{uuid.uuid4().hex}"))
        elif trick == 8:
            missing = self.pick(["webhook-id", "webhook-timestamp", "webhook-signature"])
            headers = [h for h in headers if h[0] != missing]
        return Request("forged callback", "POST", f"/v1/partners/{segment(partner)}/callbacks", headers, body)

    def receipt(self, partner: str) -> tuple[dict[str, Any], bytes]:
        data = {
            "message_uuid": str(uuid.uuid4()),
            "status": self.pick(
                [
                    "delivered",
                    "failed",
                    "submitted",
                    "rejected",
                    "undeliverable",
                    self.pick(self.pools.strings),
                ]
            ),
            "timestamp": self.pick(["2026-01-01T00:00:00Z", self.pick(self.pools.strings)]),
            "client_ref": f"{self.pick(self.t.case_refs[partner])}:{self.pick(self.t.package_ids)}",
        }
        if self.chance(0.3):
            data[self.pick(["client_ref", "timestamp", "error", "to", "message_uuid"])] = self.pick(
                self.pools.values
            )
        return data, encode(data)

    def receipt_token(self, secret: bytes, body: bytes, iat: float, hostile: bool = False) -> str:
        claims: dict[str, Any] = {"iat": int(iat), "payload_hash": hashlib.sha256(body).hexdigest()}
        if hostile:  # the provider's own claims, wrong: only its secret can sign them
            claims[self.pick(["iat", "payload_hash"])] = self.pick(self.pools.values)
        return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret))

    def forged_receipt(self) -> Request:
        partner = self.pick(list(self.t.receipts))
        fmt, secret = self.t.receipts[partner]
        _, body = self.receipt(partner)
        trick = self.rng.randrange(5)
        token = self.receipt_token(
            self.rng.randbytes(32) if trick == 0 else secret,
            body + (b"x" if trick == 1 else b""),
            time.time() - (3600 if trick == 2 else 0),
        )
        if trick == 3:
            token = self.pick(["", "a.b.c", "x" * 5000, token + "x", token.split(".")[0] + ".e30."])
        if trick == 4:  # a format the partner does not report in, or a partner without it
            partner, fmt = self.pick([(partner, "standard-webhooks"), (self.pick(self.t.partners), fmt)])
            partner = partner if partner not in self.t.receipts else "nobody"
        path = f"/v1/partners/{segment(partner)}/callbacks/{segment(fmt)}"
        return Request("forged receipt", "POST", path, [("Authorization", f"Bearer {token}")], body)

    def garbage(self) -> Request:
        if self.chance(0.5):
            method, path, _ = self.api_route()
            full = self.fill(path, real=True)
        else:
            full = "/" + "/".join(
                segment(self.pick(self.pools.strings)) for _ in range(self.rng.randrange(1, 5))
            )
        headers = [("Content-Type", self.pick(MEDIA))]
        if self.chance(0.3):
            name = self.pick(["Accept", "Range", "If-None-Match", "X-Forwarded-For", "Cookie", "Origin"])
            value = str(self.pick(self.pools.values))[:200].encode("utf-8", "ignore").decode("latin-1")
            # What an HTTP client sends at all (control characters go over raw sockets).
            headers.append((name, "".join(c for c in value if c == "\t" or " " <= c != "\x7f")))
        body = self.rng.randbytes(self.rng.randrange(0, 2000)) if self.chance(0.6) else b""
        return Request("garbage", self.pick(METHODS), full, headers, body)

    def raw(self) -> Request:
        maker = self.pick(RAW_BUILDERS)
        path = self.pick(self.t.routes)[1] if self.chance(0.8) else self.pick(UI_ACTIONS)
        return maker(self.rng, self.fill(path, real=True))

    def ui_signed_out(self) -> Request:
        cookie = self.pick(["", "gw_session=", "gw_session=x", f"gw_session={self.t.session}x",
                            "gw_signin=abc; gw_session=" + "A" * 4000])  # fmt: skip
        headers = [("Cookie", cookie)] if cookie else []
        if self.chance(0.6):
            path = self.fill(self.pick(UI_PAGES), real=True)
            return Request("dashboard, signed out", "GET", path + self.query("", "GET", False), headers)
        form = {"csrf": str(self.pick(self.pools.strings)), "token": self.pick([self.t.tokens["admin"], "x"]),
                "action": self.pick(["suspend", "reinstate"]), "reason": "x", "all": "1"}  # fmt: skip
        body = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in form.items()}).encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        return Request(
            "dashboard, signed out", "POST", self.fill(self.pick(UI_ACTIONS), real=True), headers, body
        )

    def public(self) -> Request:
        method, path, _ = self.api_route(secured=False)
        if method != "GET":
            path = "/healthz"
        full = self.fill(path, real=self.chance(0.5)) + self.query(path, "GET", authentic=False)
        return Request(
            "public", "GET", full, [("Accept", self.pick(["application/json", "text/plain", "*/*"]))]
        )

    # -- open ----------------------------------------------------------------------------------

    def plausible(self, partner: str) -> bytes:
        """A report as the schema has it, about a case placed with the partner, dated
        in the last hours; now and then one field hostile."""
        event = dict(self.pick(self.pools.bodies["event"]))
        event["case_ref"] = self.pick(self.t.case_refs[partner])
        event["occurred_at"] = (
            datetime.now(UTC) - timedelta(seconds=self.rng.randrange(60, 36_000))
        ).isoformat()
        event.pop("unexpected", None)
        if self.chance(0.3):
            event[self.pick(list(event))] = self.pick(self.pools.values)
        return encode(event)

    def signed_callback(self) -> Request:
        partner, body = self.report()
        if partner in self.t.case_refs and self.chance(0.5):
            body = self.plausible(partner)
        if self.chance(0.05):
            body = self.pick([self.rng.randbytes(200), b"\xff\xfe{}", b"[]", b"null", b"{" * 5000])
        msg_id = f"msg_{uuid.uuid4().hex}"
        if self.sent_ids and self.chance(0.05):  # a replay of an earlier report
            partner, msg_id = self.pick(self.sent_ids)
        stamp = str(int(time.time()))
        headers = [("webhook-id", msg_id), ("webhook-timestamp", stamp),
                   ("webhook-signature", self.signed(self.t.secrets[partner], msg_id, stamp, body)),
                   ("Content-Type", self.pick(MEDIA[:2]))]  # fmt: skip
        self.sent_ids.append((partner, msg_id))
        path = f"/v1/partners/{partner}/callbacks"
        return Request("signed callback", "POST", path, headers, body, message=(partner, msg_id))

    def signed_receipt(self) -> Request:
        partner = self.pick(list(self.t.receipts))
        fmt, secret = self.t.receipts[partner]
        data, body = self.receipt(partner)
        token = self.receipt_token(secret, body, time.time(), hostile=self.chance(0.2))
        headers = [("Authorization", f"Bearer {token}"),
                   ("Content-Type", "application/json")]  # fmt: skip
        message = (partner, f"vonage:{data.get('message_uuid')}:{data.get('status')}")
        return Request("signed receipt", "POST", f"/v1/partners/{partner}/callbacks/{fmt}", headers, body,
                       message=message)  # fmt: skip

    def operator_write(self) -> Request:
        method, path, roles = self.pick([r for r in self.t.routes if r[0] == "POST" and r[2]])
        body = self.body_for(f"{method} {path}")
        if path == "/v1/placements" and self.chance(0.5):
            body = encode(self.placement())
        headers = [("Authorization", f"Bearer {self.t.tokens[self.pick([*roles, 'admin'])]}"),
                   ("Content-Type", self.pick(MEDIA[:3]))]  # fmt: skip
        return Request("operator write", method, path, headers, body)

    def placement(self) -> dict[str, Any]:
        """The sample case with a new id, placed with a real partner, one field hostile."""
        case = json.loads(json.dumps(self.t.real_case))
        case["case_id"] = f"C-FUZZ-{uuid.uuid4().hex[:12]}"
        if self.chance(0.5):
            section = case[self.pick(["debtor", "loan"])]
            section[self.pick(list(section))] = self.pick(self.pools.values)
        purpose = self.pick(["collection", "arbitration", "reminder", str(self.pick(self.pools.strings))])
        return {"case": case, "partner": self.pick(self.t.partners), "purpose": purpose}

    def authenticated_get(self) -> Request:
        method, path, roles = self.pick([r for r in self.t.routes if r[0] == "GET" and r[2]])
        token = self.t.tokens[self.pick([*roles, "admin"])]
        full = self.fill(path, real=True) + self.query(path, method, authentic=True)
        return Request("authenticated read", method, full, [("Authorization", f"Bearer {token}")])

    def ui_signed_in(self) -> Request:
        headers = [("Cookie", f"gw_session={self.t.session}")]
        if self.chance(0.8):
            page = self.fill(self.pick(UI_PAGES), real=True)
            params = {
                k: str(self.pick(self.pools.values))[:100]
                for k in self.rng.sample(
                    ["partner", "rule", "since", "until", "q", "case", "next", "page", "done"],
                    self.rng.randrange(3),
                )
            }
            query = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in params.items()})
            return Request("dashboard, signed in", "GET", page + (f"?{query}" if query else ""), headers)
        # Not /ui/logout (the session is kept), nor a valid export (a whole audit bundle).
        action = self.pick(UI_ACTIONS[2:4] if self.chance(0.5) else UI_ACTIONS[:1] + UI_ACTIONS[2:])
        csrf = csrf_of(self.t.session) if action in UI_ACTIONS[2:4] else str(self.pick(self.pools.strings))
        fields = {"csrf": csrf, "action": self.pick(["reinstate", "suspend!", ""]), "package": "pkg_x",
                  "reason": str(self.pick(self.pools.values))}  # fmt: skip
        form = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()}).encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        return Request("dashboard, signed in", "POST", self.fill(action, real=True), headers, form)
