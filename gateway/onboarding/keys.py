"""The key store on disk (see keys/README.md for the layout).

::

    KEYS_DIR/bank/signing.jwk      the bank's current signing key (private, 0600)
    KEYS_DIR/bank/jwks.json        the bank's published key set: current and retired keys
    KEYS_DIR/bank/retired.json     retired signing keys: kid -> published until (RFC 3339)
    KEYS_DIR/bank/pseudonym.key    master key of the keyed pseudonyms (private, 0600)
    KEYS_DIR/bank/audit-log.pem    Ed25519 key that signs audit checkpoints (private, 0600)
    KEYS_DIR/partners/ID.jwks.json partners' public keys (encryption; Ed25519 for v1a callbacks)
    KEYS_DIR/partners/ID.whsec     shared secrets for v1 callbacks, newest last (0600)
    KEYS_DIR/partners/NAME.secret  credentials a profile names: API keys, passwords (0600)
    KEYS_DIR/partners/NAME.key     the bank's SSH private key for a file partner (0600)
    KEYS_DIR/partners/NAME.asc     an OpenPGP partner's public key (gateway.onboarding.openpgp,
                                   which also keeps the bank's OpenPGP key in bank/openpgp.*)

Private material is only ever read here and handed to the code that uses it; no
function returns it as text for printing.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.jwk import KeySet

from gateway.clock import isotime, utcnow
from gateway.errors import Conflict, KeyStoreError, NotFound
from gateway.filecache import FileCache
from gateway.onboarding.files import (
    KEYS_DIR_MODE,
    make_dir,
    write_private,
    write_public,
)
from gateway.onboarding.jwk import JWK, check_public_jwks, generate_signing_key, import_jwk
from gateway.onboarding.pseudonyms import Pseudonymizer

T = TypeVar("T")



class KeyStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.bank = self.root / "bank"
        self.partners = self.root / "partners"
        self._files = FileCache()
        self._signing_file = os.fspath(self.signing_path)
        self._jwks_file = os.fspath(self.jwks_path)
        self._retired_file = os.fspath(self.retired_path)
        self._partners_dir = os.fspath(self.partners)
        self._pseudonym_file = os.fspath(self.bank / "pseudonym.key")
        # Derived per scope, and derived again if the master key file changed.
        self._pseudonymizers: dict[str, tuple[bytes, Pseudonymizer]] = {}

    def _load(self, what: str, path: str | Path, loader: Callable[[Path], Any]) -> Any:
        """``loader(path)``, remembered until the file changes (`gateway.filecache`)."""
        return self._files.load(what, path, loader)

    # -- the bank's signing keys -------------------------------------------------------

    @property
    def signing_path(self) -> Path:
        return self.bank / "signing.jwk"

    @property
    def jwks_path(self) -> Path:
        return self.bank / "jwks.json"

    def generate(self, alg: str = "ES256") -> list[str]:
        """Create whatever bank key is missing; never overwrite one. Return what was made."""
        made = []
        # The bank's private keys live here: the directory itself is the owner's only.
        make_dir(self.bank, KEYS_DIR_MODE)
        self.bank.chmod(KEYS_DIR_MODE)
        if not self.signing_path.exists():
            self._install_signing_key(generate_signing_key(alg), retired=[])
            made.append("signing key")
        made += self.generate_pseudonym_key()
        if not (self.bank / "audit-log.pem").exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private(self.bank / "audit-log.pem", pem)
            made.append("audit log key")
        make_dir(self.partners, KEYS_DIR_MODE)
        return made

    def generate_pseudonym_key(self) -> list[str]:
        """The pseudonymization master key, if missing (a file with every custody)."""
        make_dir(self.bank, KEYS_DIR_MODE)
        if (self.bank / "pseudonym.key").exists():
            return []
        write_private(self.bank / "pseudonym.key", os.urandom(32).hex().encode())
        return ["pseudonymization key"]

    def publish_signing_key(self, public: dict[str, Any]) -> None:
        """Publish a public signing key (held elsewhere, e.g. in a token) first in the
        bank's JWKS: the key to sign with from now on; earlier keys stay published."""
        keys = [public] + [k for k in self._published() if k.get("kid") != public.get("kid")]
        write_public(self.jwks_path, json.dumps({"keys": keys}, indent=2).encode())

    def _published(self) -> list[dict[str, Any]]:
        return list(self.public_jwks()["keys"]) if self.jwks_path.exists() else []

    def rotate(self, alg: str | None = None, *, key: JWK | None = None, now: datetime | None = None) -> JWK:
        """Replace the signing key (with ``key`` if given); the old public key stays
        published for verification until it is retired (`retire`). Retired keys whose
        time is up (at ``now``, default the present) are left out of the file."""
        old = self.signing_key()
        new = key or generate_signing_key(alg or str(old.alg))
        self._install_signing_key(new, retired=self.public_jwks(now)["keys"])
        return new

    def _install_signing_key(self, key: JWK, retired: list[dict[str, Any]]) -> None:
        public = [key.as_dict(private=False)] + [k for k in retired if k.get("kid") != key.kid]
        # Publish the new public key before using it, so nothing is ever signed by a key
        # that verifiers cannot find.
        write_public(self.jwks_path, json.dumps({"keys": public}, indent=2).encode())
        write_private(self.signing_path, json.dumps(key.as_dict(private=True)).encode())

    def signing_key(self) -> JWK:
        return self._load(
            "signing", self._signing_file, lambda p: import_jwk(self._read_json(p, "bank signing key"))
        )

    def public_jwks(self, now: datetime | None = None) -> dict[str, Any]:
        """The bank's published key set at ``now`` (default: the present): every key of
        jwks.json but the retired ones whose time is up."""
        jwks = copy.deepcopy(
            self._load("jwks", self._jwks_file, lambda p: self._read_json(p, "bank public key set"))
        )
        at = isotime(now or utcnow())
        gone = {kid for kid, until in self.retirements().items() if until <= at}
        jwks["keys"] = [k for k in jwks["keys"] if k.get("kid") not in gone]
        return jwks

    # -- retiring signing keys ----------------------------------------------------------

    @property
    def retired_path(self) -> Path:
        return self.bank / "retired.json"

    def retirements(self) -> dict[str, str]:
        """Retired signing keys still in jwks.json: kid -> until when they are published."""

        def load(path: Path) -> dict[str, str]:
            if not path.exists():
                return {}
            data = self._read_json(path, "retired key list")
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise KeyStoreError(f"{path}: not an object of kid -> time; restore it from backup")
            return data

        return dict(self._load("retired", self._retired_file, load))

    def check_retirable(self, kid: str, *, compromised: bool) -> None:
        """Raise unless ``kid`` is a published key other than the one that signs now
        (a retired one only again as compromised, to remove it at once)."""
        if kid == self.signing_key().kid:
            raise Conflict(f"{kid} signs packages now: rotate first (`gateway keys rotate`), then retire it")
        if kid not in {k.get("kid") for k in self.public_jwks()["keys"]}:
            raise NotFound(f"no key {kid!r} in the published key set (see `gateway keys jwks`)")
        until = self.retirements().get(kid)
        if until is not None and not compromised:
            raise Conflict(
                f"{kid} is already retired (published until {until}); --compromised removes it now"
            )

    def retire(self, kid: str, until: str | None) -> None:
        """Publish ``kid`` until ``until`` (RFC 3339, UTC) and no longer; with None (a
        compromised key), take it out of jwks.json at once."""
        retired = self.retirements()
        if until is None:
            jwks = self._read_json(self.jwks_path, "bank public key set")
            jwks["keys"] = [k for k in jwks["keys"] if k.get("kid") != kid]
            write_public(self.jwks_path, json.dumps(jwks, indent=2).encode())
            retired.pop(kid, None)
        else:
            retired[kid] = until
        write_public(self.retired_path, json.dumps(retired, indent=2, sort_keys=True).encode())

    # -- pseudonyms ---------------------------------------------------------------------

    def _pseudonym_master(self) -> bytes:
        def load(path: Path) -> bytes:
            try:
                return bytes.fromhex(path.read_text().strip())
            except FileNotFoundError:
                raise KeyStoreError(f"{path} is missing: run `gateway keys generate`") from None
            except ValueError:
                raise KeyStoreError(f"{path} is not a hex key; restore it from backup") from None

        return self._load("pseudonym", self._pseudonym_file, load)

    def pseudonymizer(self, scope: str) -> Pseudonymizer:
        """Tokens for one scope (``partner:ID`` or ``audit``); scopes cannot be joined."""
        master = self._pseudonym_master()
        known = self._pseudonymizers.get(scope)
        if known is not None and known[0] == master:
            return known[1]
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"gateway-token-v1 {scope}".encode(),
        ).derive(master)
        if len(self._pseudonymizers) >= 1024:
            self._pseudonymizers.clear()
        self._pseudonymizers[scope] = (master, Pseudonymizer(key))
        return self._pseudonymizers[scope][1]

    # -- audit log key ------------------------------------------------------------------

    def audit_log_key(self) -> Ed25519PrivateKey:
        path = self.bank / "audit-log.pem"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise KeyStoreError(f"{path} is missing: run `gateway keys generate`") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyStoreError(f"{path} is not an Ed25519 private key")
        return key

    # -- partners' public keys ----------------------------------------------------------

    def partner_file(self, relative: str, suffix: str = ".json", example: str = "NAME.jwks.json") -> str:
        """The file a profile names (``jwks``, a credential), which must lie in
        keys/partners/: a profile must not make the gateway open (and quote in its
        errors) any file."""
        path = os.path.normpath(os.path.join(self.root, relative))
        if os.path.dirname(path) != os.path.normpath(self.partners) or not path.endswith(suffix):
            raise KeyStoreError(f"{relative!r} is not a file of {self.partners}/: name it partners/{example}")
        return path

    def partner_secret_path(self, relative: str) -> Path:
        """A credential a profile names by file (an API key, a password, an SSH key):
        ``partners/NAME.secret`` or ``partners/NAME.key`` in the key store, readable by
        its owner only, like the bank's own keys."""
        suffix = ".key" if relative.endswith(".key") else ".secret"
        path = self.partner_file(relative, suffix, "NAME.secret (or NAME.key for a private key)")
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise KeyStoreError(
                f"{path} is missing: save the credential there, readable by its owner only"
            ) from None
        if mode & 0o077:
            raise KeyStoreError(f"{path} is readable by others (mode {mode & 0o777:o}): chmod 600 it")
        return Path(path)

    def partner_secret(self, relative: str) -> bytes:
        """The credential in ``partners/NAME.secret`` (one line, the newline dropped)."""

        def load(path: Path) -> bytes:
            secret = path.read_bytes().rstrip(b"\r\n")
            if not secret:
                raise KeyStoreError(f"{path} is empty")
            return secret

        return self._load("partner secret", self.partner_secret_path(relative), load)  # type: ignore[no-any-return]

    def partner_keyset(self, relative: str) -> KeySet:
        def load(path: Path) -> KeySet:
            data = self._read_json(
                path,
                "partner key set",
                missing="ask the partner for its public key set (JWKS) and save it there",
            )
            check_public_jwks(data, path)
            try:
                return KeySet.import_key_set(data)
            except Exception as exc:  # joserfc raises several unrelated types for bad input
                raise KeyStoreError(f"{path}: not a usable JWKS: {exc}") from None

        return self._load("partner keyset", self.partner_file(relative), load)

    # -- callback verification ----------------------------------------------------------

    def webhook_secret_path(self, partner_id: str) -> Path:
        return Path(self._webhook_secret_file(partner_id))

    def _webhook_secret_file(self, partner_id: str) -> str:
        # A string, not a Path: every callback asks, and a Path join costs more than the
        # stat that tells whether the file changed.
        return os.path.join(self._partners_dir, partner_id + ".whsec")

    def add_webhook_secret(self, partner_id: str, secret: str | None = None) -> Path:
        """Add ``secret`` (default: a new one, `new_webhook_secret`); older ones stay
        valid until removed (rotation)."""
        path = self.webhook_secret_path(partner_id)
        existing = path.read_text() if path.exists() else ""
        write_private(path, (existing + (secret or new_webhook_secret()) + "\n").encode())
        return path

    def webhook_secret_ids(self, partner_id: str) -> list[str]:
        """The ids (`secret_id`) of the partner's secrets, oldest first."""
        path = self.webhook_secret_path(partner_id)
        return [secret_id(line) for line in path.read_text().split()] if path.exists() else []

    def remove_webhook_secrets(self, partner_id: str, ids: Sequence[str]) -> int:
        """Remove the secrets of these ids (the file, once none is left); return how
        many are left."""
        path = self.webhook_secret_path(partner_id)
        if not path.exists():
            return 0
        kept = [line for line in path.read_text().split() if secret_id(line) not in ids]
        if kept:
            write_private(path, "".join(line + "\n" for line in kept).encode())
        else:
            path.unlink()
        return len(kept)

    def webhook_secrets(self, partner_id: str) -> tuple[bytes, ...]:
        return self._load("webhook secrets", self._webhook_secret_file(partner_id), _webhook_secrets)

    def partner_signature_keys(self, relative: str | None) -> tuple[Ed25519PublicKey, ...]:
        """The partner's Ed25519 keys for ``v1a`` callback signatures (``use: sig``)."""
        if not relative:
            return ()

        def ed25519_keys(keyset: KeySet) -> tuple[Ed25519PublicKey, ...]:
            keys = []
            for data in keyset.as_dict()["keys"]:
                ed25519 = data.get("kty") == "OKP" and data.get("crv") == "Ed25519"
                if ed25519 and data.get("use", "sig") == "sig":
                    x = str(data["x"])
                    keys.append(Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "==")))
            return tuple(keys)

        return self.from_partner_keyset(relative, "signature keys", ed25519_keys)

    def from_partner_keyset(self, relative: str, what: str, derive: Callable[[KeySet], T]) -> T:
        """``derive(keyset)`` of a partner's key set, remembered with the file like the set
        itself (``what`` names the derived value): importing a partner's JWK for every
        package cost more than the ECDH that uses it."""
        return self._load(  # type: ignore[no-any-return]
            what, self.partner_file(relative), lambda _: derive(self.partner_keyset(relative))
        )

    def _read_json(self, path: Path, what: str, missing: str = "run `gateway keys generate`") -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyStoreError(f"{what} {path} is missing: {missing}") from None
        except json.JSONDecodeError as exc:
            raise KeyStoreError(f"{what} {path} is not valid JSON: {exc}") from None


def new_webhook_secret() -> str:
    """A ``whsec_`` secret for v1 callback signatures: 256 random bits."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def secret_id(secret: str) -> str:
    """How a webhook secret is named in lists and in the audit log: 12 hex digits of
    its SHA-256, which tell nothing of the 256-bit secret."""
    return hashlib.sha256(secret.strip().encode()).hexdigest()[:12]


def _webhook_secrets(path: Path) -> tuple[bytes, ...]:
    """The secrets of a partner's ``.whsec`` file (none if there is no file)."""
    if not path.exists():
        return ()
    secrets = []
    for line in path.read_text().split():
        try:
            secrets.append(base64.b64decode(line.removeprefix("whsec_"), validate=True))
        except ValueError:
            raise KeyStoreError(f"{path}: a line is not a whsec_ secret") from None
    return tuple(secrets)
