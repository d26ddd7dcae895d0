"""Keys and secrets leave: a retired signing key stays published only while packages it
signed may still be read, a compromised one leaves at once; webhook secrets are removed
by id and at offboarding. Every change is an audit entry, written before the files."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.config import load_settings
from gateway.core import Gateway, open_database
from gateway.http import create_app
from gateway.onboarding import registry
from gateway.onboarding.keys import KeyStore
from gateway.placement import recall
from gateway.placement import service as placement
from schemas.case import Case
from tests.callbacks import dumps, event, signed_headers
from tests.helpers import fail_audit_inserts, invoke, sample_case, workspace_sql

CASE = Case.model_validate_json(sample_case().read_text())


def ok(*args: str | Path) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str | Path) -> str:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    return line


def entries(ws: Path, kind: str) -> list[dict[str, Any]]:
    with workspace_sql(ws) as sql:
        rows = sql("SELECT leaf FROM audit_entries WHERE kind = ? ORDER BY idx", (kind,))
    return [json.loads(row["leaf"]) for row in rows]


def published(ws: Path) -> list[str]:
    return [key["kid"] for key in json.loads((ws / "keys/bank/jwks.json").read_text())["keys"]]


# -- signing keys ------------------------------------------------------------------------


async def test_a_retired_key_is_published_while_its_packages_live_then_leaves(
    gw: Gateway, onboarded: Path, aiohttp_client: Any
) -> None:
    old = gw.keys.signing_key().kid
    gw.keys.rotate()
    until_text = await registry.retire_signing_key(gw, old, compromised=False, actor="t")
    [entry] = await entries_of(gw, "key_retired")
    assert entry["kid"] == old and entry["compromised"] is False and entry["key"] == "bank-signing"
    assert entry["published_until"] == until_text
    until = datetime.fromisoformat(until_text.replace("Z", "+00:00"))
    at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
    # The longest package lifetime of the partners (package_ttl_days, 30 in the samples).
    assert until - at == timedelta(days=30)
    assert old in published(onboarded)

    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    for moment, shown in ((until - timedelta(seconds=1), True), (until, False)):
        gw.clock = lambda moment=moment: moment
        kids = [k["kid"] for k in (await (await client.get("/.well-known/jwks.json")).json())["keys"]]
        assert (old in kids) is shown and gw.keys.signing_key().kid in kids
    # Gone from the file at the next rotation, which writes the set again.
    gw.keys.rotate(now=until)
    assert old not in published(onboarded)


def test_retire_on_the_command_line(onboarded: Path) -> None:
    old = KeyStore(onboarded / "keys").signing_key().kid
    ok("-c", onboarded, "keys", "rotate")
    said = ok("-c", onboarded, "keys", "retire", "--", old)
    [entry] = entries(onboarded, "key_retired")
    assert said.strip() == f"{old} retired: published until {entry['published_until']}, then left out"
    assert "already retired" in refused("-c", onboarded, "keys", "retire", "--", old)
    said = ok("-c", onboarded, "keys", "retire", "--compromised", "--", old)
    assert said.strip() == f"{old} retired as compromised: no longer published"
    assert old not in published(onboarded)
    assert old not in ok("-c", onboarded, "keys", "jwks")
    compromised = entries(onboarded, "key_retired")[1]
    assert compromised["kid"] == old and compromised["compromised"] is True
    assert "published_until" not in compromised


def test_the_key_in_use_and_unknown_keys_are_not_retired(onboarded: Path) -> None:
    current = KeyStore(onboarded / "keys").signing_key().kid
    assert "rotate first" in refused("-c", onboarded, "keys", "retire", "--", current)
    assert "no key 'nope' in the published key set" in refused("-c", onboarded, "keys", "retire", "nope")
    assert published(onboarded) == [current] and entries(onboarded, "key_retired") == []


def test_a_retirement_that_cannot_be_recorded_does_not_happen(onboarded: Path) -> None:
    old = KeyStore(onboarded / "keys").signing_key().kid
    ok("-c", onboarded, "keys", "rotate")

    async def sabotage() -> None:
        async with await open_database(load_settings(onboarded).database_url) as db, db.transaction() as tx:
            await fail_audit_inserts(tx)

    asyncio.run(sabotage())
    assert "disk full" in refused("-c", onboarded, "keys", "retire", "--compromised", "--", old)
    assert old in published(onboarded)


# -- webhook secrets ---------------------------------------------------------------------


async def callback_status(client: TestClient, ref: str, secret: str, *, first: bool = False) -> int:
    """The answer to a report signed with `secret`: the partner accepting the case
    (`first`), or a contact attempt on it."""
    fields = {} if first else {"channel": "letter", "target": "debtor", "outcome": "left_message"}
    body = dumps(event(ref, "accepted" if first else "contact_attempt", **fields))
    answer = await client.post(
        "/v1/partners/acme-collect/callbacks",
        data=io.BytesIO(body.encode()),
        headers=signed_headers(secret, body),
    )
    return answer.status


def secrets_of(ws: Path) -> list[str]:
    path = ws / "keys/partners/acme-collect.whsec"
    return path.read_text().split() if path.exists() else []


def test_webhook_secrets_are_listed_by_id_and_removed_one_by_one(onboarded: Path) -> None:
    first = ok("-c", onboarded, "partners", "webhook-secret", "acme-collect")
    second = ok("-c", onboarded, "partners", "webhook-secret", "acme-collect")
    old_secret, new_secret = secrets_of(onboarded)
    listed = ok("-c", onboarded, "partners", "webhook-secret-list", "acme-collect").split()
    assert len(listed) == 2 and listed[0] in first and listed[1] in second
    for secret in (old_secret, new_secret):
        assert secret not in first + second + " ".join(listed)
    assert [e["secret_ids"] for e in entries(onboarded, "webhook_secret_added")] == [[listed[0]], [listed[1]]]

    said = ok("-c", onboarded, "partners", "webhook-secret-remove", "acme-collect", listed[0],
              "--reason", "rotated")  # fmt: skip
    assert said.strip() == f"acme-collect: webhook secret {listed[0]} removed; 1 left"
    assert secrets_of(onboarded) == [new_secret]
    [removed] = entries(onboarded, "webhook_secret_removed")
    assert removed["secret_ids"] == [listed[0]] and removed["reason"] == "rotated"
    assert removed["partner"] == "acme-collect"


async def test_a_removed_secret_no_longer_signs_callbacks(gw: Gateway, aiohttp_client: Any) -> None:
    _, old_id = await registry.add_webhook_secret(gw, "acme-collect", actor="t")
    await registry.add_webhook_secret(gw, "acme-collect", actor="t")
    old_secret, new_secret = secrets_of(gw.settings.base_dir)
    ref = (await placement.place(gw, CASE, "acme-collect", "collection", actor="t")).case_ref
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    assert await callback_status(client, ref, old_secret, first=True) == 202
    removed = await registry.remove_webhook_secrets(gw, "acme-collect", [old_id], reason="r", actor="t")
    assert removed == [old_id]
    assert await callback_status(client, ref, old_secret) == 401
    assert await callback_status(client, ref, new_secret) == 202


def test_an_unknown_secret_id_removes_nothing(onboarded: Path) -> None:
    ok("-c", onboarded, "partners", "webhook-secret", "acme-collect")
    before = secrets_of(onboarded)
    line = refused("-c", onboarded, "partners", "webhook-secret-remove", "acme-collect", "0123456789ab")
    assert "no webhook secret 0123456789ab" in line
    assert secrets_of(onboarded) == before and entries(onboarded, "webhook_secret_removed") == []


def test_offboarding_removes_the_partners_webhook_secrets(onboarded: Path) -> None:
    ok("-c", onboarded, "partners", "webhook-secret", "acme-collect")
    [secret_id] = ok("-c", onboarded, "partners", "webhook-secret-list", "acme-collect").split()
    said = ok("-c", onboarded, "partners", "offboard", "acme-collect", "--reason", "contract ended")
    assert "1 webhook secret(s) removed" in said
    assert not (onboarded / "keys/partners/acme-collect.whsec").exists()
    [removed] = entries(onboarded, "webhook_secret_removed")
    assert removed["secret_ids"] == [secret_id] and removed["reason"] == "offboarded: contract ended"


async def test_an_offboarded_partners_old_secret_no_longer_signs(gw: Gateway, aiohttp_client: Any) -> None:
    await registry.add_webhook_secret(gw, "acme-collect", actor="t")
    [secret] = secrets_of(gw.settings.base_dir)
    ref = (await placement.place(gw, CASE, "acme-collect", "collection", actor="t")).case_ref
    await recall.offboard(gw, "acme-collect", "contract ended", actor="t")
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    assert await callback_status(client, ref, secret) == 401


@pytest.mark.parametrize("command", ["webhook-secret-list", "webhook-secret-remove"])
def test_secret_commands_name_an_unknown_partner(onboarded: Path, command: str) -> None:
    args = ("--all", "--reason", "x") if command.endswith("remove") else ()
    assert "no partner 'nobody'" in refused("-c", onboarded, "partners", command, "nobody", *args)


async def entries_of(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall("SELECT leaf FROM audit_entries WHERE kind = ? ORDER BY idx", (kind,))
    return [json.loads(row["leaf"]) for row in rows]
