"""The per-entry checks of `audit verify`: the index sequence, the leaf hash against the
stored one, and (deep) the canonical form and the schema. `gateway.audit.verify.LogVerifier`
runs them in-process, `gateway.audit.parallel` in worker processes: one rule, one
message, both ways."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any

from gateway.audit import merkle

#: (index, leaf bytes, stored leaf hash or None) in the order the log holds them.
Row = tuple[int, bytes, bytes | None]
Progress = Callable[[int], None]
#: The first problem found: (entry index, what is wrong), as VerificationFailed names it.
Problem = tuple[int, str]


@cache
def leaf_lint() -> tuple[Callable[[bytes], Any], type[Exception], Callable[[Any], str]]:
    """The canonical-form and schema lint of one leaf: its check (raises ValueError),
    the schema's error type, and how an error of that type is told."""
    from pydantic import TypeAdapter, ValidationError

    from gateway.audit.canonical import parse_canonical
    from gateway.config import first_error
    from schemas.audit import AuditEntry

    validate = TypeAdapter(AuditEntry).validate_python

    def check(leaf: bytes) -> Any:
        return validate(parse_canonical(leaf))

    return check, ValidationError, first_error



def check_rows(rows: Iterable[Row], expected: int, *, deep: bool) -> tuple[list[bytes], Problem | None]:
    """Every per-entry check, for rows meant to start at index `expected`: the index
    sequence, the canonical-form and schema lint (`deep`), the leaf hash and the stored
    one. Returns the leaf hashes of the rows that passed, up to the first problem
    (index, what is wrong), and that problem or None. `LogVerifier` runs it in-process,
    `gateway.audit.parallel` in worker processes: one rule, one message, both ways."""
    digests: list[bytes] = []
    append = digests.append
    sha = hashlib.sha256
    if deep:
        lint, schema_error, told = leaf_lint()
    for index, leaf, stored in rows:
        if type(index) is not int:  # NULL or text, in a table made again outside the gateway
            return digests, (expected, f"missing or moved (the next row has index {index!r})")
        if index != expected:
            if index > expected:
                return digests, (expected, f"missing or moved (the next entry has index {index})")
            return digests, (index, f"out of order or repeated (expected index {expected})")
        if not isinstance(leaf, bytes):  # the column changed outside the gateway
            what = "missing (NULL)" if leaf is None else f"a {type(leaf).__name__}, not text"
            return digests, (expected, f"the leaf is {what}")
        if deep:
            try:
                lint(leaf)
            except schema_error as exc:
                return digests, (expected, f"not a valid audit entry: {told(exc)}")
            except ValueError as exc:
                return digests, (expected, str(exc))
        digest = sha(b"\x00" + leaf).digest()
        if stored is not None and stored != digest:
            return digests, (expected, "the stored leaf hash does not match the leaf")
        append(digest)
        expected += 1
    return digests, None


def check_batch(rows: Sequence[Row], expected: int, *, deep: bool) -> tuple[list[bytes], Problem | None]:
    """`check_rows` for rows whose indices strictly increase (a rowid read in order,
    `gateway.audit.parallel.keyed_by_index`): then the first and last index alone show
    there is no gap, and without the lint the hashes are computed and compared a batch
    at a time; anything off goes row by row, naming the entry."""
    if (
        not deep
        and rows
        and rows[0][0] == expected
        and rows[-1][0] == expected + len(rows) - 1
    ):
        try:
            digests = merkle.leaf_hashes([leaf for _, leaf, _ in rows])
        except TypeError:  # a leaf that is not text (NULL): `check_rows` names it
            digests = []
        if digests and [stored for _, _, stored in rows] == digests:
            return digests, None
        # A changed leaf or hash, or none stored: row by row, naming the entry.
    return check_rows(rows, expected, deep=deep)
