"""Sealing: sign the package as the bank (JWS), then encrypt it to the partner (JWE).

The result is a nested JWT (RFC 7519 section 5.2, ``cty: JWT``) that any JOSE library
opens with the partner's private key and verifies with the bank's published JWKS.

Both layers are built here on ``cryptography``'s primitives (ECDSA or Ed25519 by the
key custody, ECDH, Concat KDF, AES key wrap, AES-GCM): a JOSE library's general
machinery (header checks, key sets, registries) cost more per package than the
cryptography itself. Every JOSE library opens the result (tests/test_sealing.py,
tests/test_partner_kit.py: joserfc, jwcrypto and Node's jose).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet

from gateway.errors import SealingError
from gateway.onboarding.custody import PackageSigner
from gateway.onboarding.jwk import ENCRYPTION_CURVES, JWK, import_jwk

KEY_ALG = "ECDH-ES+A256KW"
SIGNING_ALGS = ["ES256", "EdDSA"]
CONTENT_ENC = "A256GCM"
# Preference when a partner offers several key types: X25519 first (smaller, faster,
# no invalid-curve pitfalls), P-256 as the baseline every JOSE library supports.
_CURVE_PREFERENCE = ("X25519", "P-256", "P-384", "P-521")


@dataclass(frozen=True)
class Recipient:
    """A partner's public key for ECDH-ES, imported once (cached with the key file, see
    `KeyStore.from_partner_keyset`): the kid and the curve as the JWE header names them."""

    kid: str
    crv: str
    public_key: ec.EllipticCurvePublicKey | X25519PublicKey

    @classmethod
    def of(cls, key: JWK) -> Recipient:
        """The recipient of a JWK (public, or a pair whose public half is used)."""
        public = key.public_key
        if isinstance(public, X25519PublicKey):
            return cls(str(key.kid), "X25519", public)
        if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name in _EC_CURVES:
            return cls(str(key.kid), _EC_CURVES[public.curve.name][0], public)
        raise SealingError(f"key {key.kid} cannot do ECDH-ES (use P-256 or X25519)")


#: cryptography's curve names -> (the JWK's crv, bytes of a coordinate).
_EC_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def choose_encryption_key(keyset: KeySet | dict[str, Any]) -> Recipient:
    """The partner key to encrypt to: a key for ECDH-ES, preferring X25519, and within
    one curve the first listed (partners list their newest key first when rotating)."""
    keys = keyset.as_dict()["keys"] if isinstance(keyset, KeySet) else keyset["keys"]
    usable = [k for k in keys if usable_for_encryption(k) is None]
    for crv in _CURVE_PREFERENCE:
        for data in usable:
            if data.get("crv") == crv:
                with _sealing(f"cannot import key {data.get('kid')}"):
                    return Recipient.of(import_jwk(data))
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
    return pybase64.urlsafe_b64encode(data).rstrip(b"=")


def sign(claims: dict[str, Any], signer: PackageSigner) -> str:
    """The compact JWS (RFC 7515) of ``claims``, signed by the key custody's signer: the
    private key may live in an HSM, so the signing input is built here and only the
    signature is asked of the custody. Every JOSE library verifies it (tests/test_sealing.py)."""
    signing_input = _jws_header(signer.alg, signer.kid) + b"." + _b64(claims_json(claims))
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


def claims_json(claims: dict[str, Any]) -> bytes:
    """``claims`` as compact UTF-8 JSON, by orjson (a sixteenth of `json.dumps`'s time):
    for the strings, integers, booleans, lists and objects that claims hold, the same
    bytes as `json.dumps` with ``separators=(",", ":"), ensure_ascii=False``. What orjson
    will not write (a key that is no string, an integer over 64 bits) goes to
    `json.dumps`, which refuses what is not plain JSON; so does a text with a ``null``
    in it (rare: minimizing leaves absent values out), as orjson writes NaN and the
    infinities as ``null`` where `json.dumps` refuses them."""
    try:
        payload = orjson.dumps(claims)
    except TypeError:  # a key that is no string, an integer over 64 bits, another type
        payload = b"null"
    if b"null" not in payload:
        return payload
    try:
        text = json.dumps(claims, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SealingError(f"cannot sign package: claims are not plain JSON ({exc})") from None
    return text.encode()


_JWS_HEADERS: dict[tuple[str, str], bytes] = {}


def _jws_header(alg: str, kid: str) -> bytes:
    """The encoded protected header of a package JWS, made once per signing key."""
    header = _JWS_HEADERS.get((alg, kid))
    if header is None:
        if len(_JWS_HEADERS) >= 64:  # keys rotate; old ones need not stay
            _JWS_HEADERS.clear()
        header = _b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}, separators=(",", ":")).encode())
        _JWS_HEADERS[(alg, kid)] = header
    return header


#: Concat KDF's OtherInfo for ECDH-ES+A256KW (RFC 7518 section 4.6.2): AlgorithmID,
#: empty PartyUInfo and PartyVInfo (no apu, apv), SuppPubInfo of 256 bits.
_OTHER_INFO = len(KEY_ALG).to_bytes(4, "big") + KEY_ALG.encode() + bytes(8) + (256).to_bytes(4, "big")


def encrypt(signed: str, recipient: Recipient | JWK) -> str:
    """``signed`` as a compact JWE (RFC 7516) to ``recipient``: ECDH-ES with an ephemeral
    key on its curve, the KEK from Concat KDF (SHA-256), a random CEK wrapped with
    A256KW, the content sealed with A256GCM under the protected header as AAD."""
    if not isinstance(recipient, Recipient):
        with _sealing(f"cannot encrypt package to key {recipient.kid}"):
            recipient = Recipient.of(recipient)
    try:
        epk, shared = _agree(recipient)
    except Exception as exc:  # noqa: BLE001 - a small-order X25519 key, a point off its curve
        why = exc or type(exc).__name__
        raise SealingError(f"cannot encrypt package to key {recipient.kid}: {why}") from None
    header = {"alg": KEY_ALG, "enc": CONTENT_ENC, "cty": "JWT", "kid": recipient.kid, "epk": epk}
    protected = _b64(orjson.dumps(header))
    kek = hashlib.sha256(b"\x00\x00\x00\x01" + shared + _OTHER_INFO).digest()
    cek, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, signed.encode("ascii"), protected)
    parts = (protected, _b64(aes_key_wrap(kek, cek)), _b64(iv), _b64(sealed[:-16]), _b64(sealed[-16:]))
    return b".".join(parts).decode("ascii")


def _agree(recipient: Recipient) -> tuple[dict[str, str], bytes]:
    """A new ephemeral key's public JWK, and the secret it agrees with ``recipient``."""
    public = recipient.public_key
    if isinstance(public, X25519PublicKey):
        ephemeral = X25519PrivateKey.generate()
        x = ephemeral.public_key().public_bytes_raw()
        return {"kty": "OKP", "crv": "X25519", "x": _b64(x).decode()}, ephemeral.exchange(public)
    size = _EC_CURVES[public.curve.name][1]
    key = ec.generate_private_key(public.curve)
    numbers = key.public_key().public_numbers()
    epk = {
        "kty": "EC",
        "crv": recipient.crv,
        "x": _b64(numbers.x.to_bytes(size, "big")).decode(),
        "y": _b64(numbers.y.to_bytes(size, "big")).decode(),
    }
    return epk, key.exchange(ec.ECDH(), public)


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
                recipient = Recipient.of(import_jwk(key))
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
