"""Onboarding partners: every refusal is one line naming the file and field, nothing stored."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_settings
from gateway.core import Gateway
from gateway.errors import Conflict, KeyStoreError, SealingError
from gateway.onboarding import registry
from gateway.placement import service as placement
from schemas.case import Case
from tests.helpers import EXAMPLES, copy_profile, invoke, workspace_sql, write_partner_keys
from tests.partners import rows


def partners(ws: Path) -> list[dict]:
    return json.loads(invoke("-c", ws, "partners", "list", "--json").output)


def audit_count(ws: Path) -> int:
    with workspace_sql(ws) as sql:
        return sql("SELECT COUNT(*) AS n FROM audit_entries")[0]["n"]


def test_sample_partners_onboard_and_list(onboarded: Path) -> None:
    rows = partners(onboarded)
    assert [(r["id"], r["kind"], r["status"]) for r in rows] == [
        ("acme-collect", "agency", "active"),
        ("notify-mail", "email", "active"),
        ("notify-sms", "sms", "active"),
        ("sz-arbitration", "arbitration", "active"),
    ]
    shown = json.loads(invoke("-c", onboarded, "partners", "show", "acme-collect").output)
    assert shown["profile"]["contract"]["number"] == "AC-2026-017"
    assert audit_count(onboarded) == 4


def test_adding_the_same_profile_again_changes_nothing(onboarded: Path) -> None:
    before = audit_count(onboarded)
    result = invoke("-c", onboarded, "partners", "add", EXAMPLES / "partners" / "acme-collect.toml")
    assert result.exit_code == 0 and "unchanged" in result.output
    assert audit_count(onboarded) == before


def test_changed_profile_needs_update_flag(onboarded: Path, tmp_path: Path) -> None:
    changed = copy_profile("acme-collect.toml", tmp_path, {"concurrency = 4": "concurrency = 2"})
    refused = invoke("-c", onboarded, "partners", "add", changed)
    assert refused.exit_code == 1 and "--update" in refused.output
    accepted = invoke("-c", onboarded, "partners", "add", "--update", changed)
    assert accepted.exit_code == 0 and "updated" in accepted.output
    shown = json.loads(invoke("-c", onboarded, "partners", "show", "acme-collect").output)
    assert shown["profile"]["limits"]["concurrency"] == 2


async def test_one_new_partner_added_by_several_instances_at_once(
    workspace: Path, partner_keys: dict[str, dict], tmp_path: Path
) -> None:
    """Several instances onboarding one new partner at the same moment (on PostgreSQL, in
    transactions that overlap): one adds it, the same profile elsewhere is "unchanged",
    a different one is a clean conflict, never a storage error."""
    same = EXAMPLES / "partners" / "acme-collect.toml"
    other = copy_profile("acme-collect.toml", tmp_path, {"concurrency = 4": "concurrency = 2"})
    gateways = [await Gateway.open(load_settings(workspace)) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(registry.add(gw, same, actor="test") for gw in gateways[:2]),
            registry.add(gateways[2], other, actor="test"),
            return_exceptions=True,
        )
        added = [p.id for p in await registry.list_all(gateways[0])]
        entries = await rows(gateways[0], "SELECT kind FROM audit_entries")
    finally:
        for gw in gateways:
            await gw.close()
    outcomes = sorted(r[1] if isinstance(r, tuple) else type(r).__name__ for r in results)
    # Whichever profile got in first: one "added", and the others judged against it.
    assert outcomes in (["Conflict", "added", "unchanged"], ["Conflict", "Conflict", "added"]), results
    for r in results:
        assert not isinstance(r, Exception) or isinstance(r, Conflict)
    assert added == ["acme-collect"]
    assert [e["kind"] for e in entries] == ["partner_onboarded"]


BAD_PROFILES = {
    "unknown adapter": (
        {'adapter = "agency_http"': 'adapter = "telex"'},
        "adapter",
        "unknown adapter 'telex'",
    ),
    "expired contract": (
        {"valid_from = 2026-01-01\nvalid_to = 2030-12-31": "valid_from = 2024-01-01\nvalid_to = 2025-12-31"},
        "contract.valid_to",
        "expired",
    ),
    "field not in Case": (
        {'"debtor.name" = "keep"': '"debtor.nickname" = "keep"'},
        "policy.collection.fields",
        "no field 'nickname'",
    ),
    "whole object": (
        {'"debtor.name" = "keep"': '"emergency_contacts[].phone" = "keep"\n"debtor" = "keep"'},
        "policy.collection.fields",
        "whole object",
    ),
    "purpose outside contract": (
        {'purposes = ["collection"]': 'purposes = ["reminder"]'},
        "policy.collection",
        "does not cover 'collection'",
    ),
    "transform misfit": (
        {'"loan.outstanding" = "keep"': '"loan.outstanding" = "year"'},
        "policy.collection.fields",
        "'year' does not fit a number field",
    ),
    "unknown key": (
        {"package_ttl_days = 30": "package_ttl_days = 30\ncolour = 1"},
        "colour",
        "Extra inputs",
    ),
    "tls-only agency": (
        {'sealing = "jwe"': 'sealing = "tls-only"'},
        "sealing",
        "only for sms and email",
    ),
    "plain http": (
        {'endpoint = "https://': 'endpoint = "http://'},
        "adapter_config",
        "must be https://",
    ),
    "status feed over plain http": (
        {
            'endpoint = "https://': 'endpoint = "http://',
            'packages_path = "/packages"': (
                'packages_path = "/packages"\nstatus_feed_path = "/status"\nallow_insecure_http = true'
            ),
        },
        "adapter_config",
        "status feed /status must be read over https://",
    ),
    "bad TOML": ({"[contract]": "[contract"}, "(syntax)", "not valid TOML"),
    "key set outside keys/partners": (
        {'jwks = "partners/acme-collect.jwks.json"': 'jwks = "../../../../etc/passwd"'},
        "jwks",
        "is not a file of",
    ),
    "key set at an absolute path": (
        {'jwks = "partners/acme-collect.jwks.json"': 'jwks = "/etc/hostname.json"'},
        "jwks",
        "is not a file of",
    ),
    "key set climbing out": (
        {'jwks = "partners/acme-collect.jwks.json"': 'jwks = "partners/../bank/jwks.json"'},
        "jwks",
        "is not a file of",
    ),
}


@pytest.mark.parametrize("case", BAD_PROFILES, ids=list(BAD_PROFILES))
def test_bad_profile_is_refused_with_file_and_field(
    case: str, workspace: Path, partner_keys: dict, tmp_path: Path
) -> None:
    replace, field, message = BAD_PROFILES[case]
    profile = copy_profile("acme-collect.toml", tmp_path, replace)
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert f"{profile}: {field}:" in result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert partners(workspace) == []
    assert audit_count(workspace) == 0


def test_plain_http_is_for_packages_only_never_for_a_status_feed(
    workspace: Path, partner_keys: dict, tmp_path: Path
) -> None:
    """allow_insecure_http lets JWE packages go over http:// in development; a status
    feed's events are not signed, so over http:// anyone on the path could write them."""
    arbitration = copy_profile(
        "shenzhen-arbitration.toml",
        tmp_path,
        {
            'endpoint = "https://': 'endpoint = "http://',
            "[adapter_config]": "[adapter_config]\nallow_insecure_http = true",
        },
    )
    refused = invoke("-c", workspace, "partners", "add", arbitration)
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    said = f"{arbitration}: adapter_config: status feed /filings/status must be read over https://"
    assert said in refused.output
    no_feed = arbitration.read_text().replace("[adapter_config]\n", '[adapter_config]\nstatus_path = ""\n')
    arbitration.write_text(no_feed)
    assert invoke("-c", workspace, "partners", "add", arbitration).exit_code == 0


