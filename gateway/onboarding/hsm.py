"""Key custody in a PKCS#11 token: ``key_custody = "pkcs11"`` and a ``[pkcs11]`` table.

The audit log's key (Ed25519, CKM_EDDSA) and the package-signing keys (P-256 with
CKM_ECDSA over the SHA-256 of the signing input, which gives JWS's raw r||s; or Ed25519
for EdDSA) are made inside the token as sensitive, non-extractable private keys: they
never exist as files nor in this process, which only asks the token to sign. Their
public halves are published as the files custody publishes them, ``keys/bank/jwks.json``
and ``keys/bank/audit-log.vkey``. The pseudonymization key stays a 0600 file.

A package-signing key is found by its id (CKA_ID), the JWK thumbprint that is its
``kid``: the first key of the published JWKS is the one to sign with, so a rotation
makes a new key in the token and publishes it first. The user PIN is read from the
environment variable ``pin_env`` names (``GATEWAY_PKCS11_PIN`` by default), never from
gateway.toml.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc.jwk import ECKey, OKPKey

from gateway.audit.signer import origin_for, publish_vkey
from gateway.config import Pkcs11Settings, Settings
from gateway.errors import ConfigError, KeyStoreError
from gateway.onboarding.custody import KeyCustody, PackageSigner, Rotation
from gateway.onboarding.keys import KeyStore
from gateway.plugin.hookspecs import hookimpl

AUDIT_KEY_ID = b"audit-log"
#: DER of the Ed25519 curve's OID (1.3.101.112), the EC_PARAMS of an Edwards key pair.
_ED25519_PARAMS = bytes.fromhex("06032b6570")


def _library() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise ConfigError(
            "key_custody = \"pkcs11\" needs the python-pkcs11 package: pip install 'agency-gateway[hsm]'"
        ) from None
    return pkcs11


#: Logged-in sessions by (module, token label): a PKCS#11 login is the whole process's,
#: so every custody of one token in this process shares one session.
_SESSIONS: dict[tuple[str, str], Any] = {}


class Token:
    """The logged-in session with the token, opened on first use and kept."""

    def __init__(self, config: Pkcs11Settings) -> None:
        self.config = config

    def session(self) -> Any:
        where = (str(self.config.module), self.config.token)
        if where not in _SESSIONS:
            pin = os.environ.get(self.config.pin_env)
            if not pin:
                raise ConfigError(
                    f"key_custody = \"pkcs11\": set {self.config.pin_env} to the token's user PIN"
                )
            p11 = _library()
            try:
                token = p11.lib(where[0]).get_token(token_label=where[1])
                _SESSIONS[where] = token.open(rw=True, user_pin=pin)
            except (p11.exceptions.PKCS11Error, RuntimeError) as exc:
                raise KeyStoreError(
                    f"cannot open token {where[1]!r} with {where[0]}: {type(exc).__name__}"
                ) from None
        return _SESSIONS[where]

    def find(self, private: bool, label: str, key_id: bytes) -> Any:
        """The key object of that label and id, or None."""
        p11 = _library()
        kind = p11.ObjectClass.PRIVATE_KEY if private else p11.ObjectClass.PUBLIC_KEY
        found = list(self.session().get_objects(
            {p11.Attribute.CLASS: kind, p11.Attribute.LABEL: label, p11.Attribute.ID: key_id}
        ))  # fmt: skip
        if len(found) > 1:
            raise KeyStoreError(f"token {self.config.token!r} holds {len(found)} keys labelled {label!r}")
        return found[0] if found else None

    def generate(self, alg: str, label: str, key_id: bytes) -> Any:
        """A new key pair in the token, its private half sensitive and never extractable;
        returns the public key object."""
        p11 = _library()
        from pkcs11.util.ec import encode_named_curve_parameters

        edwards = alg == "EdDSA"
        curve = _ED25519_PARAMS if edwards else encode_named_curve_parameters("secp256r1")
        kind = p11.KeyType.EC_EDWARDS if edwards else p11.KeyType.EC
        params = self.session().create_domain_parameters(kind, {p11.Attribute.EC_PARAMS: curve}, local=True)
        public, _ = params.generate_keypair(
            store=True,
            label=label,
            id=key_id,
            mechanism=p11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN if edwards else None,
            private_template={p11.Attribute.SENSITIVE: True, p11.Attribute.EXTRACTABLE: False},
        )
        return public

    def sign(self, private: Any, alg: str, data: bytes) -> bytes:
        p11 = _library()
        if alg == "EdDSA":
            return bytes(private.sign(data, mechanism=p11.Mechanism.EDDSA))
        return bytes(private.sign(hashlib.sha256(data).digest(), mechanism=p11.Mechanism.ECDSA))


def public_key_of(public: Any, alg: str) -> ec.EllipticCurvePublicKey | Ed25519PublicKey:
    """The cryptography public key of a token's public key object (CKA_EC_POINT, which
    tokens give DER-wrapped as an OCTET STRING, or bare)."""
    point = bytes(public[_library().Attribute.EC_POINT])
    size = 32 if alg == "EdDSA" else 65
    if len(point) == size + 2 and point[0] == 0x04 and point[1] == size:
        point = point[2:]
    if alg == "EdDSA":
        return Ed25519PublicKey.from_public_bytes(point)
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def public_jwk(public: Any, alg: str) -> dict[str, Any]:
    """The JWK to publish for a token's signing key, named by its thumbprint."""
    key = public_key_of(public, alg)
    jwk = OKPKey.import_key(key) if isinstance(key, Ed25519PublicKey) else ECKey.import_key(key)
    jwk.ensure_kid()
    return {**jwk.as_dict(private=False), "alg": alg, "use": "sig"}


