"""The partner registry: onboarding from profile files, status changes, lookups.

Every check on a profile lives in :func:`check_profile`; adding, updating and the
placement policy all rely on it having passed.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.clock import isotime
from gateway.config import first_error
from gateway.core import Gateway
from gateway.errors import Conflict, GatewayError, NotFound, ProfileError
from gateway.onboarding.keys import new_webhook_secret, secret_id
from gateway.placement.minimize import check_rule
from gateway.placement.seal import keyset_problem
from gateway.plugin.adapter import Adapter
from gateway.plugin.http import endpoint_origin
from gateway.storage import Transaction
from gateway.supervision.redact import check_reason
from schemas.audit import ChangeKind, KeyRetired, PartnerChange, SecretChange, WebhookSecretChanged
from schemas.partner import PARTNER_ID, PartnerProfile


@dataclass(frozen=True)
class PartnerRecord:
    profile: PartnerProfile
    status: str
    status_reason: str
    profile_digest: str
    source: str
    created_at: str
    updated_at: str

    @property
    def id(self) -> str:
        return self.profile.id


def read_profile(path: Path) -> tuple[PartnerProfile, str]:
    """Parse and shape-check a profile file; return it and its digest."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(source, "(file)", exc.strerror or str(exc)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(source, "(syntax)", f"not valid TOML: {exc}") from None
    try:
        profile = PartnerProfile.model_validate(data)
    except ValidationError as exc:
        where, _, problem = first_error(exc).partition(": ")
        raise ProfileError(source, where, problem) from None
    return profile, digest_profile(profile)


def digest_profile(profile: PartnerProfile) -> str:
    """The profile's identity. Fields added to profiles later enter it only when they
    differ from their defaults, so a stored partner's digest survives an upgrade."""
    data = profile.model_dump(mode="json")
    if data["callback_format"] == "standard-webhooks":
        del data["callback_format"]
    if not any(value is not None for value in data["retention"].values()):
        del data["retention"]
    for policy in data["policy"].values():
        for rule in policy["fields"].values():
            if not rule["options"]:
                del rule["options"]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def check_profile(gw: Gateway, profile: PartnerProfile, source: str, today: date) -> None:
    """Everything a profile must satisfy before any package may go to the partner."""

    def fail(field: str, problem: str) -> ProfileError:
        return ProfileError(source, field, problem)

    try:
        endpoint_origin(profile.endpoint)
    except ValueError as exc:
        raise fail("endpoint", str(exc)) from None
    adapter = _check_adapter(gw, profile, fail)
    _check_sealing(gw, profile, fail)
    if profile.callback_format not in gw.callback_formats:
        known = ", ".join(sorted(gw.callback_formats))
        raise fail("callback_format", f"unknown format {profile.callback_format!r} (installed: {known})")
    for purpose in profile.policy:
        for text in adapter.message_texts(purpose):
            breaches = gw.rules.check_template(text, profile.kind)
            if breaches:
                raise fail(f"adapter_config.templates.{purpose}", "; ".join(b.message for b in breaches))
    _check_contract_and_policy(gw, profile, today, fail)


Fail = Callable[[str, str], ProfileError]


def _check_adapter(gw: Gateway, profile: PartnerProfile, fail: Fail) -> Adapter:
    """The profile's adapter, installed, serving its kind, its config valid."""
    cls = gw.adapters.get(profile.adapter)
    if cls is None:
        known = ", ".join(sorted(gw.adapters)) or "none"
        raise fail(
            "adapter",
            f"unknown adapter {profile.adapter!r} (installed: {known}; see `gateway plugins`)",
        )
    if profile.sealing not in cls.sealings:
        raise fail(
            "sealing",
            f"adapter {cls.name!r} cannot deliver {profile.sealing!r} packages "
            f"(it delivers: {', '.join(sorted(cls.sealings))})",
        )
    if profile.kind not in cls.kinds:
        raise fail(
            "kind",
            f"adapter {cls.name!r} serves {', '.join(sorted(cls.kinds))}, not {profile.kind!r}",
        )
    try:
        return cls.for_profile(profile, gw.adapter_resources)
    except ValidationError as exc:
        where, _, problem = first_error(exc).partition(": ")
        field = "adapter_config" if where == "(top level)" else f"adapter_config.{where}"
        raise fail(field, problem) from None
    except ValueError as exc:
        raise fail("adapter_config", str(exc)) from None


