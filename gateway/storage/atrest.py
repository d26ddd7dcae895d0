"""Encryption at rest: the personal data the gateway stores, sealed with AES-256-GCM.

Envelope encryption, in two layers:

- a **data key** per data subject (its scope is the person's audit token): 256 random
  bits, stored in ``data_keys`` wrapped (AES-256-GCM) by the key-encryption key;
- the **key-encryption key** (KEK): 256 bits in ``keys/bank/storage.kek`` (0600, one
  ``ID HEX`` line per key, the current one first), or held by the key custody when it
  offers one (`KeyCustody.storage_keys`: an HSM or a KMS), so that it never sits in the
  database.

A stored value reads ``enc1:<data key id>:<base64url(nonce || ciphertext || tag)>``; the
column and the row it belongs to are its associated data, so a value copied to another
row or column does not open. A purged value is the empty string.

A database file copied alone therefore holds only ciphertext. Rotating the KEK
re-wraps each data key (one small row each) and leaves the rows alone. Deleting a
subject's data key (`KeyRing.shred`, once an erasure is done) leaves whatever copy of
its rows survives (a free page, the WAL, a dead PostgreSQL tuple) unreadable; a copy of
the wrapped key itself (a backup) stays readable until the KEK it was wrapped with is
retired by a rotation.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import weakref
from collections import OrderedDict
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import pybase64  # base64 in SIMD: every package's stored values, 5-8x the standard library
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.clock import sortable_id, utcnow
from gateway.errors import KeyStoreError, StorageError
from gateway.filecache import FileCache
from gateway.storage.base import Database, Transaction

PREFIX = "enc1:"
NONCE_BYTES = 12
#: Unwrapped data keys kept in memory (one per recent data subject).
CACHE_KEYS = 4096
KEK_FILE = "storage.kek"


class KeyWrapper(Protocol):
    """Holds the key-encryption keys: wraps and unwraps data keys, never shows a KEK."""

    def current(self) -> str | None:
        """The id of the KEK new data keys are wrapped with; None if there is none yet."""
        ...

    def create(self) -> str:
        """Make the first KEK; return its id."""
        ...

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        """``data_key`` wrapped with the current KEK: (KEK id, wrapped bytes)."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes: ...

    def add_next(self) -> str:
        """Make a new KEK, current from now on (the old ones still unwrap); its id."""
        ...

    def retire_others(self) -> list[str]:
        """Forget every KEK but the current one; the ids retired."""
        ...