@pytest.mark.parametrize(
    ("crv", "extra", "problem"),
    [
        ("P-256", {"use": "sig"}, "use is 'sig'"),
        ("P-256", {"alg": "RSA-OAEP"}, "alg is 'RSA-OAEP'"),
        ("Ed25519", {}, "cannot do ECDH-ES"),
    ],
)
def test_unusable_partner_key_is_refused(
    crv: str, extra: dict, problem: str, workspace: Path, tmp_path: Path
) -> None:
    if crv == "Ed25519":
        from joserfc.jwk import OKPKey

        key = OKPKey.generate_key("Ed25519").as_dict(private=False) | {"kid": "k1"}
    else:
        write_partner_keys(workspace / "keys", "acme-collect", crv)
        key = json.loads((workspace / "keys/partners/acme-collect.jwks.json").read_text())["keys"][0]
    (workspace / "keys/partners/acme-collect.jwks.json").write_text(json.dumps({"keys": [key | extra]}))
    profile = copy_profile("acme-collect.toml", tmp_path)
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1
    assert f"{profile}: jwks:" in result.output and problem in result.output
    assert partners(workspace) == []


#: X25519 public keys of small order: every shared secret with them is the same known
#: value (RFC 7748 section 6.1), so nothing sealed to them is secret.
SMALL_ORDER_X25519 = {
    "zero": bytes(32),
    "one": (1).to_bytes(32, "little"),
    "order 8": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
}