def _check_sealing(gw: Gateway, profile: PartnerProfile, fail: Fail) -> None:
    if profile.sealing == "tls-only" and profile.kind not in ("sms", "email"):
        raise fail("sealing", f"tls-only is only for sms and email providers; a {profile.kind} gets 'jwe'")
    if profile.sealing == "jwe":
        unusable = _keyset_problem(gw, profile)
        if unusable:
            raise fail("jwks", unusable)


def _check_contract_and_policy(gw: Gateway, profile: PartnerProfile, today: date, fail: Fail) -> None:
    if profile.contract.valid_to < today:
        raise fail(
            "contract.valid_to",
            f"contract {profile.contract.number} expired on {profile.contract.valid_to}",
        )
    for purpose, policy in profile.policy.items():
        if purpose not in profile.contract.purposes:
            covered = ", ".join(profile.contract.purposes)
            raise fail(
                f"policy.{purpose}",
                f"contract {profile.contract.number} does not cover {purpose!r} (it covers: {covered})",
            )
        for path, rule in policy.fields.items():
            try:
                check_rule(path, rule, gw.transforms)
            except ValueError as exc:
                raise fail(f"policy.{purpose}.fields", str(exc)) from None


def _keyset_problem(gw: Gateway, profile: PartnerProfile) -> str | None:
    """Why packages cannot be encrypted to the partner's key set, or None."""
    if not profile.jwks:
        return "sealing 'jwe' needs the partner's public key set (jwks = \"partners/ID.jwks.json\")"
    try:
        keys = gw.keys.partner_keyset(profile.jwks).as_dict()["keys"]
    except GatewayError as exc:
        return str(exc)
    return keyset_problem(keys)


#: What brings an offboarded partner back (see `add`).
ONBOARD_AGAIN = "onboard it again: `gateway partners add --update PROFILE` with its renewed profile"


async def add(gw: Gateway, path: Path, *, actor: str, update: bool = False) -> tuple[PartnerRecord, str]:
    """Onboard (or with ``update``, re-onboard) a partner; return it and what happened."""
    profile, digest = read_profile(path)
    check_profile(gw, profile, str(path), gw.now().date())
    now = isotime(gw.now())
    async with gw.db.transaction() as tx:
        existing = await _fetch(tx, profile.id)
        returning = existing is not None and existing.status == "offboarded"
        if existing and existing.profile_digest == digest:
            if returning:
                raise Conflict(
                    f"partner {profile.id!r} was offboarded under this very profile; to onboard it "
                    "again, renew the profile (its new contract) and add it with --update"
                )
            return existing, "unchanged"
        if existing and not update:
            raise Conflict(
                f"partner {profile.id!r} exists with a different profile; "
                f"use `gateway partners add --update {path}` to replace it"
            )
        profile_json = profile.model_dump_json()
        if existing:
            # An offboarded partner with a renewed profile is onboarded anew: active again.
            await tx.execute(
                "UPDATE partners SET profile = ?, profile_digest = ?, source = ?, updated_at = ?"
                + (", status = 'active', status_reason = ''" if returning else "")
                + " WHERE id = ?",
                (profile_json, digest, str(path), now, profile.id),
            )
            kind: ChangeKind = "partner_onboarded" if returning else "partner_updated"
        elif await tx.execute(
            "INSERT INTO partners (id, profile, profile_digest, source, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'active', ?, ?) ON CONFLICT (id) DO NOTHING",
            (profile.id, profile_json, digest, str(path), now, now),
        ):
            kind = "partner_onboarded"
        else:
            # Another instance added this partner since our look-up (PostgreSQL: the
            # insert waited for its commit): the same profile is unchanged, another a conflict.
            meanwhile = await _fetch(tx, profile.id)
            if meanwhile is not None and meanwhile.profile_digest == digest:
                return meanwhile, "unchanged"
            raise Conflict(
                f"partner {profile.id!r} was added by another gateway instance at the same "
                "moment, with a different profile; run the command again"
            )
        await gw.record(
            tx,
            [PartnerChange(kind=kind, at=now, actor=actor, partner=profile.id, profile_digest=digest)],
        )
        record = await _fetch(tx, profile.id)
    assert record is not None
    return record, "onboarded again" if returning else "updated" if existing else "added"


