"""Open a package from the bank: decrypt it with your private key, then verify the
bank's signature and the claims iss, aud and exp.

Needs: pip install "joserfc>=1.0,<2"  (P-256 and X25519 keys; ES256 and EdDSA signatures)

    python open_package.py PACKAGE_FILE PRIVATE_JWK_FILE BANK_JWKS_FILE ISSUER AUDIENCE
"""

import json
import sys
import warnings

from joserfc import jwe, jwt
from joserfc.jwk import KeySet, import_key

KEY_MANAGEMENT = ["ECDH-ES+A256KW", "A256GCM"]
SIGNATURES = ["ES256", "EdDSA"]


def open_package(package: str, private_jwk: dict, bank_jwks: dict, issuer: str, audience: str) -> dict:
    """The package's claims; raises if it is not for you, not from the bank, or expired."""
    envelope = jwe.decrypt_compact(package, import_key(private_jwk), algorithms=KEY_MANAGEMENT)
    if envelope.headers().get("cty") != "JWT":
        raise ValueError("not a nested JWT (cty is not JWT)")
    with warnings.catch_warnings():
        # joserfc warns that "EdDSA" is being renamed "Ed25519"; the bank signs as EdDSA.
        warnings.simplefilter("ignore")
        token = jwt.decode(envelope.plaintext, KeySet.import_key_set(bank_jwks), algorithms=SIGNATURES)
    expected = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        jti={"essential": True},
    )
    expected.validate(token.claims)
    return dict(token.claims)


def main(package_file: str, key_file: str, jwks_file: str, issuer: str, audience: str) -> None:
    with open(package_file) as f:
        package = f.read().strip()
    with open(key_file) as f:
        private_jwk = json.load(f)
    with open(jwks_file) as f:
        bank_jwks = json.load(f)
    claims = open_package(package, private_jwk, bank_jwks, issuer, audience)
    print(json.dumps(claims, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main(*sys.argv[1:6])