class TokenNoteKey:
    """The audit log's checkpoint key in the token (a `NoteKey`)."""

    def __init__(self, token: Token, private: Any, public: Ed25519PublicKey) -> None:
        self._token, self._private, self._public = token, private, public

    def sign(self, data: bytes) -> bytes:
        return self._token.sign(self._private, "EdDSA", data)

    def public_key(self) -> Ed25519PublicKey:
        return self._public


class TokenPackageSigner:
    """A package signer whose private key is in the token (a `PackageSigner`)."""

    def __init__(self, token: Token, private: Any, kid: str, alg: str) -> None:
        self._token, self._private, self.kid, self.alg = token, private, kid, alg

    def sign(self, signing_input: bytes) -> bytes:
        return self._token.sign(self._private, self.alg, signing_input)


class Pkcs11Custody(KeyCustody):
    """The bank's signing keys in a PKCS#11 token; see the module docstring."""

    name = "pkcs11"

    def __init__(self, settings: Settings) -> None:
        if settings.pkcs11 is None:
            raise ConfigError('key_custody = "pkcs11" needs a [pkcs11] table (module, token) in gateway.toml')
        self.config = settings.pkcs11
        self.origin = origin_for(settings.bank_id)
        self.keys = KeyStore(settings.keys_dir)
        self.token = Token(self.config)
        self._signers: dict[str, TokenPackageSigner] = {}

    def generate(self, alg: str) -> list[str]:
        made = self.keys.generate_pseudonym_key()
        if self.token.find(True, self.config.audit_label, AUDIT_KEY_ID) is None:
            self.token.generate("EdDSA", self.config.audit_label, AUDIT_KEY_ID)
            made.append(f"audit log key (in token {self.config.token})")
        if self._current_kid() is None:
            self._new_signing_key(alg)
            made.append(f"signing key (in token {self.config.token})")
        publish_vkey(self.keys, self.origin, self.audit_log_key())
        return made

    def audit_log_key(self) -> TokenNoteKey:
        private = self.token.find(True, self.config.audit_label, AUDIT_KEY_ID)
        public = self.token.find(False, self.config.audit_label, AUDIT_KEY_ID)
        if private is None or public is None:
            raise KeyStoreError(
                f"token {self.config.token!r} has no audit log key {self.config.audit_label!r}: "
                "run `gateway keys generate`"
            )
        key = public_key_of(public, "EdDSA")
        assert isinstance(key, Ed25519PublicKey)
        return TokenNoteKey(self.token, private, key)

    def package_signer(self) -> PackageSigner:
        kid = self._current_kid()
        if kid is None:
            raise KeyStoreError(
                f"token {self.config.token!r} holds no private key for the first key of "
                f"{self.keys.jwks_path}: run `gateway keys generate`"
            )
        signer = self._signers.get(kid)
        if signer is None:
            private = self.token.find(True, self.config.signing_label, kid.encode())
            alg = str(self.keys.public_jwks()["keys"][0]["alg"])
            signer = self._signers[kid] = TokenPackageSigner(self.token, private, kid, alg)
        return signer

    def prepare_rotation(self, alg: str | None) -> Rotation:
        old = self.package_signer()
        public = self._new_signing_key(alg or old.alg, publish=False)
        return Rotation(
            old.kid, str(public["kid"]), str(public["alg"]), lambda: self.keys.publish_signing_key(public)
        )

    def _current_kid(self) -> str | None:
        """The kid of the first published key, if the token holds its private key."""
        published = self.keys.public_jwks()["keys"] if self.keys.jwks_path.exists() else []
        if not published:
            return None
        kid = str(published[0].get("kid", ""))
        return kid if self.token.find(True, self.config.signing_label, kid.encode()) is not None else None

    def _new_signing_key(self, alg: str, *, publish: bool = True) -> dict[str, Any]:
        """A signing key pair made in the token, given its kid as id; published first in
        the JWKS unless `publish` is False (a rotation publishes it when installed)."""
        label = self.config.signing_label
        pending = os.urandom(16)
        public = self.token.generate(alg, label, pending)
        jwk = public_jwk(public, alg)
        kid = str(jwk["kid"]).encode()
        public[_library().Attribute.ID] = kid
        self.token.find(True, label, pending)[_library().Attribute.ID] = kid
        if publish:
            self.keys.publish_signing_key(jwk)
        return jwk


@hookimpl
def gateway_key_custody(settings: Settings) -> KeyCustody | None:
    if settings.key_custody == Pkcs11Custody.name:
        return Pkcs11Custody(settings)
    return None
