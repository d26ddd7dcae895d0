"""The go-live test of a partner (``gateway partners test ID``), run from the bank.

It plays the bank's side of a first exchange and says what happened at each step:

1. the partner: onboarded, receiving sealed packages, holding a way to sign reports;
2. a test package: the synthetic case minimized by the partner's policy, claims marked
   ``"test": true``, sealed to the partner's real key and delivered by its adapter;
3. the partner's signed test report on it: any status event quoting the package's
   ``case_ref``, signed ``v1`` or ``v1a`` like every report, taken in without touching
   any case (`take_report`, called by the inbound pipeline). A report refused for its
   signature while a test waits ends the test at once, saying what was wrong
   (`refused`, called by the callback route).

Every step is audited as a ``partner_test`` entry. The test's state lives in the
``partner_tests`` table, so the report may reach any gateway instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import Conflict, DeliveryError
from gateway.inbound.webhooks import Signed
from gateway.onboarding import registry
from gateway.onboarding.kit.sample import test_package
from gateway.placement.package import Sealed
from gateway.plugin.adapter import OutboundPackage
from gateway.storage import Transaction
from schemas.audit import PartnerTest
from schemas.partner import PartnerProfile

#: How often the command looks for the partner's report, in seconds.
POLL_SECONDS = 0.2
#: Partner ids whose refused reports wait at most to be matched with tests.
MOST_PENDING = 64
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    text: str


Report = Callable[[Step], None]


async def run(
    gw: Gateway, partner_id: str, purpose: str | None, *, timeout: float, actor: str, report: Report
) -> bool:
    """Run the test, telling each step to ``report`` as it ends; True if it passed."""
    ready = await _check_partner(gw, partner_id, purpose)
    report(ready)
    if not ready.ok:
        return False
    profile = (await registry.get(gw, partner_id)).profile
    package = test_package(gw, profile, purpose or next(iter(profile.policy)))
    await _start(gw, profile, package, timeout, actor)
    sent = await _deliver(gw, profile, package)
    report(sent)
    if not sent.ok:
        await _finish(gw, profile.id, package, f"failed: {sent.text}", actor)
        return False
    answer = await _wait(gw, package.package_id, timeout)
    report(answer)
    await _finish(gw, profile.id, package, ("passed: " if answer.ok else "failed: ") + answer.text, actor)
    return answer.ok


async def _check_partner(gw: Gateway, partner_id: str, purpose: str | None) -> Step:
    record = await registry.get(gw, partner_id)
    profile = record.profile
    problem = None
    if record.status == "offboarded":
        problem = f"{partner_id} is offboarded"
    elif profile.sealing == "tls-only":
        problem = f"{partner_id} is {profile.sealing}: it receives messages, not sealed packages"
    elif profile.sealing != "jwe":
        problem = f"{partner_id} is {profile.sealing}: the go-live check is for partners opening JWE packages"
    elif purpose is not None and purpose not in profile.policy:
        problem = f"{partner_id}'s profile has no [policy.{purpose}] (it has: {', '.join(profile.policy)})"
    signing = _signing_means(gw, profile)
    if problem is None and not signing:
        problem = (
            f"{partner_id} cannot sign reports yet: no whsec_ secret (`gateway partners webhook-secret "
            f"{partner_id}`) and no Ed25519 key (use sig) in its key set"
        )
    if problem:
        return Step("partner", False, problem)
    return Step("partner", True, f"{partner_id} ({record.status}, {profile.adapter}) can sign with {signing}")


def _signing_means(gw: Gateway, profile: PartnerProfile) -> str:
    secrets = len(gw.keys.webhook_secrets(profile.id))
    keys = len(gw.keys.partner_signature_keys(profile.jwks))
    means = ([f"v1 ({secrets} secret(s))"] if secrets else []) + ([f"v1a ({keys} key(s))"] if keys else [])
    return " or ".join(means)


async def _start(gw: Gateway, profile: PartnerProfile, package: Sealed, timeout: float, actor: str) -> None:
    """Record the test, waiting for its report, before the package leaves."""
    now = gw.now()
    async with gw.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO partner_tests (package_id, partner_id, case_ref, package_digest, started_at,"
            " deadline, state) VALUES (?, ?, ?, ?, ?, ?, 'waiting')",
            (
                package.package_id, profile.id, package.claims["case_ref"], package.package_digest,
                isotime(now), isotime(now + timedelta(seconds=profile.limits.timeout + timeout)),
            ),
        )
        outcome = f"test package of synthetic data for {package.claims['purpose']} sent to {profile.endpoint}"
        await gw.record(tx, [_entry(gw, profile.id, package, "package_sent", outcome, actor)])
    await gw.db.sync()  # the test and its audit entry on the disk before the package leaves


async def _deliver(gw: Gateway, profile: PartnerProfile, package: Sealed) -> Step:
    adapter = gw.adapters[profile.adapter].for_profile(profile)
    outbound = OutboundPackage(
        package.package_id, package.claims["case_ref"], package.claims["purpose"], profile.sealing,
        package.sealed, package.claims,
    )
    try:
        receipt = await adapter.deliver(outbound)
    except DeliveryError as exc:
        return Step("package", False, f"the endpoint did not take the test package: {exc}")
    finally:
        await adapter.aclose()
    reference = f", its reference {receipt.partner_ref}" if receipt.partner_ref else ""
    return Step(
        "package",
        True,
        f"{package.package_id} delivered to {profile.endpoint} ({receipt.detail}{reference}); "
        f"case_ref {package.claims['case_ref']}",
    )


async def _wait(gw: Gateway, package_id: str, timeout: float) -> Step:
    """The partner's report, as the route that took or refused it left the test."""
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() >= deadline:
            await _end(gw, package_id, f"no signed report on the test package within {timeout:g} s")
        async with gw.db.transaction() as tx:
            row = await tx.fetchone(_STATE, (package_id,))
        assert row is not None
        if row["state"] != "waiting":
            return Step("report", row["state"] == "passed", row["outcome"])
        await asyncio.sleep(POLL_SECONDS)


