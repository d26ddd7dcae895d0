"""JSON Web Keys: the bank's signing keys and partners' encryption keys made and read,
and a partner's published key set checked (public keys only, each with a kid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, OKPKey

from gateway.errors import KeyStoreError

JWK = ECKey | OKPKey
SIGNING_CURVES = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}
#: Key types a partner may publish for ECDH-ES key agreement.
ENCRYPTION_CURVES = {("EC", "P-256"), ("EC", "P-384"), ("EC", "P-521"), ("OKP", "X25519")}


def generate_signing_key(alg: str) -> JWK:
    kty, crv = SIGNING_CURVES[alg]
    key: JWK = (
        ECKey.generate_key(crv, private=True) if kty == "EC" else OKPKey.generate_key(crv, private=True)  # type: ignore[arg-type]
    )
    key.ensure_kid()
    return import_jwk({**key.as_dict(private=True), "alg": alg, "use": "sig"})


def generate_encryption_key(crv: str = "P-256") -> JWK:
    """A partner-side key pair (used by the demo and tests, never by the bank)."""
    key: JWK = (
        OKPKey.generate_key("X25519", private=True)
        if crv == "X25519"
        else ECKey.generate_key(crv, private=True)
    )
    key.ensure_kid()
    return import_jwk({**key.as_dict(private=True), "use": "enc", "alg": "ECDH-ES+A256KW"})


def import_jwk(data: dict[str, Any]) -> JWK:
    kty = data.get("kty")
    if kty == "EC":
        return ECKey.import_key(data)
    if kty == "OKP":
        return OKPKey.import_key(data)
    raise KeyStoreError(f"unsupported key type {kty!r} (expected EC or OKP)")


#: JWK members that only a private (or secret) key has (RFC 7518 section 6).
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def check_public_jwks(data: Any, path: Path) -> None:
    """A partner's key set as published: ``{"keys": [...]}``, every key public and
    named by a ``kid`` (the partner picks its private key by it when it rotates; a key
    without one would get a thumbprint it never chose)."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyStoreError(f'{path}: not a JWKS: expected an object {{"keys": [...]}}')
    for number, key in enumerate(data["keys"], start=1):
        if not isinstance(key, dict):
            raise KeyStoreError(f"{path}: key {number} is not a JSON object")
        name = f"key {number}" + (f" (kid {key['kid']!r})" if key.get("kid") else "")
        private = [member for member in PRIVATE_MEMBERS if member in key]
        if private:
            raise KeyStoreError(
                f"{path}: {name} holds private key material ({', '.join(private)}): the bank needs "
                "only the public part; the partner should treat that key as exposed and make a new one"
            )
        if not key.get("kid"):
            raise KeyStoreError(f"{path}: {name} has no kid; ask the partner to name each key")