class FileKek:
    """KEKs in ``keys/bank/storage.kek``: one ``ID HEX`` line each, the current first."""

    def __init__(self, bank_dir: Path) -> None:
        self.path = Path(bank_dir) / KEK_FILE
        self._files = FileCache()

    def _keys(self) -> tuple[tuple[str, bytes], ...]:
        """The KEKs, the current first, read again once the file changes (each new
        debtor's data key is wrapped with the current one)."""
        return self._files.load("kek", self.path, self._read)

    def _read(self, path: Path) -> tuple[tuple[str, bytes], ...]:
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            return ()
        keys = []
        for line in text.split("\n"):
            if line.strip():
                kid, _, value = line.strip().partition(" ")
                try:
                    keys.append((kid, bytes.fromhex(value)))
                except ValueError:
                    problem = "a line is not 'ID HEX'; restore it from backup"
                    raise KeyStoreError(f"{self.path}: {problem}") from None
        return tuple(keys)

    def _write(self, keys: Sequence[tuple[str, bytes]]) -> None:
        from gateway.onboarding.files import write_private

        write_private(self.path, "".join(f"{kid} {key.hex()}\n" for kid, key in keys).encode("ascii"))

    def current(self) -> str | None:
        keys = self._keys()
        return keys[0][0] if keys else None

    def create(self) -> str:
        """Make the file, unless another process or task made it first: then theirs is
        the one (a link, unlike a rename, never replaces a file that exists)."""
        kid = "kek_" + secrets.token_hex(8)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{kid}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(f"{kid} {AESGCM.generate_key(256).hex()}\n".encode("ascii"))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.path)
        finally:
            os.unlink(tmp)
        current = self.current()
        assert current is not None
        return current

    def add_next(self) -> str:
        kid = "kek_" + secrets.token_hex(8)
        self._write([(kid, AESGCM.generate_key(256)), *self._keys()])
        return kid

    def retire_others(self) -> list[str]:
        keys = self._keys()
        self._write(keys[:1])
        return [kid for kid, _ in keys[1:]]

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        keys = self._keys()
        if not keys:
            raise KeyStoreError(f"{self.path} is missing: run any `gateway` command on this workspace")
        kid, kek = keys[0]
        nonce = os.urandom(NONCE_BYTES)
        return kid, nonce + AESGCM(kek).encrypt(nonce, data_key, aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        kek = dict(self._keys()).get(kek_id)
        if kek is None:
            raise KeyStoreError(
                f"data keys are wrapped with the key-encryption key {kek_id}, which {self.path} does "
                "not hold: copy keys/bank/storage.kek from the instance that made it, or restore it"
            )
        try:
            return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except InvalidTag:
            raise KeyStoreError(
                f"a data key does not unwrap with {kek_id}: the key file or the row was changed"
            ) from None


class KeyRing:
    """Seals and opens stored values; finds, makes, re-wraps and deletes data keys."""

    def __init__(self, wrapper: KeyWrapper) -> None:
        self.wrapper = wrapper
        self._keys: OrderedDict[str, AESGCM] = OrderedDict()
        # The data keys `prepare` found or made, by scope, for the transaction it ran in
        # (with the count of its parts undone then: a savepoint rolled back since may
        # have taken new keys' rows with it).
        self._prepared: weakref.WeakKeyDictionary[Transaction, tuple[int, dict[str, tuple[str, AESGCM]]]] = (
            weakref.WeakKeyDictionary()
        )

    async def prepare(self, tx: Transaction, scopes: Collection[str]) -> None:
        """Find or make the data keys of ``scopes``, for the seals that follow in ``tx``:
        in a few statements for them all (a batch of placements is mostly new debtors,
        each a key to make), not two or three per seal. Kept for ``tx`` only: on SQLite
        it holds the write lock, so no other process deletes a key meanwhile; on
        PostgreSQL a key read at each seal could be deleted just as well after the read.
        A key is made wrapped and used as made; where another process stored one for the
        same scope first, its key is the one (read back and unwrapped)."""
        # Sorted: two transactions making keys of the same scopes insert them in the same
        # order, so neither waits for a unique key the other holds while holding one it wants.
        wanted = sorted(set(scopes))
        found = await self._key_ids(tx, wanted)
        made = {}
        missing = [scope for scope in wanted if scope not in found]
        if missing:
            await self.ready(tx)
            rows, made_at = [], utcnow()
            for scope in missing:
                key_id, raw = sortable_id("dk_", made_at), AESGCM.generate_key(256)
                kek_id, wrapped = self.wrapper.wrap(raw, _aad(key_id))
                made[key_id] = raw
                rows.append((key_id, scope, kek_id, wrapped))
            await tx.executemany(
                "INSERT INTO data_keys (id, scope, kek_id, wrapped) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (scope) DO NOTHING",
                rows,
            )
            found.update(await self._key_ids(tx, missing))  # another process's, where it won
        prepared = self._memo(tx)
        for scope, key_id in found.items():
            new = made.get(key_id)
            key = self._remember(key_id, AESGCM(new)) if new is not None else await self._key(tx, key_id)
            assert key is not None  # in this transaction since it was read
            prepared[scope] = (key_id, key)

    async def _key_ids(self, tx: Transaction, scopes: Sequence[str]) -> dict[str, str]:
        rows = await tx.fetchall_in("SELECT scope, id FROM data_keys WHERE scope IN ({marks})", scopes)
        return {r["scope"]: r["id"] for r in rows}

    async def seal(self, tx: Transaction, scope: str, where: str, value: str) -> str:
        """``value`` encrypted under ``scope``'s data key, bound to ``where`` (column and row)."""
        (sealed,) = await self.seal_all(tx, scope, [(where, value)])
        return sealed

    async def seal_all(self, tx: Transaction, scope: str, values: Sequence[tuple[str, str]]) -> list[str]:
        """`seal` of each ``(where, value)``, the data key looked up once for them all."""
        key_id, key = await self._key_for(tx, scope)
        head = f"{PREFIX}{key_id}:"
        stored = []
        for where, value in values:
            nonce = os.urandom(NONCE_BYTES)
            sealed = key.encrypt(nonce, value.encode("utf-8"), where.encode("utf-8"))
            stored.append(head + pybase64.urlsafe_b64encode(nonce + sealed).decode("ascii"))
        return stored

    async def open(self, tx: Transaction, where: str, stored: str) -> str | None:
        """The value ``seal`` stored; None when it was purged or its data key deleted."""
        if not stored:
            return None
        if not stored.startswith(PREFIX):
            return stored  # written before encryption at rest; the upgrade seals such rows
        key_id, _, data = stored[len(PREFIX) :].partition(":")
        key = await self._key(tx, key_id)
        if key is None:
            return None
        raw = pybase64.urlsafe_b64decode(data)
        try:
            return key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], where.encode("utf-8")).decode("utf-8")
        except InvalidTag:
            raise StorageError(
                f"{where}: the stored value does not decrypt (changed, or moved from another row)"
            ) from None

    async def _key_for(self, tx: Transaction, scope: str) -> tuple[str, AESGCM]:
        # Looked up in each transaction, not cached by scope beyond it: a data key
        # another process deleted (an erasure) must never seal anything again.
        found = self._memo(tx).get(scope)
        if found is None:
            await self.prepare(tx, [scope])
            found = self._memo(tx)[scope]
        return found

    def _memo(self, tx: Transaction) -> dict[str, tuple[str, AESGCM]]:
        """What `prepare` found or made for ``tx``, unless a part of it was undone since."""
        memo = self._prepared.get(tx)
        if memo is None or memo[0] != tx.undone:
            memo = self._prepared[tx] = (tx.undone, {})
        return memo[1]

    async def _key(self, tx: Transaction, key_id: str) -> AESGCM | None:
        key = self._keys.get(key_id)
        if key is not None:
            self._keys.move_to_end(key_id)
            return key
        row = await tx.fetchone("SELECT kek_id, wrapped FROM data_keys WHERE id = ?", (key_id,))
        if row is None:
            return None
        raw = self.wrapper.unwrap(row["kek_id"], bytes(row["wrapped"]), _aad(key_id))
        return self._remember(key_id, AESGCM(raw))

    def _remember(self, key_id: str, key: AESGCM) -> AESGCM:
        self._keys[key_id] = key
        if len(self._keys) > CACHE_KEYS:
            self._keys.popitem(last=False)
        return key

    async def ready(self, tx: Transaction) -> None:
        """Make the first KEK if there is none and no data key needs one; refuse to make
        one beside data keys wrapped with a KEK this instance lacks."""
        if self.wrapper.current() is not None:
            return
        if await tx.fetchval("SELECT COUNT(*) FROM data_keys"):
            raise KeyStoreError(
                "the database holds data keys but this instance has no key-encryption key: copy "
                "keys/bank/storage.kek from the instance that made them (or restore it from backup)"
            )
        self.wrapper.create()

    async def shred(self, tx: Transaction, scope: str) -> int:
        """Delete ``scope``'s data key: what was sealed with it no longer opens anywhere."""
        rows = await tx.fetchall("SELECT id FROM data_keys WHERE scope = ?", (scope,))
        self._memo(tx).pop(scope, None)
        for row in rows:
            self._keys.pop(row["id"], None)
        return await tx.execute("DELETE FROM data_keys WHERE scope = ?", (scope,))

    async def rewrap(self, db: Database) -> tuple[str, int, list[str]]:
        """Rotate the KEK: a new one, every data key wrapped with it in one transaction,
        then the old ones retired. Rows are not touched. (new KEK id, keys, retired ids)"""
        new = self.wrapper.add_next()
        async with db.transaction() as tx:
            rows = await tx.fetchall("SELECT id, kek_id, wrapped FROM data_keys")
            for row in rows:
                plain = self.wrapper.unwrap(row["kek_id"], bytes(row["wrapped"]), _aad(row["id"]))
                kek_id, wrapped = self.wrapper.wrap(plain, _aad(row["id"]))
                await tx.execute(
                    "UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE id = ?", (kek_id, wrapped, row["id"])
                )
        async with db.transaction() as tx:
            # Another instance may have wrapped a key with an old KEK meanwhile: keep them.
            left = await tx.fetchval("SELECT COUNT(*) FROM data_keys WHERE kek_id != ?", (new,))
        return new, len(rows), [] if left else self.wrapper.retire_others()


def _aad(key_id: str) -> bytes:
    return b"gateway data key " + key_id.encode("ascii")