async def set_status(gw: Gateway, partner_id: str, status: str, *, reason: str, actor: str) -> PartnerRecord:
    check_reason(reason)
    kind: ChangeKind = "partner_suspended" if status == "suspended" else "partner_reinstated"
    now = isotime(gw.now())
    async with gw.db.transaction() as tx:
        record = await _fetch(tx, partner_id, lock=True)
        if record is None:
            raise NotFound(f"no partner {partner_id!r} (see `gateway partners list`)")
        if record.status == status:
            raise Conflict(f"partner {partner_id!r} is already {status}")
        if record.status == "offboarded":
            raise Conflict(f"partner {partner_id!r} is offboarded; {ONBOARD_AGAIN}")
        await tx.execute(
            "UPDATE partners SET status = ?, status_reason = ?, updated_at = ? WHERE id = ?",
            (status, reason, now, partner_id),
        )
        await gw.record(
            tx,
            [
                PartnerChange(
                    kind=kind,
                    at=now,
                    actor=actor,
                    partner=partner_id,
                    profile_digest=record.profile_digest,
                    reason=reason,
                )
            ],
        )
        updated = await _fetch(tx, partner_id)
    assert updated is not None
    return updated


async def get(gw: Gateway, partner_id: str) -> PartnerRecord:
    async with gw.db.transaction() as tx:
        return await fetch(tx, partner_id)


async def list_all(gw: Gateway) -> list[PartnerRecord]:
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall("SELECT * FROM partners ORDER BY id")
    return [_record(row) for row in rows]


async def _fetch(
    tx: Transaction, partner_id: str, *, lock: bool = False, share: bool = False
) -> PartnerRecord | None:
    """The partner's row; ``lock`` for a status change (concurrent changes take turns),
    ``share`` for work that relies on the status and profile until it commits (a
    change waits for it; such readers do not wait for each other)."""
    suffix = tx.for_update if lock else tx.for_share if share else ""
    row = await tx.fetchone(f"SELECT * FROM partners WHERE id = ?{suffix}", (partner_id,))
    return None if row is None else _record(row)


#: Parsed profiles by their stored JSON: the partner row is read in every transaction
#: (status and profile may change at any time) but parsed only when the profile changed.
_PROFILES: dict[str, PartnerProfile] = {}


def _profile(text: str) -> PartnerProfile:
    profile = _PROFILES.get(text)
    if profile is None:
        if len(_PROFILES) >= 256:
            _PROFILES.clear()
        profile = _PROFILES[text] = PartnerProfile.model_validate_json(text)
    return profile


async def fetch(tx: Transaction, partner_id: str, *, share: bool = False) -> PartnerRecord:
    """The partner as it stands in this transaction (``share``: and stays, see `_fetch`)."""
    record = await _fetch(tx, partner_id, share=share)
    if record is None:
        raise NotFound(f"no partner {partner_id!r} (see `gateway partners list`)")
    return record


def could_be_id(text: str) -> bool:
    """Whether ``text`` has the form of a partner id (before it names a file or a row)."""
    return re.fullmatch(PARTNER_ID, text) is not None


async def find(gw: Gateway, partner_id: str) -> PartnerRecord | None:
    """The partner, or None if there is none by that id."""
    if not could_be_id(partner_id):
        return None
    async with gw.db.transaction() as tx:
        return await _fetch(tx, partner_id)