_STATE = "SELECT state, outcome FROM partner_tests WHERE package_id = ?"


async def _end(gw: Gateway, package_id: str, outcome: str) -> None:
    """Fail the test for ``outcome``, unless a report settled it first."""
    async with gw.db.transaction() as tx:
        await tx.execute(
            "UPDATE partner_tests SET state = 'failed', outcome = ?"
            " WHERE package_id = ? AND state = 'waiting'",
            (outcome, package_id),
        )


async def _finish(gw: Gateway, partner_id: str, package: Sealed, outcome: str, actor: str) -> None:
    await _end(gw, package.package_id, outcome)
    async with gw.db.transaction() as tx:
        await gw.record(tx, [_entry(gw, partner_id, package, "finished", outcome, actor)])


def _entry(gw: Gateway, partner_id: str, package: Sealed | dict[str, Any], step: Any, outcome: str,
           actor: str) -> PartnerTest:
    package_id, digest = (
        (package.package_id, package.package_digest)
        if isinstance(package, Sealed)
        else (package["package_id"], package["package_digest"])
    )
    return PartnerTest(
        at=isotime(gw.now()), actor=actor, partner=partner_id, package_id=package_id,
        package_digest=digest, step=step, outcome=outcome,
    )


async def take_report(
    gw: Gateway, tx: Transaction, entries: list[Any], partner_id: str, event: Any
) -> bool:
    """Take in a report on a test package, if ``event`` names one of the partner's
    (False if not: no such test). The report touches no case and no rule: the test
    passes and the step is audited. A report on a test that is over is refused (409)."""
    test = await tx.fetchone(
        f"SELECT * FROM partner_tests WHERE partner_id = ? AND case_ref = ?{tx.for_update}",
        (partner_id, event.case_ref),
    )
    if test is None:
        return False
    if test["state"] != "waiting":
        raise Conflict(f"the go-live test of case_ref {event.case_ref!r} is over; the bank starts a new one")
    outcome = f"a {event.type!r} report on the test package came, validly signed"
    await tx.execute(
        "UPDATE partner_tests SET state = 'passed', outcome = ? WHERE package_id = ?",
        (outcome, test["package_id"]),
    )
    entries.append(_entry(gw, partner_id, test, "callback", outcome, f"partner:{partner_id}"))
    return True


