"""Packages open with an independent JOSE library (jwcrypto), using only what a partner
has: its own private key and the bank's published JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jwcrypto import jwe as jw_jwe
from jwcrypto import jwk as jw_jwk
from jwcrypto import jwt as jw_jwt

from gateway.clock import sortable_id
from gateway.core import Gateway
from gateway.errors import PolicyViolation, StorageError
from gateway.filecache import SETTLE_SECONDS
from gateway.onboarding import registry
from gateway.onboarding.jwk import generate_encryption_key
from gateway.placement import service as placement
from gateway.placement.seal import choose_encryption_key, encrypt, keyset_problem
from schemas.case import Case
from schemas.package import PackageClaims
from tests.helpers import fail_audit_inserts, invoke, sample_case, stored_package, write_partner_keys

CASE = Case.model_validate_json(sample_case().read_text())


def open_package(sealed: str, partner_private: dict, bank_jwks: dict) -> tuple[dict, dict, dict]:
    """What a partner's engineer writes: decrypt, then verify the bank's signature."""
    envelope = jw_jwe.JWE()
    envelope.deserialize(sealed, key=jw_jwk.JWK(**partner_private))
    inner = envelope.payload.decode()
    token = jw_jwt.JWT(
        jwt=inner, key=jw_jwk.JWKSet.from_json(json.dumps(bank_jwks)), expected_type="JWS"
    )
    return (
        json.loads(envelope.objects["protected"]),
        json.loads(token.token.objects["protected"]),
        json.loads(token.claims),
    )


async def sealed_of(gw: Gateway, package_id: str) -> str:
    return str((await stored_package(gw, package_id))["sealed"])


@pytest.mark.parametrize(
    ("partner", "purpose", "crv"),
    [("acme-collect", "collection", "P-256"), ("sz-arbitration", "arbitration", "X25519")],
)
async def test_partner_opens_package_with_jwcrypto(
    gw: Gateway, partner_keys: dict, partner: str, purpose: str, crv: str
) -> None:
    placed = await placement.place(gw, CASE, partner, purpose, actor="test")
    outer, inner, claims = open_package(
        await sealed_of(gw, placed.package_id), partner_keys[partner], gw.keys.public_jwks()
    )
    assert outer["alg"] == "ECDH-ES+A256KW" and outer["enc"] == "A256GCM" and outer["cty"] == "JWT"
    assert outer["kid"] == partner_keys[partner]["kid"] and outer["epk"]["crv"] == crv
    assert inner["alg"] == "ES256" and inner["kid"] == gw.keys.signing_key().kid
    assert (
        claims["iss"] == "example-bank"
        and claims["aud"] == partner
        and claims["jti"] == placed.package_id
    )
    assert claims["purpose"] == purpose and claims["schema"] == "case-package/1"
    assert claims["exp"] > claims["iat"]
    assert claims["data"] == placed.claims["data"]
    listed = (await registry.get(gw, partner)).profile.policy[purpose].fields
    assert {f"loan.{name}" for name in claims["data"]["loan"]} == {
        p for p in listed if p.startswith("loan.")
    }


@pytest.mark.parametrize("crv", ["P-256", "P-384", "P-521", "X25519"])
async def test_every_partner_curve_opens_with_jwcrypto(gw: Gateway, crv: str) -> None:
    """The JWE is built on cryptography's primitives (ECDH-ES, Concat KDF, A256KW,
    A256GCM): for every curve a partner may publish, an independent library opens it,
    the epk has the curve's full-size coordinates, and the claims are the schema's."""
    partner = generate_encryption_key(crv)
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    package = await stored_package(gw, placed.package_id)
    recipient = choose_encryption_key({"keys": [partner.as_dict(private=False)]})
    outer, inner, claims = open_package(
        encrypt(package["signed"], recipient), partner.as_dict(private=True), gw.keys.public_jwks()
    )
    assert outer["kid"] == partner.kid and outer["epk"]["crv"] == crv and outer["cty"] == "JWT"
    size = {"P-256": 32, "P-384": 48, "P-521": 66, "X25519": 32}[crv]
    coordinates = ["x"] if crv == "X25519" else ["x", "y"]
    assert all(len(base64url_bytes(outer["epk"][c])) == size for c in coordinates)
    assert inner == {"alg": "ES256", "kid": gw.keys.signing_key().kid, "typ": "JWT"}
    assert claims == placed.claims
    as_schema = PackageClaims.model_validate(claims).model_dump(mode="json", by_alias=True, exclude={"test"})
    assert as_schema == claims


def test_a_small_order_x25519_key_is_refused_before_any_package() -> None:
    """A key set whose X25519 key is of small order (all zeros) passes every field check;
    only the key agreement refuses it, and onboarding says so."""
    bad = {**generate_encryption_key("X25519").as_dict(private=False), "x": "A" * 43}
    problem = keyset_problem([bad])
    assert problem is not None and "trial encryption failed" in problem


def base64url_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_package_still_verifies_after_bank_key_rotation(
    gw: Gateway, partner_keys: dict, onboarded: Path
) -> None:
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    gw.keys.rotate("EdDSA")
    jwks = json.loads((onboarded / "keys/bank/jwks.json").read_text())
    assert len(jwks["keys"]) == 2
    _, inner, claims = open_package(
        await sealed_of(gw, placed.package_id), partner_keys["acme-collect"], jwks
    )
    assert claims["jti"] == placed.package_id
    after = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    _, inner2, _ = open_package(
        await sealed_of(gw, after.package_id), partner_keys["acme-collect"], jwks
    )
    assert inner2["alg"] == "EdDSA" and inner2["kid"] != inner["kid"]


async def test_partner_key_rotation_uses_first_listed_key(gw: Gateway, onboarded: Path) -> None:
    old = json.loads((onboarded / "keys/partners/acme-collect.jwks.json").read_text())["keys"]
    new_private = write_partner_keys(onboarded / "keys", "acme-collect", "P-256")
    path = onboarded / "keys/partners/acme-collect.jwks.json"
    path.write_text(json.dumps({"keys": json.loads(path.read_text())["keys"] + old}))
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    outer, _, _ = open_package(
        await sealed_of(gw, placed.package_id), new_private, gw.keys.public_jwks()
    )
    assert outer["kid"] == new_private["kid"]


async def test_tls_only_package_is_signed_not_encrypted(gw: Gateway) -> None:
    placed = await placement.place(gw, CASE, "notify-sms", "reminder", actor="test")
    token = jw_jwt.JWT(
        jwt=await sealed_of(gw, placed.package_id),
        key=jw_jwk.JWKSet.from_json(json.dumps(gw.keys.public_jwks())),
    )
    tokens = gw.keys.pseudonymizer("partner:notify-sms")
    assert json.loads(token.claims)["data"] == {
        "debtor": {
            "phones": [
                {"number": n, "number_token": tokens.token(n)} for n in ("13812341999", "01065551234")
            ],
            "timezone": "Asia/Shanghai",
        },
        "loan": {
            "outstanding": "52310.45",
            "currency": "CNY",
            "account_number": "************2233",
        },
    }


async def test_refusals_store_nothing(gw: Gateway, onboarded: Path) -> None:
    with pytest.raises(PolicyViolation, match="does not cover 'reminder'"):
        await placement.place(gw, CASE, "acme-collect", "reminder", actor="test")
    await registry.set_status(gw, "acme-collect", "suspended", reason="review", actor="test")
    with pytest.raises(PolicyViolation, match="suspended"):
        await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    assert await placement.list_packages(gw) == []


async def test_package_and_audit_entry_are_one_transaction(gw: Gateway, onboarded: Path) -> None:
    async with gw.db.transaction() as tx:
        await fail_audit_inserts(tx)
    with pytest.raises(StorageError, match="disk full"):
        await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    assert await placement.list_packages(gw) == []


async def test_disclosure_audit_entry_holds_no_personal_data(gw: Gateway) -> None:
    placed = await placement.place(gw, CASE, "sz-arbitration", "arbitration", actor="test")
    async with gw.db.transaction() as tx:
        leaf = await tx.fetchval("SELECT leaf FROM audit_entries WHERE kind = 'disclosure'")
    entry = json.loads(leaf)
    assert entry["package_id"] == placed.package_id and entry["purpose"] == "arbitration"
    assert {"path": "debtor.id_number", "transform": "keep"} in entry["fields"]
    for value in (
        "张伟",
        "110101199003071234",
        "13812341999",
        "6222020200112233",
        "C-2026-1001",
        "建国路",
    ):
        assert value not in leaf


@pytest.mark.parametrize(
    ("partner", "purpose"), [("acme-collect", "collection"), ("notify-sms", "reminder")]
)
async def test_disclosure_digest_cannot_confirm_whom_it_was_about(
    gw: Gateway, partner: str, purpose: str
) -> None:
    """Whoever holds candidate records and the log must not be able to confirm whom a
    disclosure was about: the entry digests the package as sealed (random per package),
    which the partner's copy matches, not the minimized data."""
    placed = await placement.place(gw, CASE, partner, purpose, actor="test")
    async with gw.db.transaction() as tx:
        leaf = await tx.fetchval("SELECT leaf FROM audit_entries WHERE kind = 'disclosure'")
    data = placed.claims["data"]
    guesses = {
        hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
        hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest(),
        hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest(),
    }
    assert not any(guess in leaf for guess in guesses)
    entry = json.loads(leaf)
    assert "payload_digest" not in entry and entry["v"] == 2
    sealed = await sealed_of(gw, placed.package_id)
    assert entry["package_digest"] == "sha256:" + hashlib.sha256(sealed.encode("ascii")).hexdigest()
    # The same case placed again digests differently: nothing stable to match.
    again = await placement.place(gw, CASE, partner, purpose, actor="test")
    assert again.claims["data"] == data
    async with gw.db.transaction() as tx:
        digests = [
            json.loads(row["leaf"])["package_digest"]
            for row in await tx.fetchall("SELECT leaf FROM audit_entries WHERE kind = 'disclosure'")
        ]
    assert len(set(digests)) == 2


