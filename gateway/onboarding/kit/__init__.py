"""The partner kit: what a new partner's engineers need, in one folder.

``write_kit`` gathers, for one partner: the bank's key set and where to fetch it live,
the JSON Schema of exactly the data the partner receives per purpose (``schema``), the
status-event schema, the callback URL and signing options, sample packages sealed to
test keys made for the kit and signed sample callbacks (``sample``), the code that opens
a package and signs a callback in five languages (``templates/code/``), and PARTNER.md
(``guide``). Nothing in it is secret: the private keys in ``test-only/`` were made for
the kit and open only its samples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import Conflict, InvalidInput
from gateway.onboarding import registry
from gateway.onboarding.kit import guide, sample
from gateway.onboarding.kit.schema import data_schema, shared_schemas, token_beside_schema, value_schema
from gateway.placement.minimize import tokens_beside
from gateway.placement.seal import CONTENT_ENC, KEY_ALG, usable_for_encryption
from schemas.partner import PartnerProfile

TEST_ONLY_NOTE = """\
TEST ONLY. The keys and the secret in this folder were made for this kit, to open the
sample packages and to check that your signing code gives the sample signatures. They
are not yours and not secret: never use them for real packages or real reports. Real
packages are encrypted to the key set you sent the bank, and the bank's gateway accepts
reports signed only with the secret it handed you or the Ed25519 key you published.
"""


def urls(gateway_url: str, partner_id: str) -> dict[str, str]:
    base = gateway_url.rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise InvalidInput(f"{gateway_url!r}: give the gateway's address as partners reach it, https://...")
    return {
        "jwks": f"{base}/.well-known/jwks.json",
        "callbacks": f"{base}/v1/partners/{partner_id}/callbacks",
    }


def facts(gw: Gateway, profile: PartnerProfile, links: dict[str, str]) -> dict[str, Any]:
    """kit.json: what the partner configures, and nothing secret."""
    assert profile.jwks is not None
    keys = gw.keys.partner_keyset(profile.jwks).as_dict()["keys"]
    limits = profile.limits
    return {
        "partner": profile.id,
        "bank": gw.settings.bank_id,
        "generated_at": isotime(gw.now()),
        "jwks_url": links["jwks"],
        "callback_url": links["callbacks"],
        "packages": {
            "endpoint": profile.endpoint,
            "adapter": profile.adapter,
            "encryption": {"alg": KEY_ALG, "enc": CONTENT_ENC, "cty": "JWT"},
            "signature": gw.settings.signing_alg,
            "your_keys": [
                {"kid": k.get("kid"), "crv": k.get("crv"), "usable": usable_for_encryption(k) or "yes"}
                for k in keys
                if k.get("crv") != "Ed25519"
            ],
            "ttl_days": profile.package_ttl_days,
            "purposes": sorted(profile.policy),
        },
        "callbacks": {
            "format": profile.callback_format,
            "v1": {"scheme": "HMAC-SHA256", "secrets_issued": len(gw.keys.webhook_secrets(profile.id))},
            "v1a": {"scheme": "Ed25519", "keys": [k.get("kid") for k in keys if k.get("crv") == "Ed25519"]},
            "tolerance_seconds": 300,
            "max_body_bytes": 1 << 20,
        },
        "limits": limits.model_dump(mode="json"),
    }


def _target(directory: Path) -> Path:
    if directory.exists() and any(directory.iterdir()):
        raise Conflict(f"{directory} is not empty; name a new folder for the kit")
    return directory


async def write_kit(gw: Gateway, partner_id: str, directory: Path, gateway_url: str) -> list[Path]:
    """Write the kit of ``partner_id`` into ``directory`` (new or empty); return its files."""
    profile = (await registry.get(gw, partner_id)).profile
    if profile.sealing != "jwe":
        what = "rendered messages" if profile.sealing == "tls-only" else "OpenPGP files"
        raise Conflict(
            f"partner {partner_id!r} is {profile.sealing}: it receives {what}, not JWE packages, and "
            "the kit is for partners that open JWE packages"
        )
    links = urls(gateway_url, partner_id)
    files = _files(gw, profile, links)
    target = _target(directory)
    try:
        for relative, text in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write the kit: {exc.filename or target}: {exc.strerror}") from None
    for relative in ("python", "node", "java", "go", "csharp"):
        shutil.copytree(guide.TEMPLATES / "code" / relative, target / "code" / relative, dirs_exist_ok=True)
    return sorted(target.rglob("*"))


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _files(gw: Gateway, profile: PartnerProfile, links: dict[str, str]) -> dict[str, str]:
    """Every file of the kit but the code, by path relative to the kit's folder."""
    keys = sample.TestKeys.generate()
    files = {"kit.json": _json(facts(gw, profile, links)), "bank-jwks.json": _json(gw.custody.public_jwks())}
    files.update({f"schemas/{name}": text for name, text in shared_schemas().items()})
    case_ref = ""
    for purpose, policy in profile.policy.items():
        schema = data_schema(profile.id, purpose, policy, gw.transforms)
        files[f"schemas/data-{purpose}.schema.json"] = _json(schema)
        package = sample.test_package(gw, profile, purpose)
        case_ref = case_ref or package.claims["case_ref"]
        files[f"samples/{purpose}-claims.json"] = _json(package.claims)
        for label, key in keys.encryption.items():
            files[f"samples/{purpose}-{label}.jwe"] = sample.sealed_to(package, key) + "\n"
    files["samples/callback.json"] = _json(sample.sample_callback(keys, case_ref, gw.now()))
    files["test-only/README.txt"] = TEST_ONLY_NOTE
    for label, key in keys.encryption.items():
        files[f"test-only/test-key-{label}.private.jwk.json"] = _json(key.as_dict(private=True))
    files["test-only/webhook-secret.txt"] = keys.webhook_secret + "\n"
    files["test-only/callback-key-ed25519.private.jwk.json"] = _json(keys.ed25519.as_dict(private=True))
    files["PARTNER.md"] = guide.render(_guide_values(gw, profile, links))
    return files