def small_order_keyset(point: bytes) -> str:
    x = base64.urlsafe_b64encode(point).rstrip(b"=").decode()
    return json.dumps({"keys": [{"kty": "OKP", "crv": "X25519", "x": x, "use": "enc", "kid": "weak"}]})


@pytest.mark.parametrize("point", SMALL_ORDER_X25519.values(), ids=list(SMALL_ORDER_X25519))
def test_a_small_order_x25519_key_is_refused_with_one_line(
    point: bytes, workspace: Path, tmp_path: Path
) -> None:
    (workspace / "keys/partners/acme-collect.jwks.json").write_text(small_order_keyset(point))
    profile = copy_profile("acme-collect.toml", tmp_path)
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"Error: {profile}: jwks: kid 'weak': a trial encryption failed"), line
    assert partners(workspace) == []


async def test_a_key_that_cannot_encrypt_stops_placements_with_a_sealing_error(
    gw: Gateway, onboarded: Path
) -> None:
    """A key set changed after onboarding: the placement fails as a sealing error (one
    line in the CLI), not as whatever the crypto library raised."""
    path = onboarded / "keys/partners/sz-arbitration.jwks.json"
    path.write_text(small_order_keyset(bytes(32)))
    case = Case.model_validate_json((EXAMPLES / "cases" / "case-1001.json").read_text())
    with pytest.raises(SealingError, match="cannot encrypt package to key weak"):
        await placement.place(gw, case, "sz-arbitration", "arbitration", actor="test")
    assert await placement.list_packages(gw) == []


def test_missing_jwks_file_is_refused(workspace: Path, tmp_path: Path) -> None:
    profile = copy_profile("acme-collect.toml", tmp_path)
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1 and "jwks:" in result.output
    # The bank cannot make a partner's key: the hint says who can.
    assert "acme-collect.jwks.json is missing: ask the partner for its public key set" in result.output


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda key: {"keys": [key | {"d": "c2VjcmV0"}]}, "holds private key material (d)"),
        (lambda key: {"keys": [{k: v for k, v in key.items() if k != "kid"}]}, "has no kid"),
        (lambda key: key, 'not a JWKS: expected an object {"keys": [...]}'),
        (lambda key: {"keys": key}, 'not a JWKS: expected an object {"keys": [...]}'),
        (lambda key: {"keys": ["x"]}, "key 1 is not a JSON object"),
    ],
)
def test_a_partner_key_set_not_published_as_one_is_refused(
    change: Any, problem: str, workspace: Path, tmp_path: Path
) -> None:
    write_partner_keys(workspace / "keys", "acme-collect", "P-256")
    path = workspace / "keys/partners/acme-collect.jwks.json"
    path.write_text(json.dumps(change(json.loads(path.read_text())["keys"][0])))
    profile = copy_profile("acme-collect.toml", tmp_path)
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1
    assert f"{profile}: jwks:" in result.output and problem in result.output
    assert partners(workspace) == []


async def test_a_private_key_put_in_an_onboarded_partners_key_set_stops_its_packages(
    gw: Gateway, onboarded: Path
) -> None:
    path = onboarded / "keys/partners/acme-collect.jwks.json"
    private = write_partner_keys(onboarded / "keys", "acme-collect", "P-256")
    path.write_text(json.dumps({"keys": [private]}))
    case = Case.model_validate_json((EXAMPLES / "cases" / "case-1001.json").read_text())
    with pytest.raises(KeyStoreError, match="holds private key material"):
        await placement.place(gw, case, "acme-collect", "collection", actor="test")


