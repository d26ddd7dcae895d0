"""OpenPGP keys, for file partners that take only OpenPGP (Sequoia PGP, in process,
through pysequoia: no GnuPG home and no agent on the gateway's side).

::

    KEYS_DIR/bank/openpgp.key      the bank's OpenPGP key, secret (0600, no passphrase)
    KEYS_DIR/bank/openpgp.asc      its public certificate, for partners (0644)
    KEYS_DIR/partners/NAME.asc     a partner's public certificate, named in its profile

The bank's key signs placement batches, their manifests and recall notices; a
partner's certificate is what they are encrypted to and what its status files are
verified with. A partner's certificate is checked before it is used (`partner_cert`):
it must parse, be public, carry the fingerprint its profile pins, not be expired or
revoked, and have a live encryption-capable subkey (neither expired nor revoked).

Setting the bank's key is recorded in the audit log (`gateway.onboarding.rotation`):
`KeyFiles` writes its files so that they can be put back if the entry is not committed.

pysequoia's errors carry a Rust backtrace where ``RUST_BACKTRACE`` is set: only their
first line is ever quoted, and never the key material.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pysequoia
from pysequoia.packet import Packet, PacketPile, SignatureType, Tag

from gateway.errors import KeyStoreError
from gateway.onboarding.files import KEYS_DIR_MODE, make_dir, write_private, write_public
from gateway.onboarding.keys import KeyStore

SECRET_FILE = "openpgp.key"
PUBLIC_FILE = "openpgp.asc"
#: How a fingerprint is written in a profile: 40 hex digits (v4), spaces allowed.
FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")
#: A packet without a time (the library answers None) sorts first.
NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def normal_fingerprint(text: str) -> str:
    """``text`` as 40 upper-case hex digits; ValueError if it is not a v4 fingerprint."""
    compact = "".join(text.split())
    if not FINGERPRINT.fullmatch(compact):
        raise ValueError(f"fingerprint {text!r} is not 40 hex digits (gpg --fingerprint shows it)")
    return compact.upper()


@dataclass(frozen=True)
class BankKey:
    key: pysequoia.Tsk
    fingerprint: str

    def signer(self) -> pysequoia.PySigner:
        return self.key.signer()

    def public(self) -> str:
        return str(self.key.extract_certificate())


# -- the bank's key ---------------------------------------------------------------------


def secret_path(keys: KeyStore) -> Path:
    return keys.bank / SECRET_FILE


def public_path(keys: KeyStore) -> Path:
    return keys.bank / PUBLIC_FILE


def _check_bank_key(key: pysequoia.Tsk, now: datetime, where: str) -> BankKey:
    cert = key.extract_certificate()
    if cert.is_revoked:
        raise KeyStoreError(f"{where}: the key is revoked")
    if cert.expiration is not None and cert.expiration <= now:
        raise KeyStoreError(f"{where}: the key expired on {cert.expiration:%Y-%m-%d}")
    try:
        key.signer()
    except Exception as exc:  # a public certificate, or a secret key under a passphrase
        raise KeyStoreError(
            f"{where}: no usable secret signing key ({first_line(exc)}); export it with its secret "
            "part and without a passphrase (gpg --export-secret-keys --armor; remove the passphrase first)"
        ) from None
    return BankKey(key, cert.fingerprint.upper())


def bank_key(keys: KeyStore, now: datetime | None = None) -> BankKey:
    """The bank's OpenPGP key; KeyStoreError saying which command makes it."""
    path = secret_path(keys)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyStoreError(
            f"{path} is missing: make the bank's OpenPGP key with `gateway keys openpgp generate` "
            "(or import one with `gateway keys openpgp import`)"
        ) from None
    if mode & 0o077:
        raise KeyStoreError(f"{path} is readable by others (mode {mode & 0o777:o}): chmod 600 it")
    try:
        key = pysequoia.Tsk.from_bytes(path.read_bytes())
    except Exception as exc:  # pysequoia raises RuntimeError/ValueError for bad input
        raise KeyStoreError(f"{path}: not an OpenPGP key ({first_line(exc)}); restore it from backup") \
            from None
    return _check_bank_key(key, now or datetime.now(UTC), str(path))


