"""Minimization: default deny, transforms, and a property test that nothing unlisted leaks."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.onboarding.pseudonyms import Pseudonymizer
from gateway.placement.minimize import (
    TOKEN_BESIDE,
    TRANSFORMS_FOR,
    leaf_kind,
    leaf_paths,
    minimize,
    sent_paths,
)
from schemas.case import Case
from schemas.partner import PurposePolicy
from tests.helpers import sample_case

CASE = json.loads(sample_case().read_text())
TOKENS = Pseudonymizer(b"k" * 32)
PATHS = leaf_paths()


def policy(fields: dict[str, Any]) -> PurposePolicy:
    return PurposePolicy(legal_basis="test", fields=fields)


def test_tokens_stay_hmac_sha256_of_the_scope_key() -> None:
    """Tokens already stored and logged (audit subjects, partners' number tokens) must
    keep matching new ones: a token is HMAC-SHA256 of the value, whatever the key length."""
    for key in (b"k" * 32, b"short", bytes(range(64)), b"x" * 100):
        for value in ("110101199003071234", "contact:13812341999", "张伟", ""):
            mac = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
            assert Pseudonymizer(key).token(value, prefix="subj_") == "subj_" + mac[:32]
            remembering = Pseudonymizer(key).remembering()  # a placement's: each token made once
            for _ in range(2):
                assert remembering.token(value, prefix="subj_") == "subj_" + mac[:32]
                assert remembering.token(value) == "tok_" + mac[:32]


def test_keys_come_in_the_order_the_policy_names_them() -> None:
    """The payload a partner reads (and the bytes signed) keep the policy's order: each
    object's keys as the policy first names them, the tokens beside numbers last."""
    out = minimize(
        Case.model_validate(CASE),
        policy({
            "loan.currency": "keep", "debtor.phones[].number": "keep", "debtor.name": "keep",
            "loan.outstanding": "keep", "debtor.phones[].label": "keep",
        }),
        TOKENS,
    )
    assert list(out) == ["loan", "debtor"]
    assert list(out["loan"]) == ["currency", "outstanding"]
    assert list(out["debtor"]) == ["phones", "name"]
    assert [list(phone) for phone in out["debtor"]["phones"]] == [["number", "label", "number_token"]] * len(
        CASE["debtor"]["phones"]
    )


def test_every_case_leaf_is_addressable() -> None:
    assert "debtor.id_number" in PATHS and "emergency_contacts[].phone" in PATHS
    assert all(leaf_kind(p) in TRANSFORMS_FOR for p in PATHS)


def test_default_deny_sends_only_listed_fields() -> None:
    out = minimize(
        Case.model_validate(CASE),
        policy({"debtor.name": "keep", "loan.outstanding": "keep"}),
        TOKENS,
    )
    assert out == {"debtor": {"name": "张伟"}, "loan": {"outstanding": "52310.45"}}


def test_emergency_contacts_and_id_numbers_leave_only_when_named() -> None:
    case = Case.model_validate(CASE)
    without = json.dumps(
        minimize(case, policy({"debtor.name": "keep", "debtor.phones[].number": "keep"}), TOKENS),
        ensure_ascii=False,
    )
    assert (
        "李娜" not in without
        and "13900001111" not in without
        and "110101199003071234" not in without
    )
    named = minimize(
        case,
        policy({"emergency_contacts[].phone": {"transform": "mask", "first": 3, "last": 4}}),
        TOKENS,
    )
    masked = {"phone": "139****1111", "phone_token": TOKENS.token("13900001111")}
    assert named == {"emergency_contacts": [masked]}


def test_transforms() -> None:
    case = Case.model_validate(CASE)
    out = minimize(
        case,
        policy(
            {
                "debtor.phones[].number": {"transform": "mask", "first": 3, "last": 4},
                "debtor.id_number": "token",
                "loan.overdue_since": "year",
                "loan.outstanding": {"transform": "bucket", "edges": [10000, 50000, 100000]},
                "loan.principal": "drop",
            }
        ),
        TOKENS,
    )
    assert [phone["number"] for phone in out["debtor"]["phones"]] == ["138****1999", "010****1234"]
    assert re.fullmatch(r"tok_[0-9a-f]{32}", out["debtor"]["id_number"])
    assert out["debtor"]["id_number"] == TOKENS.token("110101199003071234")
    assert Pseudonymizer(b"j" * 32).token("110101199003071234") != out["debtor"]["id_number"]
    assert out["loan"] == {"overdue_since": 2026, "outstanding": "50000..<100000"}


def test_a_number_in_clear_carries_its_token_beside_it() -> None:
    """What a partner that dials reports back as number_token: the token a partner that
    receives only tokens would have had, next to the number it dials."""
    case = Case.model_validate(CASE)
    fields = {"debtor.phones[].number": "keep", "debtor.email": "keep", "emergency_contacts[].phone": "token"}
    out = minimize(case, policy(fields), TOKENS)
    tokenised = minimize(case, policy({"debtor.phones[].number": "token"}), TOKENS)
    assert out["debtor"]["phones"] == [
        {"number": phone.number, "number_token": dialled["number"]}
        for phone, dialled in zip(case.debtor.phones, tokenised["debtor"]["phones"], strict=True)
    ]
    assert out["debtor"]["email_token"] == TOKENS.token(case.debtor.email)
    assert out["emergency_contacts"] == [{"phone": TOKENS.token(c.phone)} for c in case.emergency_contacts]
    assert sent_paths(policy(fields)) == set(fields) | {"debtor.phones[].number_token", "debtor.email_token"}


# -- property: nothing unlisted ever appears -----------------------------------------

TEXT_LEAVES = {
    "debtor.name",
    "debtor.address.line",
    "debtor.address.city",
    "emergency_contacts[].name",
    "emergency_contacts[].relation",
    "loan.product",
    "loan.account_number",
    "evidence[].title",
    "debtor.id_number",
}


def rule_for(path: str) -> st.SearchStrategy[dict[str, Any]]:
    options: list[dict[str, Any]] = []
    for transform in sorted(TRANSFORMS_FOR[leaf_kind(path)]):
        if transform == "mask":
            options.append({"transform": "mask", "first": 1, "last": 1})
        elif transform == "bucket":
            options.append({"transform": "bucket", "edges": [Decimal(100), Decimal(10000)]})
        else:
            options.append({"transform": transform})
    return st.sampled_from(options)


policies = st.lists(st.sampled_from(PATHS), min_size=1, max_size=12, unique=True).flatmap(
    lambda paths: st.fixed_dictionaries({p: rule_for(p) for p in paths})
)
marker = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=8, max_size=12)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    data = json.loads(json.dumps(CASE))
    data["debtor"]["name"] = "NAME" + draw(marker)
    data["debtor"]["id_number"] = "ID" + draw(marker)
    data["debtor"]["address"]["line"] = "LINE" + draw(marker)
    data["debtor"]["address"]["city"] = "CITY" + draw(marker)
    data["loan"]["product"] = "PROD" + draw(marker)
    data["loan"]["account_number"] = "ACCT" + draw(marker)
    data["emergency_contacts"] = [
        {"name": "EC" + draw(marker), "relation": "REL" + draw(marker), "phone": "139" + str(i) * 8}
        for i in range(draw(st.integers(0, 3)))
    ]
    for doc in data["evidence"]:
        doc["title"] = "DOC" + draw(marker)
    return Case.model_validate(data)