def test_suspend_and_reinstate(onboarded: Path) -> None:
    assert (
        invoke("-c", onboarded, "partners", "suspend", "acme-collect", "--reason", "audit finding").exit_code
        == 0
    )
    shown = json.loads(invoke("-c", onboarded, "partners", "show", "acme-collect").output)
    assert (shown["status"], shown["status_reason"]) == ("suspended", "audit finding")
    again = invoke("-c", onboarded, "partners", "suspend", "acme-collect", "--reason", "x")
    assert again.exit_code == 1 and "already suspended" in again.output
    assert invoke("-c", onboarded, "partners", "reinstate", "acme-collect").exit_code == 0
    unknown = invoke("-c", onboarded, "partners", "suspend", "nobody", "--reason", "x")
    assert unknown.exit_code == 1 and "no partner 'nobody'" in unknown.output


def test_sms_template_with_threats_is_refused(workspace: Path, tmp_path: Path) -> None:
    profile = copy_profile(
        "notify-sms.toml", tmp_path, {"Please repay or call 95588.": "Pay now or you will go to 坐 牢."}
    )
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1
    assert f"{profile}: adapter_config.templates.reminder:" in result.output
    assert partners(workspace) == []


def test_an_email_subject_with_banned_wording_is_refused(workspace: Path, tmp_path: Path) -> None:
    """Every text the adapter sends is checked, the subject line too (it used to pass
    onboarding and then fail every message at claim)."""
    profile = copy_profile(
        "notify-mail.toml", tmp_path, {'subject = "Payment reminder"': 'subject = "欠款不还 公安 上门"'}
    )
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1
    assert f"{profile}: adapter_config.templates.reminder:" in result.output and "公安" in result.output
    assert partners(workspace) == []


def test_an_offboarded_partner_comes_back_only_with_a_renewed_profile(
    onboarded: Path, tmp_path: Path
) -> None:
    ws = onboarded

    def place(name: str = "case-1001.json") -> Any:
        case = EXAMPLES / "cases" / name
        return invoke("-c", ws, "place", case, "--partner", "acme-collect", "--purpose", "collection")

    assert place().exit_code == 0
    gone = invoke("-c", ws, "partners", "offboard", "acme-collect", "--reason", "contract ended")
    assert gone.exit_code == 0, gone.output
    hint = "onboard it again: `gateway partners add --update PROFILE` with its renewed profile"
    refused = place()
    assert refused.exit_code == 1 and hint in refused.output
    reinstate = invoke("-c", ws, "partners", "reinstate", "acme-collect")
    assert reinstate.exit_code == 1 and hint in reinstate.output
    same = invoke("-c", ws, "partners", "add", "--update", EXAMPLES / "partners" / "acme-collect.toml")
    assert same.exit_code == 1 and "offboarded under this very profile" in same.output

    renewal = {'number = "AC-2026-017"': 'number = "AC-2027-003"'}
    renewed = copy_profile("acme-collect.toml", tmp_path, renewal)
    before = audit_count(ws)
    back = invoke("-c", ws, "partners", "add", "--update", renewed)
    assert back.exit_code == 0 and back.output.startswith("acme-collect: onboarded again"), back.output
    [row] = [p for p in partners(ws) if p["id"] == "acme-collect"]
    assert row["status"] == "active"
    with workspace_sql(ws) as sql:
        [entry] = sql("SELECT kind FROM audit_entries WHERE idx >= ?", (before,))
    assert entry["kind"] == "partner_onboarded"
    # Back, it gets new cases; a recalled one only once it attests deleting it.
    assert place("case-1002.json").exit_code == 0
    refused_again = place()
    assert refused_again.exit_code == 1 and "deletion is not attested yet" in refused_again.output


def test_a_profile_stored_before_the_key_file_rule_still_loads(onboarded: Path) -> None:
    """Profiles onboarded when `jwks` could point anywhere keep loading; only their use
    of the key file is refused, with the rule named."""
    with workspace_sql(onboarded) as sql:
        [row] = sql("SELECT profile FROM partners WHERE id = 'acme-collect'")
        profile = json.loads(row["profile"]) | {"jwks": "../outside/acme.jwks.json"}
        sql("UPDATE partners SET profile = ? WHERE id = 'acme-collect'", (json.dumps(profile),))
    listed = invoke("-c", onboarded, "partners", "list")
    assert listed.exit_code == 0 and "acme-collect" in listed.output
    case = EXAMPLES / "cases" / "case-1001.json"
    placed = invoke("-c", onboarded, "place", case, "--partner", "acme-collect", "--purpose", "collection")
    assert placed.exit_code == 1
    assert "'../outside/acme.jwks.json' is not a file of" in placed.output