def new_bank_key(user_id: str, valid_days: int) -> BankKey:
    """A new OpenPGP key for the bank (Ed25519 to sign, Cv25519 to decrypt), not yet
    installed: `KeyFiles.install` does that."""
    key = pysequoia.Tsk.generate(
        user_id,
        profile=pysequoia.Profile.RFC4880,  # v4 keys: what GnuPG 2.2 and every partner tool read
        cipher_suite=pysequoia.CipherSuite.Cv25519,
        validity_seconds=valid_days * 86400,
    )
    return _check_bank_key(key, datetime.now(UTC), "generated key")


def read_bank_key(data: bytes, source: str) -> BankKey:
    """The bank's OpenPGP key from an exported secret key (armored or binary), checked,
    not yet installed."""
    try:
        key = pysequoia.Tsk.from_bytes(data)
    except Exception as exc:  # pysequoia raises RuntimeError/ValueError for bad input
        raise KeyStoreError(f"{source}: not an OpenPGP secret key ({first_line(exc)})") from None
    return _check_bank_key(key, datetime.now(UTC), source)


def key_in_place(keys: KeyStore) -> tuple[bool, str | None]:
    """Whether the bank has an OpenPGP key's files, and the key's fingerprint if they can
    be read at all (an expired, revoked or exposed key still has one)."""
    there = False
    for path in (secret_path(keys), public_path(keys)):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError:  # there, but not readable as a file
            there = True
            continue
        there = True
        try:
            return True, pysequoia.Cert.from_bytes(data).fingerprint.upper()
        except Exception:  # pysequoia raises RuntimeError/ValueError for bad input
            continue
    return there, None


def refuse_existing(keys: KeyStore, replace: bool) -> None:
    if secret_path(keys).exists() and not replace:
        current = key_in_place(keys)[1] or "unreadable"
        raise KeyStoreError(
            f"the bank already has an OpenPGP key ({current}); --replace makes a new one, and every "
            "OpenPGP partner must then import the new public key (`gateway keys openpgp export`)"
        )


class KeyFiles:
    """The bank's OpenPGP key files, replaced together: `install` writes the new key's
    (each file atomically, so each is either the old one or the new one), `undo` puts
    back what it replaced, or removes what it added."""

    def __init__(self, keys: KeyStore, key: BankKey) -> None:
        self.dir = keys.bank
        self.files = [
            (public_path(keys), key.public().encode(), write_public),
            (secret_path(keys), str(key.key).encode(), write_private),
        ]
        self.started = False
        self._written: list[tuple[Path, bytes | None, Callable[[Path, bytes], None]]] = []

    def install(self) -> None:
        self.started = True
        make_dir(self.dir, KEYS_DIR_MODE)
        for path, data, write in self.files:
            before = _read(path)
            write(path, data)
            self._written.append((path, before, write))

    def undo(self) -> None:
        while self._written:
            path, before, write = self._written[-1]
            if before is None:
                path.unlink(missing_ok=True)
            else:
                write(path, before)
            self._written.pop()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


# -- partners' certificates --------------------------------------------------------------


def partner_cert_path(keys: KeyStore, relative: str) -> Path:
    return Path(keys.partner_file(relative, ".asc", "NAME.asc"))


def partner_cert(keys: KeyStore, relative: str, fingerprint: str, now: datetime) -> pysequoia.Cert:
    """The partner's certificate, checked; ValueError in one line saying what is wrong."""
    path = partner_cert_path(keys, relative)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: save the partner's public OpenPGP key there") from None
    try:
        packets = list(PacketPile.from_bytes(data))
        cert = pysequoia.Cert.from_bytes(data)
    except Exception as exc:  # pysequoia raises RuntimeError/ValueError for bad input
        raise ValueError(f"{path}: not an OpenPGP public key ({first_line(exc)})") from None
    if any(p.tag in (Tag.SecretKey, Tag.SecretSubkey) for p in packets):
        raise ValueError(
            f"{path} holds secret key material: the bank needs only the public key; the partner "
            "should treat that key as exposed and make a new one"
        )
    found = cert.fingerprint.upper()
    if found != normal_fingerprint(fingerprint):
        raise ValueError(
            f"{path} has fingerprint {found}, not the {normal_fingerprint(fingerprint)} the profile names: "
            "confirm the key with the partner (by fingerprint, out of band)"
        )
    if cert.is_revoked:
        raise ValueError(f"{path}: the partner's key {found} is revoked; ask the partner for its new key")
    if cert.expiration is not None and cert.expiration <= now:
        raise ValueError(
            f"{path}: the partner's key {found} expired on {cert.expiration:%Y-%m-%d}; ask the partner "
            "to extend it (gpg --quick-set-expire) and send it again"
        )
    dead = _dead_encryption_subkeys(packets, now)
    if dead is not None or not _encrypts(cert):
        why = f" ({'; '.join(dead)})" if dead else ""
        raise ValueError(
            f"{path}: the partner's key {found} has no live encryption-capable subkey{why}; ask the "
            "partner to add one (gpg --quick-add-key FINGERPRINT cv25519 encr)"
        )
    return cert


