"""The upgrade step that encrypts what an older gateway stored in clear text.

Run once, inside the migrating transaction (`gateway.storage.migrations`): each
report's free text is screened and its original sealed (while the packages it is
screened against are still readable), then each package's ``signed`` and ``sealed``.

It runs at its version (12), on that version's tables: there ``signed`` and ``sealed``
are still columns of ``packages`` (version 16 moves them to ``package_bodies``), so the
statements here name them there, and keep doing so.
"""

from __future__ import annotations

from gateway.lifecycle.columns import seal_package
from gateway.lifecycle.screen import stored_event
from gateway.storage import Transaction
from gateway.storage.atrest import PREFIX, KeyRing
from gateway.storage.migrations import DataStepFunction

BATCH = 500
#: `gateway.lifecycle.screen.LATEST_SIGNED` on the tables of version 12.
_LATEST_SIGNED = (
    "SELECT id, signed FROM packages WHERE partner_id = ? AND case_ref = ? AND purpose != ?"
    " ORDER BY created_at DESC LIMIT 1"
)


def data_steps(keyring: KeyRing) -> dict[str, DataStepFunction]:
    """The upgrade steps of the personal data's tables, by their names in the migrations."""

    async def encrypt_at_rest(tx: Transaction) -> None:
        await keyring.ready(tx)
        await _events(keyring, tx)
        await _packages(keyring, tx)

    return {"encrypt-at-rest": encrypt_at_rest}


async def _events(keyring: KeyRing, tx: Transaction) -> None:
    last = 0
    while rows := await tx.fetchall(
        "SELECT id, partner_id, webhook_id, case_ref, subject_token, body FROM events"
        " WHERE id > ? ORDER BY id LIMIT ?",
        (last, BATCH),
    ):
        for row in rows:
            body, original = await stored_event(
                keyring, tx, row["partner_id"], row["webhook_id"], row, row["body"], latest=_LATEST_SIGNED
            )
            if original is not None:
                await tx.execute(
                    "UPDATE events SET body = ?, original = ? WHERE id = ?", (body, original, row["id"])
                )
        last = rows[-1]["id"]


async def _packages(keyring: KeyRing, tx: Transaction) -> None:
    last = ""
    while rows := await tx.fetchall(
        "SELECT id, subject_token, signed, sealed FROM packages WHERE id > ? ORDER BY id LIMIT ?",
        (last, BATCH),
    ):
        for row in rows:
            if row["signed"].startswith(PREFIX):
                continue
            signed, sealed = await seal_package(
                keyring, tx, row["subject_token"], row["id"], row["signed"], row["sealed"]
            )
            await tx.execute(
                "UPDATE packages SET signed = ?, sealed = ? WHERE id = ?", (signed, sealed, row["id"])
            )
        last = rows[-1]["id"]
