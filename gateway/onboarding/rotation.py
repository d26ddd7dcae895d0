"""Rotating the bank's package-signing key, and the audit entry that records it."""

from __future__ import annotations

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.onboarding.custody import Rotation
from schemas.audit import KeyRotated


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