@dataclass
class _Refusals:
    """Refused reports waiting to be matched with go-live tests, by partner id."""

    pending: dict[str, tuple[Signed | None, str]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


_WAITING = "SELECT DISTINCT partner_id FROM partner_tests WHERE state = 'waiting'"
_REFUSALS: weakref.WeakKeyDictionary[Gateway, _Refusals] = weakref.WeakKeyDictionary()


def refused(gw: Gateway, partner_id: str, signed: Signed | None, refusal: str) -> None:
    """Tell a waiting go-live test of ``partner_id`` that a report was refused. Called
    on every refused callback, before anyone is authenticated, so it neither waits nor
    reads: the refusal is noted for one background task, which reads the tests that wait
    once per batch of refusals (at most `MOST_PENDING` partner ids) and ends theirs."""
    if not registry.could_be_id(partner_id):
        return
    refusals = _REFUSALS.setdefault(gw, _Refusals())
    if len(refusals.pending) < MOST_PENDING:
        refusals.pending.setdefault(partner_id, (signed, refusal))
    if refusals.task is None or refusals.task.done():
        refusals.task = asyncio.get_running_loop().create_task(_match(gw, refusals))


async def _match(gw: Gateway, refusals: _Refusals) -> None:
    try:
        while refusals.pending:
            batch, refusals.pending = refusals.pending, {}
            async with gw.db.transaction() as tx:
                rows = await tx.fetchall(_WAITING)
            for partner_id in {r["partner_id"] for r in rows} & set(batch):
                signed, refusal = batch[partner_id]
                await note_refusal(gw, partner_id, await diagnose(gw, partner_id, signed, refusal))
    except Exception as exc:  # the gateway closing meanwhile, a database fault: the test times out
        log.warning("go-live test: a refused report was not matched: %s", type(exc).__name__)


async def note_refusal(gw: Gateway, partner_id: str, why: str) -> None:
    """End the partner's waiting test: its report was refused for ``why``."""
    async with gw.db.transaction() as tx:
        test = await tx.fetchone(
            "SELECT * FROM partner_tests WHERE partner_id = ? AND state = 'waiting'"
            f" ORDER BY started_at DESC LIMIT 1{tx.for_update}",
            (partner_id,),
        )
        if test is None:
            return
        outcome = f"a report came but was refused: {why}"
        await tx.execute(
            "UPDATE partner_tests SET state = 'failed', outcome = ? WHERE package_id = ?",
            (outcome, test["package_id"]),
        )
        await gw.record(tx, [_entry(gw, partner_id, test, "callback", outcome, "system")])


async def diagnose(gw: Gateway, partner_id: str, signed: Signed | None, refusal: str) -> str:
    """What was wrong with a refused report, for the bank's operator (never sent back)."""
    if signed is None:
        return refusal
    if not signed.v1 and not signed.v1a:
        return "webhook-signature held no v1 signature of 32 bytes nor v1a signature of 64 bytes (base64)"
    record = await registry.find(gw, partner_id)
    problems = []
    if signed.v1:
        secrets = len(gw.keys.webhook_secrets(partner_id))
        problems.append(
            f"{len(signed.v1)} v1 signature(s) matched none of the partner's {secrets} whsec_ secret(s) "
            "(a wrong secret, or other id, timestamp or body bytes than those sent)"
            if secrets
            else "v1 signatures came, but no whsec_ secret was issued to the partner"
        )
    if signed.v1a:
        keys = len(gw.keys.partner_signature_keys(record.profile.jwks if record else None))
        problems.append(
            f"{len(signed.v1a)} v1a signature(s) matched none of the partner's {keys} Ed25519 key(s)"
            if keys
            else "v1a signatures came, but the partner's key set holds no Ed25519 key (use sig)"
        )
    return "; ".join(problems)