def _record(row: dict[str, Any]) -> PartnerRecord:
    return PartnerRecord(
        profile=_profile(row["profile"]),
        status=row["status"],
        status_reason=row["status_reason"],
        profile_digest=row["profile_digest"],
        source=row["source"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# -- signing keys and webhook secrets: each change is audited before the files change ---


async def retire_signing_key(gw: Gateway, kid: str, *, compromised: bool, actor: str) -> str | None:
    """Retire one of the bank's signing keys (not the one in use): it stays published
    until every package it may have signed has expired (`published_until`), then is
    left out; a compromised one is taken out at once. Returns until when it is
    published (None: no longer). The entry first and the key files last: if the entry
    cannot be written, nothing is retired."""
    gw.keys.check_retirable(kid, compromised=compromised)
    now = gw.now()
    async with gw.db.transaction() as tx:
        until = None if compromised else isotime(await published_until(tx, now))
        entry = KeyRetired(
            at=isotime(now), actor=actor, key="bank-signing", kid=kid, compromised=compromised,
            published_until=until,
        )  # fmt: skip
        await gw.record(tx, [entry])
        gw.keys.retire(kid, until)
    return until


async def published_until(tx: Transaction, now: datetime) -> datetime:
    """When every package a key retired ``now`` may have signed has expired: the longest
    package lifetime of any partner from now, or the latest expiry of a stored package
    if later (a lifetime may have been shortened since)."""
    rows = await tx.fetchall("SELECT profile FROM partners")
    days = max((_profile(row["profile"]).package_ttl_days for row in rows), default=0)
    until = now + timedelta(days=days)
    latest = await tx.fetchval("SELECT MAX(expires_at) FROM packages")
    return max(until, datetime.fromisoformat(latest.replace("Z", "+00:00"))) if latest else until


async def add_webhook_secret(gw: Gateway, partner_id: str, *, actor: str) -> tuple[Path, str]:
    """A new whsec_ secret for the partner's v1 callbacks (older ones stay valid until
    removed); returns the file it was added to and its id."""
    secret = new_webhook_secret()
    async with gw.db.transaction() as tx:
        await fetch(tx, partner_id)
        await _secrets_changed(gw, tx, "webhook_secret_added", partner_id, [secret_id(secret)], "", actor)
        path = gw.keys.add_webhook_secret(partner_id, secret)
    return path, secret_id(secret)


async def webhook_secret_ids(gw: Gateway, partner_id: str) -> list[str]:
    """The ids of the partner's webhook secrets, oldest first."""
    await get(gw, partner_id)
    return gw.keys.webhook_secret_ids(partner_id)


async def remove_webhook_secrets(
    gw: Gateway, partner_id: str, ids: Sequence[str] | None, *, reason: str, actor: str
) -> list[str]:
    """Remove the partner's webhook secrets of these ids (None: every one); return the
    ids removed. A callback signed with a removed secret is refused from then on."""
    check_reason(reason)
    async with gw.db.transaction() as tx:
        await fetch(tx, partner_id)
        return await remove_secrets_in(gw, tx, partner_id, ids, reason=reason, actor=actor)


async def remove_secrets_in(
    gw: Gateway, tx: Transaction, partner_id: str, ids: Sequence[str] | None, *, reason: str, actor: str
) -> list[str]:
    """`remove_webhook_secrets` in the caller's transaction (offboarding uses it)."""
    known = gw.keys.webhook_secret_ids(partner_id)
    unknown = [i for i in ids or () if i not in known]
    if unknown:
        raise NotFound(
            f"no webhook secret {', '.join(unknown)} for {partner_id!r} "
            f"(see `gateway partners webhook-secret-list {partner_id}`)"
        )
    chosen = known if ids is None else [i for i in known if i in ids]
    if chosen:
        await _secrets_changed(gw, tx, "webhook_secret_removed", partner_id, chosen, reason, actor)
        gw.keys.remove_webhook_secrets(partner_id, chosen)
    return chosen


async def _secrets_changed(
    gw: Gateway, tx: Transaction, kind: SecretChange, partner_id: str, ids: list[str], reason: str, actor: str
) -> None:
    entry = WebhookSecretChanged(
        kind=kind, at=isotime(gw.now()), actor=actor, partner=partner_id, reason=reason, secret_ids=ids
    )
    await gw.record(tx, [entry])
