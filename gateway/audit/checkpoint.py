"""Signed checkpoints of the audit log: a C2SP tlog-checkpoint in a C2SP signed-note.

A checkpoint is the log's origin, tree size and root hash, one per line. It is
signed with Ed25519 as a signed note, the format of golang.org/x/mod/sumdb/note and
of transparency-log witnesses, so that third parties can check our checkpoints with
their own tooling and countersign them:

    <origin>
    <size>
    <base64 root hash>

    — <key name> <base64(4-byte key id || 64-byte signature)>

The verifier key is published as `<name>+<hex key id>+<base64(0x01 || public key)>`.
Parsing is strict: a note is refused rather than read leniently.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit.merkle import HASH_SIZE

ALG_ED25519 = 0x01
_SIGNATURE_PREFIX = "\u2014 "  # EM DASH and a space
_ED25519_SIGNATURE_SIZE = 64
_KEY_ID_SIZE = 4
# A note is untrusted input: bound the work spent on signature lines, as Go does.
_MAX_SIGNATURES = 100
_MAX_SIZE = 2**64 - 1
# At most 20 digits, enough for any uint64, so int() never sees a huge string.
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
# Control characters: those of a line (C0 and DEL), and those of a note's text (C0 but
# the newline). As patterns: a verify checks a thousand notes a million entries.
_LINE_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteKey(Protocol):
    """What signs a note: an Ed25519 private key, or a device's signer with the same
    two methods (the key custody's, see `gateway.onboarding.custody`)."""

    def sign(self, data: bytes) -> bytes: ...

    def public_key(self) -> Ed25519PublicKey: ...


class CheckpointError(ValueError):
    """A checkpoint, signed note or verifier key is malformed or fails verification."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        if not 0 <= self.size <= _MAX_SIZE:
            raise CheckpointError(f"tree size {self.size} out of range")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root hash is {len(self.root)} bytes, want {HASH_SIZE}")
        for line in self.extensions:
            _check_line("extension line", line)

    def text(self) -> str:
        lines = (self.origin, str(self.size), _b64encode(self.root), *self.extensions)
        return "".join(line + "\n" for line in lines)

    def body(self) -> bytes:
        return self.text().encode()

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the signed text of the note)."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint body does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"checkpoint body has {len(lines)} lines, want at least 3")
        origin, size_line, root_line, *extensions = lines
        if not _DECIMAL.fullmatch(size_line):
            raise CheckpointError(f"tree size {size_line!r} is not a canonical decimal")
        try:
            root = _b64decode(root_line)
        except CheckpointError as exc:
            raise CheckpointError(f"root hash: {exc}") from None
        return cls(origin, int(size_line), root, tuple(extensions))


def _check_line(what: str, line: str) -> None:
    if not line:
        raise CheckpointError(f"empty {what}")
    if _LINE_CONTROL.search(line):
        raise CheckpointError(f"{what} {line!r} contains a control character")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    """Standard base64 with padding, refusing any other spelling of the same bytes."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"invalid base64 {text!r}") from None
    if _b64encode(data) != text:
        raise CheckpointError(f"non-canonical base64 {text!r}")
    return data


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name):
        raise CheckpointError(f"invalid key name {name!r}: empty, or has whitespace or '+'")


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key_name: str, public_key: Ed25519PublicKey, alg: int = ALG_ED25519) -> bytes:
    """The signed-note key id: SHA-256(name || 0x0A || alg || public key)[:4]; `alg` is
    0x01 for a note signer, 0x04 for a witness's cosignatures (C2SP tlog-cosignature)."""
    _check_key_name(key_name)
    material = key_name.encode() + b"\n" + bytes([alg]) + _raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:_KEY_ID_SIZE]


def format_vkey(key_name: str, public_key: Ed25519PublicKey, alg: int = ALG_ED25519) -> str:
    """The verifier key string to publish, as golang.org/x/mod/sumdb/note writes it."""
    key = _b64encode(bytes([alg]) + _raw_public_key(public_key))
    return f"{key_name}+{key_id(key_name, public_key, alg).hex()}+{key}"


def parse_vkey(vkey: str, alg: int = ALG_ED25519) -> tuple[str, Ed25519PublicKey]:
    """The key name and Ed25519 public key of a verifier key string of type `alg`."""
    return _parsed_vkey(vkey, alg)[:2]


