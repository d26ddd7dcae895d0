"""`gateway partners kit`: what a new partner's engineers receive, checked the way they
would use it: the samples open with the kit's own code, their data fits the kit's
schemas, and the kit's signing code in each language gives the sample signatures."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import jsonschema
import pytest
from jwcrypto import jwe, jwk

from gateway.onboarding.kit import guide
from gateway.onboarding.kit.sample import synthetic_case
from gateway.onboarding.kit.schema import data_schema
from gateway.onboarding.pseudonyms import Pseudonymizer
from gateway.placement.minimize import minimize
from gateway.placement.transforms import BUILTIN, Transform
from schemas.partner import FieldRule, PurposePolicy
from tests.helpers import invoke
from tests.toolchains import debian_tool

URL = "https://gateway.bank.example"
PARTNER = "sz-arbitration"


@pytest.fixture
def kit(onboarded: Path, tmp_path: Path) -> Path:
    out = tmp_path / "kit"
    result = invoke("-c", onboarded, "partners", "kit", PARTNER, out, "--gateway-url", URL + "/")
    assert result.exit_code == 0, result.output
    assert "test-only/ holds keys made for the kit" in result.output
    return out


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_the_kit_says_where_and_how(kit: Path, onboarded: Path) -> None:
    facts = load(kit / "kit.json")
    assert facts["jwks_url"] == f"{URL}/.well-known/jwks.json"
    assert facts["callback_url"] == f"{URL}/v1/partners/{PARTNER}/callbacks"
    assert facts["packages"]["encryption"] == {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "cty": "JWT"}
    assert facts["packages"]["your_keys"][0]["crv"] == "X25519"
    assert load(kit / "bank-jwks.json") == load(onboarded / "keys" / "bank" / "jwks.json")
    text = (kit / "PARTNER.md").read_text()
    for needed in (facts["callback_url"], facts["jwks_url"], "Idempotency-Key", "/filings", "Retry-After",
                   "mTLS", "?since=", "Rotating your keys", "`debtor.id_number` | keep",
                   "`debtor.address.line_token` | token of `debtor.address.line`: report it as "
                   "`number_token`"):
        assert needed in text, needed
    for path in guide.SNIPPETS.values():
        assert (kit / "code" / path).read_text().rstrip() in text
        assert (kit / "code" / path).read_text() == (guide.TEMPLATES / "code" / path).read_text()
    assert "TEST ONLY" in (kit / "test-only" / "README.txt").read_text()


def test_sample_data_fits_the_schemas(kit: Path) -> None:
    claims_schema = load(kit / "schemas" / "package-claims.schema.json")
    for claims_file in (kit / "samples").glob("*-claims.json"):
        purpose = claims_file.name.removesuffix("-claims.json")
        claims = load(claims_file)
        assert claims["test"] is True and claims["aud"] == PARTNER and claims["purpose"] == purpose
        jsonschema.Draft202012Validator(load(kit / "schemas" / f"data-{purpose}.schema.json")).validate(
            claims["data"]
        )
        jsonschema.Draft202012Validator(claims_schema).validate(claims)
    assert load(kit / "schemas" / "status-event.schema.json")["$id"] == "status-event.schema.json"


def test_python_code_opens_both_samples(kit: Path) -> None:
    facts = load(kit / "kit.json")
    for curve in ("p256", "x25519"):
        opened = subprocess.run(
            [sys.executable, kit / "code/python/open_package.py", kit / f"samples/arbitration-{curve}.jwe",
             kit / f"test-only/test-key-{curve}.private.jwk.json", kit / "bank-jwks.json",
             facts["bank"], facts["partner"]],
            capture_output=True, text=True, check=True,
        )
        assert json.loads(opened.stdout) == load(kit / "samples/arbitration-claims.json")
    wrong_audience = subprocess.run(
        [sys.executable, kit / "code/python/open_package.py", kit / "samples/arbitration-p256.jwe",
         kit / "test-only/test-key-p256.private.jwk.json", kit / "bank-jwks.json", facts["bank"], "someone"],
        capture_output=True, text=True,
    )
    assert wrong_audience.returncode != 0 and "aud" in wrong_audience.stderr


def test_samples_open_only_with_the_kits_test_keys(kit: Path, partner_keys: dict[str, dict]) -> None:
    sample = (kit / "samples/arbitration-x25519.jwe").read_text().strip()
    test_key = load(kit / "test-only/test-key-x25519.private.jwk.json")
    envelope = jwe.JWE()
    envelope.deserialize(sample)
    assert envelope.jose_header["kid"] == test_key["kid"] != partner_keys[PARTNER]["kid"]
    with pytest.raises(jwe.InvalidJWEData):
        jwe.JWE().deserialize(sample, key=jwk.JWK(**partner_keys[PARTNER]))


def vector(kit: Path) -> dict[str, Any]:
    return load(kit / "samples/callback.json")


def test_python_and_java_signers_give_the_sample_signatures(kit: Path, tmp_path: Path) -> None:
    sample = vector(kit)
    signer = module(kit / "code/python/sign_callback.py")
    secret = (kit / "test-only/webhook-secret.txt").read_text().strip()
    ed_key = load(kit / "test-only/callback-key-ed25519.private.jwk.json")
    stamp = int(sample["webhook-timestamp"])
    assert signer.sign_v1(secret, sample["webhook-id"], stamp, sample["body"]) == sample["v1"]
    assert signer.sign_v1a(ed_key, sample["webhook-id"], stamp, sample["body"]) == sample["v1a"]
    body = tmp_path / "body.json"
    body.write_bytes(sample["body"].encode())
    java = debian_tool("java", "default-jdk-headless")
    credentials = {"v1": "webhook-secret.txt", "v1a": "callback-key-ed25519.private.jwk.json"}
    for scheme, credential in credentials.items():
        printed = subprocess.run(
            [java, kit / "code/java/SignCallback.java", scheme, kit / "test-only" / credential, body,
             sample["webhook-id"], sample["webhook-timestamp"]],
            capture_output=True, text=True, check=True,
        ).stdout
        assert f"webhook-signature: {sample[scheme]}\n" in printed


def test_go_and_csharp_code_is_well_formed(kit: Path) -> None:
    """What can be checked here without the JOSE libraries (go-jose, jose-jwt and
    BouncyCastle are on no registry this machine reaches): the Go code's syntax and
    layout, the standard-library Go signer compiled and vetted, the C# code's syntax."""
    gofmt = debian_tool("gofmt", "golang-go")
    go = debian_tool("go", "golang-go")
    for source in (kit / "code/go").glob("*.go"):
        unformatted = subprocess.run([gofmt, "-l", "-e", source], capture_output=True, text=True, check=True)
        assert unformatted.stdout == "", unformatted.stdout
    subprocess.run([go, "vet", "sign_callback.go"], cwd=kit / "code/go", check=True,
                   env={"HOME": str(kit), "GOCACHE": str(kit / ".gocache"), "GOFLAGS": "-mod=mod",
                        "PATH": "/usr/bin:/bin"})
    mcs = debian_tool("mcs", "mono-mcs")
    for source in (kit / "code/csharp").glob("*.cs"):
        subprocess.run([mcs, "--parse", source], check=True, capture_output=True)


