"""The stored columns that hold personal data in clear text before encryption, and the
associated data that binds each sealed value to its column and row.

- ``package_bodies.signed``: the signed JWS, the minimized case in base64url;
- ``package_bodies.sealed``: the JWE sent to the partner (for ``tls-only`` partners, the
  same JWS as ``signed``);
- ``events.original``: a partner's report as it came, free text unscreened.

The two package columns were ``packages.signed`` and ``packages.sealed`` until schema
version 16 moved them to a table of their own; their associated data still names
``packages``, unchanged, so that values sealed before the move open after it.
"""

from __future__ import annotations

from typing import Any

from gateway.storage import Transaction
from gateway.storage.atrest import KeyRing


def signed_at(package_id: str) -> str:
    return f"packages.signed {package_id}"


def sealed_at(package_id: str) -> str:
    return f"packages.sealed {package_id}"


def original_at(partner_id: str, webhook_id: str | None) -> str:
    return f"events.original {partner_id} {webhook_id}"


async def seal_package(
    keyring: KeyRing, tx: Transaction, subject: str, package_id: str, signed: str, sealed: str
) -> tuple[str, str]:
    """The ``signed`` and ``sealed`` columns of a package, encrypted under its subject's key."""
    signed, sealed = await keyring.seal_all(
        tx, subject, [(signed_at(package_id), signed), (sealed_at(package_id), sealed)]
    )
    return signed, sealed


async def open_package(keyring: KeyRing, tx: Transaction, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its ``signed`` and ``sealed`` in clear text (None where purged)."""
    opened = dict(row)
    for column, where in (("signed", signed_at), ("sealed", sealed_at)):
        if column in row:
            opened[column] = await keyring.open(tx, where(row["id"]), row[column])
    return opened
