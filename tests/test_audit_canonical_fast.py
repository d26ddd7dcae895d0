"""The writer's fast canonical path gives the exact RFC 8785 bytes for every entry kind,
and steps aside for what it cannot serialize exactly."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, PlainSerializer, ValidationError

from gateway.audit import canonical, entrycheck, log
from gateway.storage import Database
from schemas.audit import (
    BreakerReset,
    CallbackReceived,
    DeletionAttested,
    DisclosedField,
    Disclosure,
    ErasureCompleted,
    ErasureRequested,
    KeyRetired,
    KeyRotated,
    LegalHold,
    OpenPGPKeySet,
    PartnerChange,
    PartnerTest,
    Recall,
    Redelivery,
    RetentionPurge,
    TokenCreated,
    TokenRevoked,
    ViolationFound,
    WebhookSecretChanged,
)

AT = "2026-01-01T00:00:00.000000Z"
TOKEN = "case_" + "ab" * 16
DIGEST = "sha256:" + "cd" * 32
SUBJECT = "subj_" + "ef" * 16
FPR = "0123456789ABCDEF" * 2 + "01234567"


def exact(entry: BaseModel) -> bytes:
    return rfc8785.dumps(entry.model_dump(mode="json", exclude_none=True))


def every_kind(text: str, number: int) -> list[BaseModel]:
    return [
        Disclosure(
            at=AT, actor=text, package_id=text, partner=text, purpose=text, legal_basis=text,
            subject="subj_" + "ef" * 16, case=TOKEN,
            fields=[DisclosedField(path=text, transform="keep"), DisclosedField(path="a", transform=text)],
            package_digest=DIGEST, sealing=text,
        ),
        # Written before version 2: a digest of the data, under its own name.
        Disclosure(
            at=AT, actor=text, package_id=text, partner=text, purpose=text, legal_basis=text,
            subject="subj_" + "ef" * 16, case=TOKEN, fields=[DisclosedField(path=text, transform="keep")],
            payload_digest=DIGEST, sealing=text, v=1,
        ),
        PartnerChange(
            at=AT, actor=text, kind="partner_updated", partner=text, profile_digest=DIGEST, reason=text
        ),
        KeyRotated(at=AT, actor=text, key="bank-signing", old_kid=text, new_kid=text),
        KeyRetired(at=AT, actor=text, key="bank-signing", kid=text, compromised=False, published_until=AT),
        KeyRetired(at=AT, actor=text, key="bank-signing", kid=text, compromised=True),
        OpenPGPKeySet(at=AT, actor=text, key="bank-openpgp", kind="openpgp_key_generated", fingerprint=FPR,
                      replaced=False),
        OpenPGPKeySet(at=AT, actor=text, key="bank-openpgp", kind="openpgp_key_imported", fingerprint=FPR,
                      previous_fingerprint="0" * 40, replaced=True),
        WebhookSecretChanged(
            at=AT, actor=text, kind="webhook_secret_removed", partner=text, reason=text,
            secret_ids=[text, "a"],
        ),
        CallbackReceived(
            at=AT, actor=text, partner=text, case=TOKEN, event_type=text, channel="poll", body_digest=DIGEST
        ),
        ViolationFound(at=AT, actor=text, partner=text, case=TOKEN, rule=text, violation_id=number),
        Recall(at=AT, actor=text, partner=text, case=TOKEN, reason=text, deletion_due=AT),
        DeletionAttested(at=AT, actor=text, partner=text, case=TOKEN, body_digest=DIGEST),
        TokenCreated(at=AT, actor=text, token_id=text, role=text),
        PartnerTest(
            at=AT, actor=text, partner=text, package_id=text, package_digest=DIGEST, step="callback",
            outcome=text,
        ),
        TokenCreated(at=AT, actor=text, token_id=text, role=text, expires_at=text),
        TokenRevoked(at=AT, actor=text, token_id=text),
        Redelivery(at=AT, actor=text, case=TOKEN, package_id=text, partner=text, reason=text),
        BreakerReset(at=AT, actor=text, partner=text, previous=text),
        RetentionPurge(
            at=AT, actor=text, trigger="retention", package_sealed=number % 2**31, package_plaintexts=0,
            event_originals=1, event_texts=2, case_references=3,
        ),
        RetentionPurge(
            at=AT, actor=text, trigger="erasure", subject=SUBJECT, package_sealed=0, package_plaintexts=1,
            event_originals=0, event_texts=0, case_references=0,
        ),
        ErasureRequested(
            at=AT, actor=text, cases=2, erasure_id=text, held=number % 7, notices=1, partners=[text, "p"],
            reason=text, subject=SUBJECT,
        ),
        ErasureCompleted(at=AT, actor=text, erasure_id=text, subject=SUBJECT),
        LegalHold(at=AT, actor=text, case=TOKEN, kind="legal_hold_released", reason=text),
    ]


@settings(max_examples=200)
@given(st.text(), st.integers(-(2**53) + 1, 2**53 - 1))
def test_every_kind_is_serialized_exactly(text: str, number: int) -> None:
    for entry in every_kind(text, number):
        assert log.canonical(entry) == exact(entry)


def test_every_kind_takes_the_fast_path() -> None:
    for entry in every_kind("x", 1):
        log.canonical(entry)
        assert canonical._PLANS[type(entry)] is not None, type(entry).__name__


def test_integers_beyond_the_safe_range_take_the_exact_path() -> None:
    entry = ViolationFound(at=AT, actor="a", partner="p", case=TOKEN, rule="r", violation_id=1)
    log.canonical(entry)
    big = ViolationFound(at=AT, actor="a", partner="p", case=TOKEN, rule="r", violation_id=2**60)
    with pytest.raises(rfc8785.CanonicalizationError):
        log.canonical(big)


class Floaty(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str = "floaty"
    at: str = AT
    b: float
    a: dict[str, str]


def test_other_models_take_the_exact_path() -> None:
    entry = Floaty(b=1e21, a={"z": "1", "y": "2"})
    assert log.canonical(entry) == exact(entry)
    assert canonical._PLANS[Floaty] is None


async def test_a_bad_entry_late_in_a_large_batch_leaves_nothing(db: Database) -> None:
    good = [KeyRotated(at=AT, actor="a", key="bank-signing", old_kid=f"k{n}", new_kid="") for n in range(700)]
    bad = ViolationFound(at=AT, actor="a", partner="p", case=TOKEN, rule="r", violation_id=2**60)
    with pytest.raises(rfc8785.CanonicalizationError):
        async with db.transaction() as tx:
            await log.append(tx, [*good, bad])  # chunks before it are already inserted
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM audit_entries") == 0
        assert await log.append(tx, good[:3]) == [0, 1, 2]
        assert (await log.load_tree(tx)).size == 3


def test_a_float_where_an_integer_belongs_is_written_as_the_exact_path_writes_it() -> None:
    entry = ViolationFound(at=AT, actor="a", partner="p", case=TOKEN, rule="r", violation_id=3)
    canonical.canonical_entry(entry)
    changed = entry.model_copy(update={"violation_id": 3.0})  # not validated
    with pytest.warns(UserWarning):
        assert log.canonical(changed) == exact(changed)


class Optionals(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str = AT
    items: list[DisclosedField] | None = None
    kind: str = "optionals"
    note: str = None  # type: ignore[assignment]  # a default of None without `| None`


class Masked(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str = "masked"
    at: str = AT
    secret: Annotated[str, PlainSerializer(lambda value: "***")]


@pytest.mark.parametrize(
    "entry",
    [Optionals(), Optionals(items=[DisclosedField(path="a", transform="keep")], note="n")],
)
def test_none_fields_are_left_out_as_the_exact_path_leaves_them_out(entry: BaseModel) -> None:
    assert log.canonical(entry) == exact(entry)
    assert canonical._PLANS[Optionals] is not None


def test_a_field_with_a_serializer_of_its_own_takes_the_exact_path() -> None:
    entry = Masked(secret="raw")
    expected = b'{"at":"2026-01-01T00:00:00.000000Z","kind":"masked","secret":"***"}'
    assert log.canonical(entry) == exact(entry) == expected
    assert canonical._PLANS[Masked] is None


class Inner(BaseModel):
    model_config = ConfigDict(frozen=True)

    count: int = 0
    note: str = None  # type: ignore[assignment]


class Outer(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str = AT
    items: list[Inner]
    kind: str = "outer"


def test_nested_models_that_may_hold_none_or_a_float_take_the_exact_path() -> None:
    # The fast path writes a nested model's fields as they are, unchecked: trusting
    # the first entry would write a later one's None as null, a float as 3.0.
    first = Outer(items=[Inner(count=3, note="n")])
    assert log.canonical(first) == exact(first)
    assert log.canonical(later := Outer(items=[Inner(count=3)])) == exact(later)
    floaty = Outer(items=[Inner.model_construct(count=3.0, note="n")])  # not validated
    with pytest.warns(UserWarning):
        assert log.canonical(floaty) == exact(floaty)
    assert canonical._PLANS[Outer] is None


def test_a_nested_model_is_written_with_its_keys_sorted() -> None:
    class Unsorted(BaseModel):
        transform: str
        path: str

    class Holder(BaseModel):
        at: str = AT
        fields: list[Unsorted]
        kind: str = "holder"

    entry = Holder(fields=[Unsorted(transform="keep", path="a.b")])
    assert log.canonical(entry) == exact(entry) == (
        b'{"at":"2026-01-01T00:00:00.000000Z","fields":[{"path":"a.b","transform":"keep"}],"kind":"holder"}'
    )
    assert canonical._PLANS[Holder] is not None


class DeclaredUnsorted(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str = "declared-unsorted"
    at: str = AT
    b: str
    a: str


def test_a_class_declaring_its_fields_unsorted_is_written_sorted() -> None:
    entry = DeclaredUnsorted(b="2", a="1")
    assert log.canonical(entry) == exact(entry) == (
        b'{"a":"1","at":"2026-01-01T00:00:00.000000Z","b":"2","kind":"declared-unsorted"}'
    )
    assert canonical._PLANS[DeclaredUnsorted] is not None


def test_an_entry_built_from_fields_in_any_order_is_written_sorted() -> None:
    # The sort is left out for the schema's classes: their __dict__ follows the
    # declared order whatever order the fields are given in, validated or not.
    fields = dict(
        sealing="jwe", subject="subj_" + "ef" * 16, purpose="p", package_digest=DIGEST, partner="x",
        package_id="pkg", legal_basis="b", fields=[DisclosedField(transform="keep", path="a")],
        case=TOKEN, at=AT, actor="a",
    )
    validated = Disclosure(**fields)
    log.canonical(validated)
    assert canonical._PLANS[Disclosure] is not None
    for entry in (validated, Disclosure.model_construct(**fields)):
        assert log.canonical(entry) == exact(entry)


def test_a_key_the_model_does_not_declare_takes_the_exact_path() -> None:
    entry = TokenCreated(at=AT, actor="a", token_id="t", role="auditor")
    log.canonical(entry)
    changed = entry.model_copy(update={"aaa": "not a field"})  # not validated: lands last in __dict__
    assert log.canonical(changed) == exact(changed) == log.canonical(entry)


class Counted(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str = AT
    count: int
    kind: str = "counted"


def test_a_class_whose_first_entry_is_refused_still_gets_the_fast_path() -> None:
    floaty = Counted.model_construct(count=3.0)  # not validated: the fast path refuses it
    with pytest.warns(UserWarning):
        assert log.canonical(floaty) == exact(floaty)
    assert Counted not in canonical._PLANS
    entry = Counted(count=3)
    assert log.canonical(entry) == exact(entry)
    assert canonical._PLANS[Counted] is not None


#: A disclosure as logs written before version 2 hold it, byte for byte.
V1_LEAF = (
    b'{"actor":"cli:ops","at":"2026-01-01T00:00:00.000000Z","case":"' + TOKEN.encode() + b'",'
    b'"fields":[{"path":"debtor.name","transform":"keep"}],"kind":"disclosure",'
    b'"legal_basis":"contract","package_id":"pkg_1","partner":"acme-collect",'
    b'"payload_digest":"' + DIGEST.encode() + b'","purpose":"collection","sealing":"jwe",'
    b'"subject":"subj_' + b"ef" * 16 + b'","v":1}'
)


def test_a_disclosure_written_before_version_2_keeps_its_bytes_and_meaning() -> None:
    check = entrycheck.leaf_lint()[0]  # what `audit verify` and `verify-bundle` run on each leaf
    entry = check(V1_LEAF)
    assert isinstance(entry, Disclosure) and entry.v == 1
    assert entry.payload_digest == DIGEST and entry.package_digest is None
    assert log.canonical(entry) == V1_LEAF
    old = json.loads(V1_LEAF)
    mixed = [
        {**old, "v": 2},  # a version 2 entry digests the package, not the data
        {**old, "package_digest": DIGEST},
        {**{k: v for k, v in old.items() if k != "payload_digest"}, "package_digest": DIGEST},
    ]
    for leaf in mixed:
        with pytest.raises(ValidationError, match="disclosure has"):
            check(canonical.canonical_json(leaf))


@settings(max_examples=100)
@given(st.text(), st.integers(-(2**53) + 1, 2**53 - 1))
def test_the_fields_events_get_are_model_dumps(text: str, number: int) -> None:
    optionals = [Optionals(), Optionals(items=[DisclosedField(path="a", transform="k")])]
    entries = [*every_kind(text, number), *optionals]
    for entry in entries:
        assert canonical.entry_fields(entry) == entry.model_dump(mode="json"), type(entry).__name__


def test_an_entry_the_fast_path_refuses_gives_its_model_dump() -> None:
    entry = ViolationFound(at=AT, actor="a", partner="p", case=TOKEN, rule="r", violation_id=3)
    changed = entry.model_copy(update={"violation_id": 3.0})  # not validated
    with pytest.warns(UserWarning):
        expected = changed.model_dump(mode="json")
    with pytest.warns(UserWarning):
        assert canonical.entry_fields(changed) == expected
    assert canonical.entry_fields(Masked(secret="raw"))["secret"] == "***"
