"""Placement: policy check, minimize, seal, and write to the outbox with its audit entry.

The package row and its disclosure entry are written in one transaction before anything
is sent, so a crash loses nothing and the log never misses a disclosure.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway import registry
from gateway.audit import log as audit_log
from gateway.core import Gateway, isotime
from gateway.errors import NotFound, PolicyViolation
from gateway.minimize import disclosed_fields, minimize
from gateway.seal import choose_encryption_key, encrypt, sign, verify_signed
from schemas.audit import DisclosedField, Disclosure
from schemas.case import Case
from schemas.package import PACKAGE_SCHEMA, PackageClaims


@dataclass(frozen=True)
class Placement:
    package_id: str
    partner_id: str
    purpose: str
    case_ref: str
    claims: dict[str, Any]


def subject_token(gw: Gateway, case: Case) -> str:
    """The audit-scope pseudonym of the debtor, the key of a PIPL access report."""
    return gw.keys.pseudonymizer("audit").token(
        f"{case.debtor.id_type}:{case.debtor.id_number}", prefix="subj_"
    )


def case_token(gw: Gateway, case_id: str) -> str:
    return gw.keys.pseudonymizer("audit").token(f"case:{case_id}", prefix="case_")


def check_policy(record: registry.PartnerRecord, purpose: str, gw: Gateway) -> None:
    profile = record.profile
    if record.status != "active":
        raise PolicyViolation(
            "partner-active",
            f"partner {profile.id!r} is {record.status} ({record.status_reason or 'no reason given'}); "
            f"`gateway partners reinstate {profile.id}` first",
        )
    today = gw.now().date()
    if not profile.contract.covers(purpose, today):
        contract = profile.contract
        raise PolicyViolation(
            "contract",
            f"contract {contract.number} ({contract.valid_from} to {contract.valid_to}, "
            f"purposes {', '.join(contract.purposes)}) does not cover {purpose!r} on {today}",
        )
    if purpose not in profile.policy:
        raise PolicyViolation(
            "field-policy",
            f"profile {profile.id!r} has no [policy.{purpose}] field list; nothing may be sent",
        )


async def place(gw: Gateway, case: Case, partner_id: str, purpose: str, *, actor: str) -> Placement:
    record = await registry.get(gw, partner_id)
    check_policy(record, purpose, gw)
    profile = record.profile
    policy = profile.policy[purpose]  # type: ignore[index]
    tokens = gw.keys.pseudonymizer(f"partner:{partner_id}")
    now = gw.now()
    package_id = "pkg_" + uuid.uuid4().hex
    case_ref = tokens.token(f"case:{case.case_id}", prefix="case_")
    claims = PackageClaims(
        iss=gw.settings.bank_id,
        aud=partner_id,
        iat=int(now.timestamp()),
        exp=int((now + timedelta(days=profile.package_ttl_days)).timestamp()),
        jti=package_id,
        purpose=purpose,
        schema=PACKAGE_SCHEMA,
        case_ref=case_ref,
        data=minimize(case, policy, tokens),
    ).model_dump(mode="json", by_alias=True)
    signed = sign(claims, gw.keys.signing_key())
    if profile.sealing == "jwe":
        assert profile.jwks is not None  # checked at onboarding
        sealed = encrypt(signed, choose_encryption_key(gw.keys.partner_keyset(profile.jwks)))
    else:
        sealed = signed
    fields = disclosed_fields(policy)
    payload_digest = (
        "sha256:" + hashlib.sha256(json.dumps(claims["data"], sort_keys=True).encode()).hexdigest()
    )
    at = isotime(now)
    entry = Disclosure(
        at=at,
        actor=actor,
        package_id=package_id,
        partner=partner_id,
        purpose=purpose,
        legal_basis=policy.legal_basis,
        subject=subject_token(gw, case),
        case=case_token(gw, case.case_id),
        fields=[DisclosedField(**f) for f in fields],
        payload_digest=payload_digest,
        sealing=profile.sealing,
    )
    async with gw.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO packages (id, partner_id, case_id, case_ref, subject_token, purpose, sealing,"
            " sealed, signed, payload_digest, fields, created_at, expires_at, state, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
            (
                package_id,
                partner_id,
                case.case_id,
                case_ref,
                entry.subject,
                purpose,
                profile.sealing,
                sealed,
                signed,
                payload_digest,
                json.dumps(fields),
                at,
                isotime(now + timedelta(days=profile.package_ttl_days)),
                at,
            ),
        )
        await audit_log.append(tx, [entry])
    return Placement(package_id, partner_id, purpose, case_ref, claims)


async def show(gw: Gateway, package_id: str) -> dict[str, Any]:
    """The package as the partner will read it, from the signed token itself."""
    async with gw.db.transaction() as tx:
        row = await tx.fetchone("SELECT * FROM packages WHERE id = ?", (package_id,))
    if row is None:
        raise NotFound(f"no package {package_id!r} (see `gateway package list`)")
    claims = verify_signed(row["signed"], gw.keys.public_jwks())
    return {
        "package_id": row["id"],
        "partner": row["partner_id"],
        "case_id": row["case_id"],
        "purpose": row["purpose"],
        "state": row["state"],
        "sealing": row["sealing"],
        "created_at": row["created_at"],
        "fields": json.loads(row["fields"]),
        "claims": claims,
    }


async def list_packages(
    gw: Gateway, partner_id: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    sql = "SELECT id, partner_id, case_id, purpose, state, attempts, created_at FROM packages"
    params: tuple[Any, ...] = ()
    if partner_id:
        sql += " WHERE partner_id = ?"
        params = (partner_id,)
    sql += " ORDER BY created_at DESC, id LIMIT ?"
    async with gw.db.transaction() as tx:
        return await tx.fetchall(sql, (*params, limit))
