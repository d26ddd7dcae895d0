"""Sealing: sign the package as the bank (JWS), then encrypt it to the partner (JWE).

The result is a nested JWT (RFC 7519 section 5.2, ``cty: JWT``) that any JOSE library
opens with the partner's private key and verifies with the bank's published JWKS.
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from joserfc import jwe, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet

from gateway.errors import SealingError
from gateway.onboarding.custody import PackageSigner
from gateway.onboarding.keys import ENCRYPTION_CURVES, JWK, import_jwk

KEY_ALG = "ECDH-ES+A256KW"
SIGNING_ALGS = ["ES256", "EdDSA"]
CONTENT_ENC = "A256GCM"
# Preference when a partner offers several key types: X25519 first (smaller, faster,
# no invalid-curve pitfalls), P-256 as the baseline every JOSE library supports.
_CURVE_PREFERENCE = ("X25519", "P-256", "P-384", "P-521")


def choose_encryption_key(keyset: KeySet | dict[str, Any]) -> JWK:
    """The partner key to encrypt to: a key for ECDH-ES, preferring X25519, and within
    one curve the first listed (partners list their newest key first when rotating)."""
    keys = keyset.as_dict()["keys"] if isinstance(keyset, KeySet) else keyset["keys"]
    usable = [k for k in keys if usable_for_encryption(k) is None]
    for crv in _CURVE_PREFERENCE:
        for data in usable:
            if data.get("crv") == crv:
                with _sealing(f"cannot import key {data.get('kid')}"):
                    return import_jwk(data)
    problems = "; ".join(f"kid {k.get('kid')!r}: {usable_for_encryption(k)}" for k in keys)
    raise SealingError(f"no key usable for {KEY_ALG} ({problems or 'the set is empty'})")


def usable_for_encryption(data: dict[str, Any]) -> str | None:
    """None if ``data`` (a public JWK) can receive packages, else why not."""
    if (data.get("kty"), data.get("crv")) not in ENCRYPTION_CURVES:
        return f"key type {data.get('kty')}/{data.get('crv')} cannot do ECDH-ES (use P-256 or X25519)"
    if data.get("use", "enc") != "enc":
        return f"use is {data.get('use')!r}, not 'enc'"
    if data.get("alg", KEY_ALG) != KEY_ALG:
        return f"alg is {data.get('alg')!r}, not {KEY_ALG!r}"
    if not data.get("kid"):
        return "no kid (partners need it to pick their key when they rotate)"
    if "d" in data:
        return "the set holds a private key; publish only the public part"
    return None


@contextmanager
def _quiet_eddsa() -> Iterator[None]:
    """RFC 9864 renames EdDSA to Ed25519, but verifiers deployed today know only EdDSA;
    keeping the old name is deliberate, so its warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
        yield


@contextmanager
def _sealing(what: str) -> Iterator[None]:
    """Every failure of the JOSE and crypto libraries as a SealingError: they raise
    JoseError, but also ValueError (an X25519 key of small order, a point off its curve)
    and others, which must not reach callers as anything but a failed seal."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the boundary of foreign libraries
        raise SealingError(f"{what}: {exc or type(exc).__name__}") from None


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign(claims: dict[str, Any], signer: PackageSigner) -> str:
    """The compact JWS (RFC 7515) of ``claims``, signed by the key custody's signer: the
    private key may live in an HSM, so the signing input is built here and only the
    signature is asked of the custody. Every JOSE library verifies it (tests/test_sealing.py)."""
    header = {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}
    try:
        payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SealingError(f"cannot sign package: claims are not plain JSON ({exc})") from None
    signing_input = _b64(json.dumps(header, separators=(",", ":")).encode()) + b"." + _b64(payload.encode())
    try:
        signature = signer.sign(signing_input)
    except Exception as exc:  # a device or plugin failure, whatever its type
        raise SealingError(f"cannot sign package with key {signer.kid}: {type(exc).__name__}") from None
    return (signing_input + b"." + _b64(signature)).decode("ascii")


def sign_detached(payload: bytes, signer: PackageSigner) -> str:
    """A compact JWS of ``payload`` with the payload left out (RFC 7515 appendix F:
    ``header..signature``), for a file that travels beside its signature: the verifier
    puts the file's base64url back between the dots."""
    header = {"alg": signer.alg, "kid": signer.kid}
    protected = _b64(json.dumps(header, separators=(",", ":")).encode())
    try:
        signature = signer.sign(protected + b"." + _b64(payload))
    except Exception as exc:  # a device or plugin failure, whatever its type
        raise SealingError(f"cannot sign with key {signer.kid}: {type(exc).__name__}") from None
    return (protected + b".." + _b64(signature)).decode("ascii")


def encrypt(signed: str, recipient: JWK) -> str:
    header = {"alg": KEY_ALG, "enc": CONTENT_ENC, "cty": "JWT", "kid": recipient.kid}
    with _sealing(f"cannot encrypt package to key {recipient.kid}"):
        return jwe.encrypt_compact(header, signed.encode("ascii"), recipient)


def keyset_problem(keys: list[dict[str, Any]]) -> str | None:
    """Why packages cannot be sealed to a partner's key set, or None: at least one key
    must be usable for ECDH-ES, and every such key must take a trial encryption (a
    small-order X25519 key passes every field check and fails only there; every package
    would fail with it)."""
    problems = [usable_for_encryption(k) for k in keys]
    if all(problems):
        detail = "; ".join(f"kid {k.get('kid')!r}: {p}" for k, p in zip(keys, problems, strict=True))
        return f"no usable encryption key ({detail or 'the set is empty'})"
    for key, problem in zip(keys, problems, strict=True):
        if problem is not None:
            continue
        try:
            with _sealing(f"cannot import key {key.get('kid')}"):
                recipient = import_jwk(key)
            encrypt(_TRIAL, recipient)
        except SealingError as exc:
            return (
                f"kid {key.get('kid')!r}: a trial encryption failed ({exc}): the key is unusable "
                "(of small order, or not a valid point); ask the partner for a new key pair"
            )
    return None


#: What the trial encryption seals: the shape of a signed token, no data.
_TRIAL = "e30.e30.AA"


def verify_signed(token: str, public_jwks: dict[str, Any]) -> dict[str, Any]:
    """Check the bank's signature on an inner package token; return its claims."""
    try:
        with _quiet_eddsa():
            keys = KeySet.import_key_set(public_jwks)  # type: ignore[arg-type]
            decoded = jwt.decode(token, keys, algorithms=SIGNING_ALGS)
    except (JoseError, ValueError) as exc:
        raise SealingError(f"package signature does not verify with the bank's JWKS: {exc}") from None
    return dict(decoded.claims)
