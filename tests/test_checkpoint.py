"""Signed checkpoints: the signed-note format against the Go sumdb/note example, round
trips, and refusal of foreign keys, tampering and malformed notes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    format_vkey,
    key_id,
    open_note,
    parse_and_verify,
    parse_vkey,
    sign_checkpoint,
    sign_note,
)

# The example of the golang.org/x/mod/sumdb/note package documentation: its signer
# key (0x01 || Ed25519 seed), verifier key and signed note. Ed25519 signatures are
# deterministic, so signing the same text must give the same note byte for byte.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq"
    "fqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _go_private_key() -> Ed25519PrivateKey:
    material = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert material[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(material[1:])


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test log key").digest())
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"other key").digest())
NAME = "gateway.example/audit"
VKEY = format_vkey(NAME, KEY.public_key())
ROOT = hashlib.sha256(b"root").digest()
CP = Checkpoint("gateway.example/audit", 12345, ROOT)


def test_go_example_key() -> None:
    key = _go_private_key()
    assert key_id("PeterNeumann", key.public_key()).hex() == "c74f20a3"
    assert format_vkey("PeterNeumann", key.public_key()) == GO_VKEY
    name, public_key = parse_vkey(GO_VKEY)
    assert name == "PeterNeumann"
    assert public_key.public_bytes(Encoding.Raw, PublicFormat.Raw) == _raw(key)


def test_go_example_note() -> None:
    assert sign_note(GO_TEXT, "PeterNeumann", _go_private_key()) == GO_NOTE
    assert open_note(GO_NOTE, GO_VKEY) == GO_TEXT
    with pytest.raises(CheckpointError, match="bad signature"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), GO_VKEY)


def test_key_id_formula() -> None:
    material = NAME.encode() + b"\n\x01" + _raw(KEY)
    assert key_id(NAME, KEY.public_key()) == hashlib.sha256(material).digest()[:4]


def test_body_format() -> None:
    root_b64 = base64.b64encode(ROOT).decode()
    assert CP.body() == f"gateway.example/audit\n12345\n{root_b64}\n".encode()
    with_extension = Checkpoint("o", 0, ROOT, ("extra line",))
    assert with_extension.body() == f"o\n0\n{root_b64}\nextra line\n".encode()


def test_round_trip() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    body, signatures = note.split("\n\n")
    assert body + "\n" == CP.body().decode()
    assert signatures.startswith(f"\u2014 {NAME} ")
    assert signatures.endswith("\n") and signatures.count("\n") == 1
    assert parse_and_verify(note, VKEY) == CP


def test_extensions_round_trip() -> None:
    cp = Checkpoint("o", 7, ROOT, ("Timestamp: 1700000000", "a second line"))
    assert parse_and_verify(sign_checkpoint(cp, NAME, KEY), VKEY) == cp


origins = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1)


@given(origins, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32))
def test_round_trip_any(origin: str, size: int, root: bytes) -> None:
    cp = Checkpoint(origin, size, root)
    assert parse_and_verify(sign_checkpoint(cp, NAME, KEY), VKEY) == cp


def test_vkey_round_trip() -> None:
    name, public_key = parse_vkey(VKEY)
    assert name == NAME
    assert public_key.public_bytes(Encoding.Raw, PublicFormat.Raw) == _raw(KEY)
    assert format_vkey(name, public_key) == VKEY


def _replace_key_id(vkey: str, new_id: str) -> str:
    name, _, key = vkey.split("+", 2)
    return f"{name}+{new_id}+{key}"


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        _replace_key_id(GO_VKEY, "c74f20a4"),
        _replace_key_id(GO_VKEY, "C74F20A3"),
        _replace_key_id(GO_VKEY, "c74f20a"),
        "Peter+Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_vkey_refused(vkey: str) -> None:
    with pytest.raises(CheckpointError):
        parse_vkey(vkey)


@pytest.mark.parametrize("name", ["", "with space", "a+b", "tab\there", "new\nline"])
def test_bad_key_name_refused(name: str) -> None:
    with pytest.raises(CheckpointError, match="key name"):
        sign_checkpoint(CP, name, KEY)


def test_other_key_refused() -> None:
    note = sign_checkpoint(CP, NAME, OTHER_KEY)
    with pytest.raises(CheckpointError, match="no signature"):
        parse_and_verify(note, VKEY)
    other_name = sign_checkpoint(CP, "another.example/log", KEY)
    with pytest.raises(CheckpointError, match="no signature"):
        parse_and_verify(other_name, VKEY)


def test_forged_key_id_refused() -> None:
    # A signature line claiming our name and key id, made with another key.
    note = sign_checkpoint(CP, NAME, KEY)
    body, _ = note.split("\n\n")
    forged_blob = key_id(NAME, KEY.public_key()) + OTHER_KEY.sign((body + "\n").encode())
    forged = f"{body}\n\n\u2014 {NAME} {base64.b64encode(forged_blob).decode()}\n"
    with pytest.raises(CheckpointError, match="bad signature"):
        parse_and_verify(forged, VKEY)


@pytest.mark.parametrize(
    "changed",
    [
        Checkpoint(CP.origin, CP.size + 1, CP.root),
        Checkpoint(CP.origin, CP.size, hashlib.sha256(b"other root").digest()),
        Checkpoint("gateway.example/other", CP.size, CP.root),
        Checkpoint(CP.origin, CP.size, CP.root, ("added",)),
    ],
    ids=["size", "root", "origin", "extension"],
)
def test_modified_checkpoint_refused(changed: Checkpoint) -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    signatures = note.split("\n\n")[1]
    tampered = changed.body().decode() + "\n" + signatures
    with pytest.raises(CheckpointError, match="bad signature"):
        parse_and_verify(tampered, VKEY)


def test_cosignatures_by_other_keys_are_ignored() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    cosigned = sign_note(CP.body().decode(), "witness.example", OTHER_KEY)
    witness_line = cosigned.split("\n\n")[1]
    assert parse_and_verify(note + witness_line, VKEY) == CP
    assert parse_and_verify(cosigned.replace("\n\n", "\n\n" + note.split("\n\n")[1]), VKEY) == CP


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda note: note[:-1], "newline"),
        (lambda note: note.replace("\n\n", "\n"), "blank line"),
        (lambda note: note.split("\n\n")[0] + "\n\n", "no signature lines"),
        (lambda note: note.replace("\u2014", "-"), "signature line"),
        (lambda note: note.replace("\u2014 ", "\u2014  "), "key name"),
        (lambda note: note + "\u2014 x\n", "too short"),
        (lambda note: note + "\u2014 x AAAA!AAA\n", "base64"),
        (lambda note: note.replace("\n\n", "\r\n\n"), "control character"),
    ],
    ids=[
        "no-final-newline",
        "no-blank-line",
        "no-signatures",
        "hyphen",
        "double-space",
        "empty-signature",
        "bad-base64",
        "carriage-return",
    ],
)
def test_malformed_note_refused(mangle: Callable[[str], str], message: str) -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    with pytest.raises(CheckpointError, match=message):
        parse_and_verify(mangle(note), VKEY)


def test_too_many_signatures_refused() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    line = note.split("\n\n")[1]
    with pytest.raises(CheckpointError, match="more than 100"):
        parse_and_verify(note + line * 100, VKEY)


@pytest.mark.parametrize(
    "body",
    [
        "origin\n012\n{root}\n",  # leading zero
        "origin\n+12\n{root}\n",
        "origin\n1 2\n{root}\n",
        "origin\n\u0661\n{root}\n",  # ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
        "origin\n18446744073709551616\n{root}\n",  # 2**64
        "origin\n123456789012345678901234567890\n{root}\n",
        "origin\n12\n",
        "origin\n12\n{short_root}\n",
        "origin\n12\n{root_unpadded}\n",
        "origin\n12\n{root}\n\nextension after an empty line\n",
        "\n12\n{root}\n",
    ],
)
def test_bad_body_refused(body: str) -> None:
    text = body.format(
        root=base64.b64encode(ROOT).decode(),
        short_root=base64.b64encode(ROOT[:31]).decode(),
        root_unpadded=base64.b64encode(ROOT[:31]).decode().rstrip("="),
    )
    # Sign the raw text so that only the body is at fault (bypassing the blank-line
    # guard of sign_note for the case that needs one).
    signature = key_id(NAME, KEY.public_key()) + KEY.sign(text.encode())
    note = f"{text}\n\u2014 {NAME} {base64.b64encode(signature).decode()}\n"
    with pytest.raises(CheckpointError, match="bad checkpoint body"):
        parse_and_verify(note, VKEY)


def test_zero_size_and_max_size_accepted() -> None:
    for size in (0, 2**64 - 1):
        cp = Checkpoint("o", size, ROOT)
        assert parse_and_verify(sign_checkpoint(cp, NAME, KEY), VKEY) == cp


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 1, ROOT), "empty origin"),
        (("a\nb", 1, ROOT), "control character"),
        (("o", -1, ROOT), "out of range"),
        (("o", 2**64, ROOT), "out of range"),
        (("o", 1, ROOT[:31]), "31 bytes"),
        (("o", 1, ROOT, ("",)), "empty extension"),
    ],
)
def test_invalid_checkpoint_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        Checkpoint(*args)


def test_sign_note_refuses_bad_text() -> None:
    for text in ("no newline", "a\n\nb\n", "\nstarts blank\n", "tab\tinside\n"):
        with pytest.raises(CheckpointError):
            sign_note(text, NAME, KEY)
