"""Synthetic packages and callbacks: the kit's samples and the go-live test's package.

Nothing here touches a real case or a partner's real key: the case is synthetic
(``templates/synthetic-case.json``), its pseudonyms come from a throwaway key, and the
kit's samples are sealed to test keys made for the kit, whose private halves go with
it, marked test-only. Only the bank's signature is real, so that the partner checks it
with the bank's published key set exactly as it will on real packages.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey

from gateway.core import Gateway
from gateway.inbound import webhooks
from gateway.onboarding.jwk import JWK, generate_encryption_key
from gateway.onboarding.pseudonyms import Pseudonymizer
from gateway.placement.minimize import minimize
from gateway.placement.package import Sealed, seal_package
from gateway.placement.seal import encrypt
from schemas.case import Case
from schemas.partner import PartnerProfile

TEMPLATES = Path(__file__).with_name("templates")
#: The curves of the kit's test keys: P-256, the baseline every JOSE library has, and
#: X25519, which the gateway prefers when a partner offers it.
TEST_CURVES = {"p256": "P-256", "x25519": "X25519"}


@functools.cache
def synthetic_case() -> Case:
    return Case.model_validate_json((TEMPLATES / "synthetic-case.json").read_bytes())


def test_package(gw: Gateway, profile: PartnerProfile, purpose: str) -> Sealed:
    """The synthetic case minimized by the partner's policy for ``purpose``, with
    pseudonyms of a throwaway key, claims marked ``"test": true``, signed by the bank
    and encrypted to the partner's key."""
    tokens = Pseudonymizer(os.urandom(32))
    case_ref = tokens.token(f"case:{uuid.uuid4()}", prefix="case_")
    data = minimize(synthetic_case(), profile.policy[purpose], tokens, gw.transforms)  # type: ignore[index]
    return seal_package(gw, profile, purpose, case_ref, data, test=True)


@dataclass(frozen=True)
class TestKeys:
    """Partner-side keys made for one kit, for trying code before go-live."""

    encryption: dict[str, JWK]
    """Test key pairs to decrypt the sample packages with, by curve label."""
    webhook_secret: str
    ed25519: OKPKey

    @classmethod
    def generate(cls) -> TestKeys:
        ed25519 = OKPKey.generate_key("Ed25519", private=True)
        ed25519.ensure_kid()
        return cls(
            encryption={label: generate_encryption_key(crv) for label, crv in TEST_CURVES.items()},
            webhook_secret="whsec_" + base64.b64encode(os.urandom(32)).decode(),
            ed25519=OKPKey.import_key({**ed25519.as_dict(private=True), "use": "sig"}),
        )

    def ed25519_private(self) -> Ed25519PrivateKey:
        key = self.ed25519.private_key
        assert isinstance(key, Ed25519PrivateKey)
        return key


def sealed_to(package: Sealed, key: JWK) -> str:
    """The package's signed token encrypted to ``key`` instead of the partner's."""
    return encrypt(package.signed, key)


def sample_callback(keys: TestKeys, case_ref: str, at: datetime) -> dict[str, Any]:
    """An ``accepted`` report on the sample case, signed both ways with the test keys:
    the same id, timestamp and body give the same signatures in any correct code."""
    body = json.dumps(
        {"type": "accepted", "case_ref": case_ref, "occurred_at": at.isoformat(timespec="seconds"),
         "partner_reference": "TEST-REF-1"},
        separators=(",", ":"),
    )
    msg_id, stamp = "msg_test_" + uuid.uuid4().hex[:16], str(int(at.timestamp()))
    secret = base64.b64decode(keys.webhook_secret.removeprefix("whsec_"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "body": body,
        "v1": webhooks.sign_v1(secret, msg_id, stamp, body.encode()),
        "v1a": webhooks.sign_v1a(keys.ed25519_private(), msg_id, stamp, body.encode()),
    }
