"""Changing the bank's keys, and the audit entries that record it: rotating the
package-signing key, setting the OpenPGP key."""

from __future__ import annotations

from typing import Literal

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import GatewayError, KeyStoreError
from gateway.onboarding import openpgp
from gateway.onboarding.custody import Rotation
from gateway.storage.base import Lock
from schemas.audit import KeyRotated, OpenPGPKeySet


async def rotate_signing_key(gw: Gateway, alg: str | None, *, actor: str) -> Rotation:
    """Replace the package-signing key (the old public key stays published)."""
    rotation = gw.custody.prepare_rotation(alg)
    entry = KeyRotated(
        at=isotime(gw.now()),
        actor=actor,
        key="bank-signing",
        old_kid=rotation.old_kid,
        new_kid=rotation.new_kid,
    )
    async with gw.db.transaction() as tx:
        # The entry first and the key last: if the entry cannot be written, the key is
        # not rotated; the rotation never goes unrecorded.
        await gw.record(tx, [entry])
        rotation.install()
    return rotation


async def set_openpgp_key(
    gw: Gateway, key: openpgp.BankKey, how: Literal["generated", "imported"], *, replace: bool, actor: str
) -> OpenPGPKeySet:
    """Install ``key`` as the bank's OpenPGP key, recorded in the audit log; an existing
    key is replaced only with ``replace``. Nothing is changed unless both are done: the
    entry is appended first and the files written in its transaction, and put back as
    they were if the transaction does not commit."""
    files = openpgp.KeyFiles(gw.keys, key)
    entry: OpenPGPKeySet | None = None
    try:
        async with gw.db.transaction() as tx:
            # What is in place is read under the lock every append takes: two commands
            # at once cannot both find no key, or both replace the same one.
            await tx.take_turns(Lock.AUDIT_LOG)
            openpgp.refuse_existing(gw.keys, replace)
            replaced, previous = openpgp.key_in_place(gw.keys)
            entry = OpenPGPKeySet(
                at=isotime(gw.now()),
                actor=actor,
                fingerprint=key.fingerprint,
                key="bank-openpgp",
                kind="openpgp_key_generated" if how == "generated" else "openpgp_key_imported",
                previous_fingerprint=previous,
                replaced=replaced,
            )
            await gw.record(tx, [entry])
            files.install()
    except BaseException as exc:
        if entry is None:  # refused, or the database could not be reached: nothing to undo
            raise
        failure = _undo(files, key, exc)
        if isinstance(exc, GatewayError | OSError) or failure:
            raise KeyStoreError(failure or _not_set(files, entry, exc)) from None
        raise
    return entry


def _undo(files: openpgp.KeyFiles, key: openpgp.BankKey, exc: BaseException) -> str | None:
    """Put the previous key files back; what to do if that fails too."""
    try:
        files.undo()
    except OSError as again:
        return (
            f"the OpenPGP key {key.fingerprint} was not recorded in the audit log ({exc}), and the "
            f"previous key files could not be put back ({again}): restore {files.dir} from backup"
        )
    return None


def _not_set(files: openpgp.KeyFiles, entry: OpenPGPKeySet, exc: BaseException) -> str:
    new, old = entry.fingerprint, entry.previous_fingerprint
    still = f"the bank's OpenPGP key is still {old}" if old else "the bank's OpenPGP key is unchanged"
    if not entry.replaced:
        still = "the bank still has no OpenPGP key"
    if not files.started:
        return f"the audit log could not record the new OpenPGP key {new} ({exc}), so it was not set; {still}"
    return f"the new OpenPGP key {new} was not set ({exc}); nothing was recorded and {still}"