def test_cli_place_and_show(onboarded: Path) -> None:
    result = invoke(
        "-c",
        onboarded,
        "place",
        sample_case(),
        "--partner",
        "acme-collect",
        "--purpose",
        "collection",
    )
    assert result.exit_code == 0
    package_id = result.output.strip()
    shown = invoke("-c", onboarded, "package", "show", package_id)
    assert "debtor.name" in shown.output and "张伟" in shown.output
    assert "138****" not in shown.output and "13812341999" in shown.output
    assert "李娜" not in shown.output and "emergency" not in shown.output
    as_json = json.loads(invoke("-c", onboarded, "package", "show", package_id, "--json").output)
    assert as_json["claims"]["jti"] == package_id
    waiting = invoke("-c", onboarded, "package", "attempts", package_id)
    assert (waiting.exit_code, waiting.output) == (0, f"no attempts for {package_id} yet\n")
    for command in ("show", "attempts"):
        unknown = invoke("-c", onboarded, "package", command, "pkg_nope")
        assert unknown.exit_code == 1, command
        assert unknown.output == "Error: no package 'pkg_nope' (see `gateway package list`)\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "Invalid JSON"),
        ('{"case_id": "x"}', "debtor: Field required"),
        (None, "No such file"),
    ],
)
def test_cli_bad_case_file_is_one_line(
    onboarded: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "case.json"
    if content is not None:
        path.write_text(content)
    result = invoke(
        "-c", onboarded, "place", path, "--partner", "acme-collect", "--purpose", "collection"
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert str(path) in result.output and message in result.output


def test_a_bad_value_is_named_not_quoted(onboarded: Path, tmp_path: Path) -> None:
    """A mixed-up column can put a name or an ID number in any field: errors name the
    field and the rule, never the value."""
    case = json.loads(sample_case().read_text())
    misplaced = "张伟 110101199003071234"
    case["debtor"]["timezone"] = misplaced
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case, ensure_ascii=False))
    result = invoke("-c", onboarded, "place", path, "--partner", "acme-collect", "--purpose", "collection")
    assert result.exit_code == 1
    assert "debtor.timezone: not a known IANA time zone name, e.g. Asia/Shanghai" in result.output
    assert "张伟" not in result.output and "110101199003071234" not in result.output