def test_kits_are_only_for_partners_that_open_packages(onboarded: Path, tmp_path: Path) -> None:
    sms = invoke("-c", onboarded, "partners", "kit", "notify-sms", tmp_path / "sms", "--gateway-url", URL)
    assert sms.exit_code == 1 and "tls-only" in sms.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    full = invoke("-c", onboarded, "partners", "kit", PARTNER, tmp_path / "full", "--gateway-url", URL)
    assert full.exit_code == 1 and "is not empty" in full.output
    bad = invoke("-c", onboarded, "partners", "kit", PARTNER, tmp_path / "k", "--gateway-url", "gw.example")
    assert bad.exit_code == 1 and "https://" in bad.output


class Initials(Transform):
    """A plugin's transform that says what it gives."""

    name = "initials"
    kinds: ClassVar[frozenset[str]] = frozenset({"text"})

    def apply(self, value: Any, rule: FieldRule, tokens: Pseudonymizer) -> Any:
        return "".join(word[0] for word in str(value).split())

    def json_schema(self, rule: FieldRule) -> dict[str, Any]:
        return {"type": "string", "maxLength": 10}


class Opaque(Initials):
    """One that does not: any JSON value."""

    name = "opaque"

    def json_schema(self, rule: FieldRule) -> dict[str, Any]:
        return Transform.json_schema(self, rule)