def _guide_values(gw: Gateway, profile: PartnerProfile, links: dict[str, str]) -> dict[str, str]:
    config = gw.adapters[profile.adapter].check_profile(profile)
    request, reference_note = guide.contract(profile, config)
    limits = profile.limits
    facts_ = facts(gw, profile, links)
    return {
        "bank_name": gw.settings.bank_name or gw.settings.bank_id,
        "bank_id": gw.settings.bank_id,
        "partner_name": profile.name,
        "partner_id": profile.id,
        "generated": facts_["generated_at"][:10],
        "jwks_url": links["jwks"],
        "callback_url": links["callbacks"],
        "endpoint": profile.endpoint,
        "mtls": "; it does for you: accept its client certificate"
        if getattr(config, "client_cert", None)
        else "; the bank's operators tell you if it will",
        "partner_keys": ", ".join(
            f"`{k['kid']}` ({k['crv']}{'' if k['usable'] == 'yes' else ': not usable, ' + k['usable']})"
            for k in facts_["packages"]["your_keys"]
        ) or "no key yet",
        "signing_state": _signing_state(facts_["callbacks"]),
        "contract": request,
        "reference_note": reference_note,
        "timeout": f"{limits.timeout:g}",
        "max_attempts": str(limits.max_attempts),
        "concurrency": str(limits.concurrency),
        "rate": f"{limits.rate_per_second:g}",
        "backoff_base": f"{limits.backoff_base:g}",
        "backoff_cap": f"{limits.backoff_cap:g}",
        "ttl": str(profile.package_ttl_days),
        "signing_alg": gw.settings.signing_alg,
        "purposes": "\n\n".join(_purpose_table(gw, profile, purpose) for purpose in profile.policy),
        "feed": guide.feed(profile, config),
    }


def _signing_state(callbacks: dict[str, Any]) -> str:
    issued, keys = callbacks["v1"]["secrets_issued"], callbacks["v1a"]["keys"]
    parts = [f"{issued} `whsec_` secret(s) issued to you" if issued else "no `whsec_` secret issued yet"]
    named = ", ".join(f"`{k}`" for k in keys)
    parts.append(f"Ed25519 key(s) {named}" if keys else "no Ed25519 key in your set")
    return "; ".join(parts) + "."


def _purpose_table(gw: Gateway, profile: PartnerProfile, purpose: str) -> str:
    rows = [
        f"**{purpose}** (`schemas/data-{purpose}.schema.json`)",
        "",
        "| field | transform | arrives as |",
        "| --- | --- | --- |",
    ]
    policy = profile.policy[purpose]  # type: ignore[index]
    besides = tokens_beside(policy)
    for path, rule in policy.fields.items():
        if rule.transform == "drop":
            continue
        shape = value_schema(path, rule, gw.transforms[rule.transform])
        rows.append(f"| `{path}` | {rule.transform} | {_shape(shape)} |")
        if (beside := besides.get(path)) is not None:
            token = _shape(token_beside_schema(path))
            rows.append(f"| `{beside}` | token of `{path}`: report it as `number_token` | {token} |")
    return "\n".join(rows)


def _shape(schema: dict[str, Any]) -> str:
    """One line on what a value looks like."""
    kind = schema.get("type", "any JSON value")
    if "enum" in schema:
        return f"{kind}, one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    detail = schema.get("format") or (f"`{schema['pattern']}`" if "pattern" in schema else "")
    return f"{kind} {detail}".strip().replace("|", "\\|")
