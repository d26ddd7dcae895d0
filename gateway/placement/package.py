"""A package sealed for one partner: the claims the partner receives (`schemas.package`),
signed by the bank's custody and, for ``jwe`` partners, encrypted to the partner's key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gateway.clock import sortable_id
from gateway.core import Gateway
from gateway.onboarding.custody import PackageSigner
from gateway.placement.seal import Recipient, choose_encryption_key, encrypt, sign
from schemas.package import PACKAGE_SCHEMA
from schemas.partner import PartnerProfile


# Slots, not frozen: one is made for every package sealed, and a frozen dataclass sets each
# field through object.__setattr__ (see `gateway.supervision.base.Contact`).
@dataclass(slots=True)
class Sealed:
    package_id: str
    claims: dict[str, Any]
    signed: str
    sealed: str
    package_digest: str
    """SHA-256 of ``sealed``, what the partner receives: random per package (the JWE's
    key and IV; the signature), so unlike a digest of the data it confirms nothing about
    a guessed record, and the partner's copy checks it."""


@dataclass(frozen=True)
class SealingKeys:
    """What seals a partner's packages: the bank's signer, and the partner's key for
    ``jwe`` partners (None for others)."""

    signer: PackageSigner
    recipient: Recipient | None


def sealing_keys(gw: Gateway, profile: PartnerProfile) -> SealingKeys:
    """The keys as the key files stand now (each look-up checks its file, so a rotation
    or a partner's new key set counts from the next look-up): once per batch of packages."""
    recipient = None
    if profile.sealing == "jwe":
        assert profile.jwks is not None  # checked at onboarding
        recipient = gw.keys.from_partner_keyset(profile.jwks, "encryption key", choose_encryption_key)
    return SealingKeys(gw.custody.package_signer(), recipient)


def seal_package(
    gw: Gateway,
    profile: PartnerProfile,
    purpose: str,
    case_ref: str,
    data: dict[str, Any],
    *,
    test: bool = False,
    keys: SealingKeys | None = None,
) -> Sealed:
    """Sign as the bank and, for ``jwe`` partners, encrypt to the partner's key (an
    ``openpgp`` partner's adapter encrypts the claims itself, in its files). A go-live
    test package (``test``) carries the claim ``"test": true``; others have no such claim.
    ``keys``: `sealing_keys` of this profile, when the caller seals several packages."""
    now = gw.now()
    package_id = sortable_id("pkg_", now)
    iat = int(now.timestamp())
    # `schemas.package.PackageClaims` as JSON, built as such: its fields are plain values
    # and ``data`` is JSON already (what transforms give), so a model would only copy it.
    claims: dict[str, Any] = {
        "iss": gw.settings.bank_id,
        "aud": profile.id,
        "iat": iat,
        "exp": iat + profile.package_ttl_days * 86400,
        "jti": package_id,
        "purpose": purpose,
        "schema": PACKAGE_SCHEMA,
        "case_ref": case_ref,
        "data": data,
    }
    if test:
        claims["test"] = True
    keys = keys or sealing_keys(gw, profile)
    signed = sign(claims, keys.signer)
    sealed = signed if keys.recipient is None else encrypt(signed, keys.recipient)
    digest = "sha256:" + hashlib.sha256(sealed.encode("ascii")).hexdigest()
    return Sealed(package_id, claims, signed, sealed, digest)
