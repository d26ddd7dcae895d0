"""Helpers of the personal data lifecycle tests: a canary case, the forms a value takes
when stored or encoded, the bytes a copied database would hand over, and two agencies
that take packages and report back."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import DATABASE_ENV_VAR, load_settings
from gateway.core import Gateway
from gateway.onboarding import registry
from schemas.case import Case
from tests.helpers import sample_case
from tests.partners import Agency, Clock, ThrowawayCA, agency_profile, init_workspace, serve

#: The canary's personal data: none of it may survive an erasure anywhere.
CANARY = {
    "name": "金丝雀测试人",
    "id_number": "110101199107077777",
    "phone": "13907077777",
    "email": "canary.q7z@example.org",
    "case_id": "CANARY-Q7Z-0001",
}


def canary_case() -> Case:
    data = json.loads(sample_case().read_text())
    data["case_id"] = CANARY["case_id"]
    data["debtor"].update(name=CANARY["name"], id_number=CANARY["id_number"], email=CANARY["email"])
    data["debtor"]["phones"] = [{"number": CANARY["phone"], "label": "mobile"}]
    return Case.model_validate(data)


def forms(value: str) -> list[bytes]:
    """``value`` as it may sit in stored bytes: UTF-8, JSON-escaped, and inside base64 or
    base64url text at any of the three alignments (a JWS payload, a JSON string)."""
    plain = [value.encode("utf-8"), json.dumps(value)[1:-1].encode("ascii")]
    found = list(plain)
    for raw in plain:
        for shift in range(3):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                text = encode(b"\0" * shift + raw).rstrip(b"=")
                # Drop the characters that depend on the bytes before and after the value.
                start = (shift * 8 + 5) // 6
                end = (shift + len(raw)) * 8 // 6
                if end - start >= 4:
                    found.append(text[start:end])
    return found


def leaks(data: bytes, values: Iterable[str]) -> list[str]:
    """The values (by name) found in ``data`` in any of their forms."""
    return [value for value in values if any(form in data for form in forms(value))]


def database_bytes(ws: Path) -> bytes:
    """Everything a copy of the database would hand over: on SQLite the file, its WAL and
    its shared-memory index as they lie on disk."""
    url = os.environ.get(DATABASE_ENV_VAR) or load_settings(ws).database_url
    assert url.startswith("sqlite:///"), "raw files exist on SQLite only"
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


async def table_text(gw: Gateway) -> str:
    """Every row of every table, as text (what a dump of the database holds)."""
    async with gw.db.transaction() as tx:
        if gw.db.dialect == "sqlite":
            tables = await tx.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
            names = [r["name"] for r in tables]
        else:
            names = [
                r["table_name"]
                for r in await tx.fetchall(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                )
            ]
        return "\n".join([repr(await tx.fetchall(f"SELECT * FROM {name}")) for name in names])


@dataclass
class Partners:
    gw: Gateway
    agencies: dict[str, Agency]
    secrets: dict[str, str]
    clock: Clock


FIELDS = """
"debtor.name" = "keep"
"debtor.phones[].number" = "keep"
"debtor.id_number" = "keep"
"debtor.timezone" = "keep"
"loan.outstanding" = "keep"
"""


@asynccontextmanager
async def two_agencies(tmp_path: Path) -> AsyncIterator[Partners]:
    """A workspace with two agencies (``agency-a``, ``agency-b``) serving on TLS, each
    with a webhook secret, given the debtor's name, phone and full id number."""
    ws = init_workspace(tmp_path / "ws")
    ca = ThrowawayCA(tmp_path / "ca")
    clock = Clock()
    async with AsyncExitStack() as stack:
        agencies: dict[str, Agency] = {}
        profiles = []
        for pid in ("agency-a", "agency-b"):
            agency = Agency(private_jwk={}, bank_jwks=ws / "keys" / "bank" / "jwks.json")
            await stack.enter_async_context(serve(agency, ca.server_context("agency")))
            profile, agency.private_jwk = agency_profile(ws, agency.port, ca, partner_id=pid)
            fields = '"debtor.name" = "keep"\n"loan.outstanding" = "keep"\n'
            profile.write_text(profile.read_text().replace(fields, FIELDS))
            agencies[pid] = agency
            profiles.append(profile)
        gw = await Gateway.open(load_settings(ws), clock=clock)
        stack.push_async_callback(gw.close)
        for profile in profiles:
            await registry.add(gw, profile, actor="test")
        secrets = {pid: gw.keys.add_webhook_secret(pid).read_text().split()[-1] for pid in agencies}
        yield Partners(gw, agencies, secrets, clock)


def report(case_ref: str, type_: str, clock: Clock, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "case_ref": case_ref, "occurred_at": clock.now.isoformat(), **fields}