def values_at(data: dict[str, Any], path: str) -> list[Any]:
    current: list[Any] = [data]
    for part in path.split("."):
        name = part.removesuffix("[]")
        nxt = []
        for item in current:
            value = item.get(name) if isinstance(item, dict) else None
            if value is None:
                continue
            nxt.extend(value if part.endswith("[]") else [value])
        current = nxt
    return current


def leaf_paths_of(data: Any, prefix: str = "") -> set[str]:
    if isinstance(data, dict):
        return {
            p for k, v in data.items() for p in leaf_paths_of(v, f"{prefix}.{k}" if prefix else k)
        }
    if isinstance(data, list):
        return {p for v in data for p in leaf_paths_of(v, prefix + "[]")}
    return {prefix}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), fields=policies)
def test_no_unlisted_field_or_value_ever_leaves(case: Case, fields: dict[str, Any]) -> None:
    pol = policy(fields)
    out = minimize(case, pol, TOKENS)
    sent = {p for p, r in pol.fields.items() if r.transform != "drop"}
    beside = {TOKEN_BESIDE[p] for p in sent if p in TOKEN_BESIDE and pol.fields[p].transform != "token"}
    assert leaf_paths_of(out) <= sent | beside == sent_paths(pol)
    for path in beside:  # a token beside every number or address that left otherwise
        assert all(re.fullmatch(r"tok_[0-9a-f]{32}", v) for v in values_at(out, path))
        numbers = values_at(case.model_dump(mode="json"), path.removesuffix("_token"))
        assert len(values_at(out, path)) == len(numbers)
    serialized = json.dumps(out, ensure_ascii=False)
    source = case.model_dump(mode="json")
    for path in TEXT_LEAVES - {p for p, r in pol.fields.items() if r.transform == "keep"}:
        for value in values_at(source, path):
            assert value not in serialized, f"{path} leaked"