def _encrypts(cert: pysequoia.Cert) -> bool:
    try:
        pysequoia.encrypt(b"", recipients=[cert])
    except Exception:  # no subkey the library would encrypt to
        return False
    return True


@dataclass
class _Subkey:
    fingerprint: str
    created: datetime
    binding: Packet | None = None  # its newest binding signature
    revoked: bool = False


def _subkeys(packets: list[Packet]) -> list[_Subkey]:
    """The certificate's subkeys, each with its newest binding signature and whether a
    revocation was issued for it. Signatures are taken as they stand (the library checks
    them when it encrypts): a revocation, even one it would not accept, refuses the
    subkey, the safe side."""
    subkeys: list[_Subkey] = []
    current: _Subkey | None = None
    for packet in packets:
        tag = packet.tag
        if tag in (Tag.PublicSubkey, Tag.SecretSubkey):
            current = _Subkey(str(packet.fingerprint).upper(), packet.key_created or NO_TIME)
            subkeys.append(current)
        elif tag in (Tag.PublicKey, Tag.SecretKey, Tag.UserID, Tag.UserAttribute):
            current = None
        elif tag != Tag.Signature or current is None:
            continue
        elif packet.signature_type == SignatureType.SubkeyRevocation:
            current.revoked = True
        elif packet.signature_type == SignatureType.SubkeyBinding and _newer(packet, current.binding):
            current.binding = packet
    return subkeys


def _newer(signature: Packet, than: Packet | None) -> bool:
    return than is None or (signature.signature_created or NO_TIME) >= (than.signature_created or NO_TIME)


def _dead_encryption_subkeys(packets: list[Packet], now: datetime) -> list[str] | None:
    """None if a subkey's newest binding says it encrypts and it is neither revoked nor
    expired at ``now`` (the library encrypts to an expired subkey without a word);
    otherwise why each encryption subkey is unusable (empty: there is none)."""
    dead = []
    for subkey in _subkeys(packets):
        flags = subkey.binding.key_flags if subkey.binding else None
        if flags is None or not (flags.transport_encryption or flags.storage_encryption):
            continue
        period = subkey.binding.key_validity_period if subkey.binding else None
        ends = subkey.created + period if period else None
        if subkey.revoked:
            dead.append(f"encryption subkey {subkey.fingerprint} is revoked")
        elif ends is not None and ends <= now:
            dead.append(f"encryption subkey {subkey.fingerprint} expired on {ends:%Y-%m-%d}")
        else:
            return None
    return dead


# -- using them ----------------------------------------------------------------------------


def encrypt_signed(data: bytes, recipient: pysequoia.Cert, bank: BankKey) -> bytes:
    """``data`` signed by the bank and encrypted to ``recipient`` (one binary message,
    what ``gpg --decrypt`` opens and verifies)."""
    return pysequoia.encrypt(data, recipients=[recipient], signer=bank.signer(), armor=False)


def sign_detached(data: bytes, bank: BankKey) -> bytes:
    """The bank's armored detached signature over ``data`` (``gpg --verify SIG DATA``)."""
    return pysequoia.sign(bank.signer(), data, mode=pysequoia.SignatureMode.DETACHED, armor=True)


def verify_detached(data: bytes, signature: bytes, signer: pysequoia.Cert) -> str | None:
    """None if ``signature`` is a valid detached signature over ``data`` by ``signer``'s
    key; otherwise why not, in a line."""
    try:
        sig = pysequoia.Sig.from_bytes(signature)
    except Exception as exc:  # pysequoia raises RuntimeError/ValueError for bad input
        return f"its signature file is not an OpenPGP signature ({first_line(exc)})"
    try:
        result = pysequoia.verify(bytes=data, store=lambda _ids: [signer], signature=sig)
    except Exception as exc:  # no valid signature, or one by another key
        return f"its signature does not verify with the partner's OpenPGP key ({first_line(exc)})"
    if not result.valid_sigs:
        return "its signature does not verify with the partner's OpenPGP key"
    return None