@functools.lru_cache(maxsize=64)
def _parsed_vkey(vkey: str, alg: int) -> tuple[str, Ed25519PublicKey, bytes]:
    """`parse_vkey`, and the key id, once per key: a verify opens a thousand notes
    with one key. (A key that is refused raises, and is not kept.)"""
    # The name cannot hold '+' but the base64 key can, so split from the left.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("verifier key is not <name>+<key id>+<key>")
    name, id_hex, key_b64 = parts
    _check_key_name(name)
    if not _KEY_ID_HEX.fullmatch(id_hex):
        raise CheckpointError(f"verifier key id {id_hex!r} is not 8 lowercase hex digits")
    key = _b64decode(key_b64)
    if len(key) != 1 + 32 or key[0] != alg:
        what = "an Ed25519 key" if alg == ALG_ED25519 else "an Ed25519 witness key"
        raise CheckpointError(f"verifier key is not {what} (0x{alg:02x} and 32 bytes)")
    public_key = Ed25519PublicKey.from_public_bytes(key[1:])
    wanted_id = key_id(name, public_key, alg)
    if wanted_id.hex() != id_hex:
        raise CheckpointError(f"verifier key id {id_hex} does not match the key")
    return name, public_key, wanted_id


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise CheckpointError("note text does not end with a newline")
    if _TEXT_CONTROL.search(text):
        raise CheckpointError("note text contains a control character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise CheckpointError("note text is not valid UTF-8") from None


def sign_note(text: str, key_name: str, private_key: NoteKey) -> str:
    """A signed note of `text` with one signature line by `key_name`."""
    _check_note_text(text)
    # A blank line would read as the start of the signature block.
    if text.startswith("\n") or "\n\n" in text:
        raise CheckpointError("note text has an empty line")
    signature = private_key.sign(text.encode())
    return f"{text}\n" + signature_line(key_name, key_id(key_name, private_key.public_key()) + signature)


def open_note(note: str, vkey: str) -> str:
    """The text of `note` once its signature by the key `vkey` is verified.

    Signatures by other keys (witness cosignatures, say) are ignored; there must be
    at least one by this key, and every signature line by it must verify.
    """
    name, public_key, wanted_id = _parsed_vkey(vkey, ALG_ED25519)
    text, signatures = split_note(note)
    verified = False
    for signer, blob in signatures:
        if signer != name or blob[:_KEY_ID_SIZE] != wanted_id:
            continue
        signature = blob[_KEY_ID_SIZE:]
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            raise CheckpointError(f"bad signature by {name}: {len(signature)} bytes")
        try:
            public_key.verify(signature, text.encode())
        except InvalidSignature:
            raise CheckpointError(f"bad signature by {name}") from None
        verified = True
    if not verified:
        raise CheckpointError(f"note has no signature by {name}+{wanted_id.hex()}")
    return text


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The text of a signed note and its signature lines as (key name, key id ||
    signature), unverified: the note signer's and any witnesses' alike."""
    _check_note_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no blank line before the signatures")
    text, signature_block = note[: split + 1], note[split + 2 :]
    if not signature_block:
        raise CheckpointError("malformed note: no signature lines")
    lines = signature_block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise CheckpointError(f"malformed note: more than {_MAX_SIGNATURES} signatures")
    return text, [_parse_signature_line(line) for line in lines]


def signature_line(key_name: str, blob: bytes) -> str:
    """One signature line of a note: ``— <name> <base64(key id || signature)>``."""
    return f"{_SIGNATURE_PREFIX}{key_name} {_b64encode(blob)}\n"


def _parse_signature_line(line: str) -> tuple[str, bytes]:
    if not line.startswith(_SIGNATURE_PREFIX):
        raise CheckpointError(f"malformed signature line {line!r}")
    name, _, blob_b64 = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    _check_key_name(name)
    blob = _b64decode(blob_b64)
    if len(blob) <= _KEY_ID_SIZE:
        raise CheckpointError(f"malformed signature line {line!r}: too short")
    return name, blob


def sign_checkpoint(cp: Checkpoint, key_name: str, private_key: NoteKey) -> str:
    """The signed note of checkpoint `cp`."""
    return sign_note(cp.text(), key_name, private_key)


def parse_and_verify(note_text: str, vkey: str) -> Checkpoint:
    """The checkpoint in `note_text`, once verified as signed by the key `vkey`."""
    text = open_note(note_text, vkey)
    try:
        return Checkpoint.from_text(text)
    except CheckpointError as exc:
        raise CheckpointError(f"bad checkpoint body: {exc}") from None
