"""Key custody: where the bank's private keys live, and who signs with them.

The core never needs a private key itself, only something that signs: a package
signer (JWS ES256 or EdDSA) and the audit log's checkpoint key (Ed25519). The built-in
custody, ``files``, keeps them as 0600 files in ``keys/bank/``. A plugin implementing
``gateway_key_custody`` can keep them in an HSM or a KMS instead, so that the private
keys never exist in the gateway's process: it returns a `KeyCustody` whose signers call
the device. ``key_custody`` in gateway.toml chooses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.audit.checkpoint import NoteKey as CheckpointKey
from gateway.onboarding.jwk import JWK, generate_signing_key
from gateway.onboarding.keys import KeyStore
from gateway.storage.atrest import KeyWrapper


class PackageSigner(Protocol):
    """Signs packages (the JWS inside each JWE)."""

    #: The key id published in the bank's JWKS.
    kid: str
    #: "ES256" or "EdDSA".
    alg: str

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature of ``signing_input`` (ES256: the 64-byte r||s; EdDSA: 64 bytes)."""
        ...


class KeyCustody:
    name: ClassVar[str]

    def generate(self, alg: str) -> list[str]:
        """Create whatever bank key is missing (never replace one) and publish the
        public keys (``keys/bank/jwks.json``); return what was made, for `gateway init`."""
        raise NotImplementedError

    def package_signer(self) -> PackageSigner:
        raise NotImplementedError

    def audit_log_key(self) -> CheckpointKey:
        raise NotImplementedError

    def public_jwks(self, now: datetime | None = None) -> dict[str, Any]:
        """The bank's public package-signing keys published at ``now`` (default: the
        present) as a JWKS, newest first: what ``/.well-known/jwks.json`` serves and
        partners verify packages with (a retired key leaves it when its time is up)."""
        raise NotImplementedError

    def prepare_rotation(self, alg: str | None) -> Rotation:
        """A new package-signing key, not yet in use: `Rotation.install` publishes it
        and signs with it from then on (the old public key stays published)."""
        raise NotImplementedError

    def storage_keys(self) -> KeyWrapper | None:
        """The key-encryption keys of the data at rest (`gateway.storage.atrest`), if this
        custody holds them (an HSM or a KMS wraps and unwraps); None: they are a 0600 file,
        ``keys/bank/storage.kek``."""
        return None


@dataclass(frozen=True)
class Rotation:
    old_kid: str
    new_kid: str
    alg: str
    install: Callable[[], None]


class JwkSigner:
    """A package signer over a private JWK held in this process."""

    def __init__(self, key: JWK) -> None:
        self.kid = str(key.kid)
        self.alg = str(key.alg)
        self._private = key.private_key

    def sign(self, signing_input: bytes) -> bytes:
        if isinstance(self._private, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self._private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert isinstance(self._private, Ed25519PrivateKey), type(self._private)
        return self._private.sign(signing_input)


class FileCustody(KeyCustody):
    """Keys as 0600 files under ``keys/bank/`` (the built-in custody)."""

    name = "files"

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def generate(self, alg: str) -> list[str]:
        return self.keys.generate(alg)

    def package_signer(self) -> PackageSigner:
        return JwkSigner(self.keys.signing_key())

    def audit_log_key(self) -> CheckpointKey:
        return self.keys.audit_log_key()

    def public_jwks(self, now: datetime | None = None) -> dict[str, Any]:
        return self.keys.public_jwks(now)

    def prepare_rotation(self, alg: str | None) -> Rotation:
        old = self.keys.signing_key()
        new = generate_signing_key(alg or str(old.alg))

        def install() -> None:
            self.keys.rotate(key=new)

        return Rotation(str(old.kid), str(new.kid), str(new.alg), install)