POLICY = PurposePolicy.model_validate({
    "legal_basis": "test",
    "fields": {
        "debtor.name": "initials",
        "debtor.email": "opaque",
        "debtor.id_type": "keep",
        "debtor.id_number": {"transform": "mask", "first": 2, "last": 3},
        "debtor.phones[].number": "token",
        "debtor.phones[].label": "keep",
        "debtor.address.postcode": {"transform": "mask", "first": 1, "last": 9},
        "emergency_contacts[].name": "drop",
        "loan.outstanding": {"transform": "bucket", "edges": [1000, 10000, 50000]},
        "loan.principal": "keep",
        "loan.overdue_days": "keep",
        "loan.overdue_since": "year",
        "loan.last_payment_date": "keep",
        "evidence[].sha256": "keep",
    },
})


def test_the_data_schema_follows_each_transform() -> None:
    transforms = {**BUILTIN, "initials": Initials(), "opaque": Opaque()}
    schema = data_schema("p", "collection", POLICY, transforms)
    data = minimize(synthetic_case(), POLICY, Pseudonymizer(b"k" * 32), transforms)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    validator.validate(data)
    debtor, loan = schema["properties"]["debtor"]["properties"], schema["properties"]["loan"]["properties"]
    assert debtor["name"] == {"type": "string", "maxLength": 10}
    assert debtor["email"] == {}
    assert debtor["id_type"]["enum"] == ["resident_id", "passport", "ssn", "other"]
    assert debtor["phones"]["items"]["properties"]["number"]["pattern"] == "^tok_[0-9a-f]{32}$"
    assert "number_token" not in debtor["phones"]["items"]["properties"]  # the number is its token
    assert debtor["email_token"]["pattern"] == "^tok_[0-9a-f]{32}$"  # the email left otherwise
    email = synthetic_case().debtor.email or ""
    assert data["debtor"]["email_token"] == Pseudonymizer(b"k" * 32).token(email)
    assert loan["outstanding"]["enum"] == ["<1000", "1000..<10000", "10000..<50000", ">=50000"]
    assert loan["overdue_since"]["type"] == loan["overdue_days"]["type"] == "integer"
    assert loan["principal"]["type"] == "string" and loan["last_payment_date"]["format"] == "date"
    assert "emergency_contacts" not in schema["properties"]
    assert "address" not in schema["properties"]["debtor"]["required"]  # the case may have none
    assert set(schema["properties"]["loan"]["required"]) == {"outstanding", "principal", "overdue_days",
                                                             "overdue_since"}
    for wrong in ({"loan": {**data["loan"], "outstanding": "12345.67"}},
                  {"debtor": {**data["debtor"], "id_number": "TE0000000000000"}},
                  {"loan": {**data["loan"], "principal": "1E+3"}},
                  {**data, "extra": 1}):
        assert not validator.is_valid({**data, **wrong}), wrong


def test_masks_and_decimals_as_the_schema_says() -> None:
    mask = BUILTIN["mask"]
    for first, last, text in ((0, 4, "110101199003071234"), (3, 4, "abc"), (2, 2, ""), (1, 1, "ab c\nd")):
        rule = FieldRule(transform="mask", first=first, last=last)
        jsonschema.validate(mask.apply(text, rule, Pseudonymizer(b"k" * 32)), mask.json_schema(rule))
    keep = BUILTIN["keep"]
    assert keep.apply(Decimal("1E+3"), FieldRule(transform="keep"), Pseudonymizer(b"k" * 32)) == "1000"


def test_the_kit_pins_what_the_interop_tests_run() -> None:
    """The Node packages the kit tells partners to install are those the tests run."""
    kit_pins = load(guide.TEMPLATES / "code/node/package.json")["dependencies"]
    test_pins = load(Path(__file__).parent / "node/package.json")["dependencies"]
    assert kit_pins.items() <= test_pins.items()