async def test_settled_keys_are_reused_and_a_changed_key_file_is_used_at_once(
    gw: Gateway, onboarded: Path, partner_keys: dict
) -> None:
    """Key files older than the settle time are read once (every package would
    otherwise re-import the partner's JWK); replacing one takes effect on the next
    package, whether the partner's key set is edited in place or the bank rotates."""
    await asyncio.sleep(SETTLE_SECONDS + 0.2)
    relative = "partners/acme-collect.jwks.json"
    first = gw.keys.from_partner_keyset(relative, "encryption key", choose_encryption_key)
    assert gw.keys.from_partner_keyset(relative, "encryption key", choose_encryption_key) is first
    assert gw.keys.signing_key() is gw.keys.signing_key()
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    outer, inner, _ = open_package(
        await sealed_of(gw, placed.package_id), partner_keys["acme-collect"], gw.keys.public_jwks()
    )
    assert outer["kid"] == first.kid == partner_keys["acme-collect"]["kid"]

    # The partner publishes a new key in place (same file); the bank rotates its own.
    new_private = write_partner_keys(onboarded / "keys", "acme-collect", "P-256")
    old_signing = inner["kid"]
    gw.keys.rotate()
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    outer, inner, _ = open_package(
        await sealed_of(gw, placed.package_id), new_private, gw.keys.public_jwks()
    )
    assert outer["kid"] == new_private["kid"] != first.kid
    assert inner["kid"] == gw.keys.signing_key().kid != old_signing


def test_package_ids_sort_by_when_they_were_made_and_never_repeat() -> None:
    """``pkg_`` and 32 hex digits, as before; later ids sort later (a batch's packages go
    at the end of the indexes keyed by id), and ids made in the same millisecond differ."""
    start = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    later = [sortable_id("pkg_", start + timedelta(milliseconds=ms)) for ms in (0, 1, 2, 1000, 86_400_000)]
    assert later == sorted(later) and len(set(later)) == len(later)
    same = {sortable_id("pkg_", start) for _ in range(10_000)}
    assert len(same) == 10_000
    assert all(re.fullmatch(r"pkg_[0-9a-f]{32}", package_id) for package_id in same | set(later))


async def test_packages_and_data_keys_made_later_have_ids_that_sort_later(gw: Gateway) -> None:
    async def key_ids() -> set[str]:
        async with gw.db.transaction() as tx:
            return {row["id"] for row in await tx.fetchall("SELECT id FROM data_keys")}

    first = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    before = await key_ids()
    await asyncio.sleep(0.002)
    other = Case.model_validate_json(sample_case("case-1002.json").read_text())
    assert other.debtor != CASE.debtor  # another debtor: a data key of its own is made
    second = await placement.place(gw, other, "acme-collect", "collection", actor="test")
    made = await key_ids() - before
    assert first.package_id < second.package_id
    assert made and all(re.fullmatch(r"dk_[0-9a-f]{32}", key) and key > max(before) for key in made)
