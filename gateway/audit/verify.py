"""Verifying the audit log from its entries and signed checkpoints, trusting nothing else.

`LogVerifier` is fed entries in index order, from the database or from a bundle, and:

- checks that indices run from 0 without gaps or repeats;
- checks that each leaf is RFC 8785 canonical JSON and parses as an `AuditEntry`
  (`deep=True`, the default; `deep=False` leaves out this lint, about 30 us a leaf,
  and keeps every cryptographic check below);
- re-hashes each leaf (and compares with a stored leaf hash, where there is one);
- rebuilds the Merkle tree as a compact range (O(log n) hashes, whatever the size)
  and, at every checkpoint's size (and a kept checkpoint's, `known`), compares the
  root with the signed one. Checkpoints whose roots are all recomputed from the same
  leaves are consistent by construction: no consistency proof is needed between them.

Problems are reported in log order: the first one raises `VerificationFailed` naming
the index. A changed entry whose stored hash was updated too shows up only as a root
mismatch, which narrows it to the entries between the last good checkpoint and the
first bad one: the denser the checkpoints, the sharper the finger.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NoReturn

from gateway.audit import merkle
from gateway.audit.entrycheck import Problem, Progress, Row, check_batch, check_rows
from gateway.audit.errors import VerificationFailed

if TYPE_CHECKING:
    from gateway.audit.checkpoint import Checkpoint
    from gateway.audit.cosignature import Witness

# The checkpoint, signature and lint modules (cryptography, pydantic) are imported
# where used: a worker process of `gateway.audit.parallel` that only hashes starts
# without them, and starting fast matters there.

@dataclass(frozen=True)
class Summary:
    entries: int
    checkpoints: int
    origin: str
    key: str
    latest_size: int | None
    latest_root: str | None
    unsigned: int
    seconds: float
    #: The size of the checkpoint the auditor kept (`--known`), found consistent.
    known_size: int | None = None
    #: The witnesses (name+key id) whose cosignatures on the latest checkpoint verified.
    witnessed_by: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "witnessed_by": list(self.witnessed_by)}

    def line(self) -> str:
        if self.latest_size is None:
            signed = "no signed checkpoint yet"
        else:
            signed = f"signed up to size {self.latest_size}, root {self.latest_root}"
        tail = f"; {self.unsigned} newer entries not yet signed" if self.unsigned else ""
        if self.known_size is not None:
            tail += f"; extends the checkpoint you kept (size {self.known_size})"
        if self.witnessed_by:
            tail += f"; cosigned by {', '.join(self.witnessed_by)}"
        return (
            f"OK: {self.entries} entries, {self.checkpoints} checkpoints verified, {signed}"
            f"{tail} (key {self.key}, {self.seconds:.2f}s)"
        )


@dataclass(frozen=True)
class WitnessPolicy:
    """`--witness` and `--witnesses-required`: the latest checkpoint must carry valid
    cosignatures by at least `required` of `witnesses`."""

    witnesses: tuple[Witness, ...]
    required: int

    def check(self, note: str | None, size: int | None) -> tuple[str, ...]:
        """The witnesses that cosigned `note` (the latest checkpoint); VerificationFailed
        when they are fewer than required."""
        from gateway.audit.checkpoint import CheckpointError
        from gateway.audit.cosignature import cosigned_by

        if self.required <= 0:
            return ()
        if note is None:
            raise VerificationFailed(
                f"no signed checkpoint, and {self.required} witness cosignatures are required"
            )
        try:
            found = tuple(sorted(cosigned_by(note, self.witnesses)))
        except CheckpointError as exc:
            raise VerificationFailed(str(exc), size=size) from None
        if len(found) < self.required:
            named = ", ".join(found) or "none of them"
            raise VerificationFailed(
                f"cosigned by {len(found)} of the witnesses given ({named}), {self.required} required: "
                "no independent witness vouches that this is the log everyone else sees",
                size=size,
            )
        return found


def read_known(note: str, vkey: str) -> Checkpoint:
    """The checkpoint an auditor kept from an earlier visit (`--known`), checked against
    the key trusted now: one signed by another key is refused, so a swapped key shows."""
    from gateway.audit.checkpoint import CheckpointError, parse_and_verify, parse_vkey

    try:
        cp = parse_and_verify(note, vkey)
    except CheckpointError as exc:
        raise VerificationFailed(
            f"the checkpoint you kept does not verify with the key trusted: {exc}"
        ) from None
    if cp.origin != parse_vkey(vkey)[0]:
        raise VerificationFailed(f"the checkpoint you kept is of another log ({cp.origin!r})")
    return cp


def start_verifier(
    vkey: str,
    notes: Iterable[tuple[int | None, str]],
    *,
    known: Checkpoint | None = None,
    witnesses: WitnessPolicy | None = None,
    progress: Progress | None = None,
    deep: bool = True,
) -> LogVerifier:
    """A verifier of the log whose checkpoint `notes` these are (see `read_checkpoints`),
    with what the auditor brings: a checkpoint kept from before, witnesses to require."""
    latest: list[tuple[int, str]] = []
    signed = read_checkpoints(notes, vkey, latest)
    cosigners: tuple[str, ...] = ()
    if witnesses is not None:
        size, note = latest[-1] if latest else (None, None)
        cosigners = witnesses.check(note, size)
    return LogVerifier(vkey, signed, progress=progress, deep=deep, known=known, witnessed_by=cosigners)


def read_checkpoints(
    notes: Iterable[tuple[int | None, str]], vkey: str, latest: list[tuple[int, str]] | None = None
) -> list[Checkpoint]:
    """The checkpoints, signature-checked and sorted by size; the largest one's size and
    note are appended to `latest`, if given.

    `notes` pairs each note with the size its container claims (table row, file
    name), which must agree with the signed size.
    """
    from gateway.audit.checkpoint import CheckpointError, parse_and_verify, parse_vkey

    name, _ = parse_vkey(vkey)
    by_size: dict[int, Checkpoint] = {}
    newest: tuple[int, str] | None = None
    for claimed, note in notes:
        try:
            cp = parse_and_verify(note, vkey)
        except CheckpointError as exc:
            raise VerificationFailed(str(exc), size=claimed) from None
        if cp.origin != name:
            raise VerificationFailed(f"origin {cp.origin!r} is not this log's {name!r}", size=cp.size)
        if claimed is not None and claimed != cp.size:
            raise VerificationFailed(f"stored as size {claimed} but signed for {cp.size}", size=claimed)
        earlier = by_size.setdefault(cp.size, cp)
        if earlier.root != cp.root:
            raise VerificationFailed("two signed checkpoints of this size with different roots", size=cp.size)
        if newest is None or cp.size > newest[0]:
            newest = (cp.size, note)
    if latest is not None and newest is not None:
        latest.append(newest)
    return [by_size[size] for size in sorted(by_size)]


class LogVerifier:
    """Streams entries through every check; see the module docstring."""

    def __init__(
        self,
        vkey: str,
        checkpoints: Sequence[Checkpoint],
        *,
        progress: Progress | None = None,
        deep: bool = True,
        known: Checkpoint | None = None,
        witnessed_by: tuple[str, ...] = (),
    ) -> None:
        self.vkey = vkey
        self.deep = deep
        self.known = known
        self.witnessed_by = witnessed_by
        self.started = time.perf_counter()
        self._checkpoints = list(checkpoints)
        self._next_checkpoint = 0
        self._good_size = 0  # the largest size whose signed root matched
        # The tree as far as the leaves fed: O(log n) hashes, not the whole tree. Roots
        # are read at each checkpoint's size (and the kept one's) as the feed passes it.
        self._range = merkle.CompactRange()
        self._known_root: bytes | None = None
        self._pending: list[bytes] = []
        self._next = 0
        self._progress = progress

    @property
    def size(self) -> int:
        return self._next

    def root_sizes(self) -> list[int]:
        """The sizes, in order, at which the feed reads the tree's root: each signed
        checkpoint's and the kept checkpoint's."""
        sizes = {cp.size for cp in self._checkpoints}
        if self.known is not None:
            sizes.add(self.known.size)
        return sorted(sizes)

    def feed(self, rows: Iterable[Row]) -> None:
        self._take(*check_rows(rows, self._next, deep=self.deep))

    def feed_ordered(self, rows: Sequence[Row]) -> None:
        """`feed` for rows whose indices strictly increase, as a rowid (INTEGER PRIMARY KEY)
        read in order does (see `check_batch`)."""
        self._take(*check_batch(rows, self._next, deep=self.deep))

    def feed_digests(
        self, first: int, digests: bytes, problem: Problem | None = None, upper: Sequence[bytes] = ()
    ) -> None:
        """Leaf hashes checked elsewhere (`check_batch` in a worker process): the
        entries from `first` on, 32 bytes each, concatenated; then `problem`, the first
        one found after them, if any. `upper`, with no problem: the block's levels above
        the leaves (`merkle.levels_of`), each concatenated likewise, hashed there too.
        Raises VerificationFailed as `feed` would."""
        if first != self._next:
            raise ValueError(f"digests from index {first} fed at size {self._next}")
        if upper and problem is None and self._take_block([digests, *upper]):
            if self._progress is not None:
                self._progress(self._next)
            return
        if upper and not digests:
            raise ValueError(f"the block from index {first} left out levels and cannot be taken whole")
        self._take(_split_digests(digests), problem)

    def _take_block(self, block: list[bytes]) -> bool:
        """A block of leaves with its inner levels (see `feed_digests`): its subtrees
        go into the range as they came, the roots at the sizes within it read on the
        way. The levels below some height may be left out (empty, the leaf hashes
        too: `parallel.keep_from`) where no size within the block needs them. False,
        and nothing taken, unless the block starts where its top subtree may (a
        multiple of its size) and its levels are whole hashes of the right counts:
        the leaves are then hashed here."""
        self._flush()  # nothing is pending between blocks
        rng, top = self._range, len(block) - 1
        keep = next((height for height, level in enumerate(block) if level), top)
        count = (len(block[keep]) // merkle.HASH_SIZE) << keep
        if rng.size % (1 << top) or any(
            len(level) != ((count >> height) * merkle.HASH_SIZE if height >= keep else 0)
            for height, level in enumerate(block)
        ):
            return False
        start = rng.size
        while (size := self._next_size()) is not None and size <= start + count:
            if (size - start) % (1 << keep):
                raise ValueError(f"the root at size {size} needs levels the block left out")
            part = rng.copy()
            for height, node in merkle.prefix_subtrees(block, size - start):
                part.push(height, node)
            self._reached(size, part.root())
        for height, node in merkle.prefix_subtrees(block, count):
            rng.push(height, node)
        self._next += count
        return True

    def _take(self, digests: list[bytes], problem: Problem | None) -> None:
        """The checked leaf hashes into the tree, checkpoints as far as they reach; a
        problem after them is reported once every earlier checkpoint has been checked."""
        self._pending += digests
        self._next += len(digests)
        if problem is not None:
            self._fail(*problem)
        self._flush()
        if self._progress is not None:
            self._progress(self._next)

    def finish(self, *, require_signed: bool, state: tuple[int, bytes] | None = None) -> Summary:
        """Final checks once every entry is fed; `state` is the writer's (size, root)."""
        from gateway.audit.checkpoint import parse_vkey
        from gateway.audit.signer import fingerprint

        self._flush()
        size = self._next
        if self._next_checkpoint < len(self._checkpoints):
            signed = self._checkpoints[self._next_checkpoint].size
            raise VerificationFailed(
                f"missing: a checkpoint signs {signed} entries but the log ends here", index=size
            )
        if require_signed and size > self._good_size:
            raise VerificationFailed(
                "not covered by any signed checkpoint", index=self._good_size, last=size - 1
            )
        if state is not None:
            state_size, state_root = state
            if size > state_size:
                raise VerificationFailed(
                    f"not in the writer's tree state (which ends at {state_size}): "
                    "added outside the gateway",
                    index=state_size,
                )
            if size < state_size:
                raise VerificationFailed(
                    f"missing (the writer's tree state records {state_size} entries)", index=size
                )
            if self._range.root() != state_root:
                raise VerificationFailed(
                    "unsigned entries do not hash to the writer's tree state: one was changed",
                    index=self._good_size,
                    last=size - 1,
                )
        self._check_known(size)
        latest = self._checkpoints[-1] if self._checkpoints else None
        return Summary(
            entries=size,
            checkpoints=len(self._checkpoints),
            origin=parse_vkey(self.vkey)[0],
            key=fingerprint(self.vkey),
            latest_size=None if latest is None else latest.size,
            latest_root=None if latest is None else _b64(latest.root),
            unsigned=size - self._good_size,
            seconds=round(time.perf_counter() - self.started, 3),
            known_size=None if self.known is None else self.known.size,
            witnessed_by=self.witnessed_by,
        )

    def _check_known(self, size: int) -> None:
        """The log must extend the checkpoint the auditor kept: signed at least as far
        (else it was rolled back), with the same root at that size and a consistency
        proof from there to the latest checkpoint (else it forked)."""
        known = self.known
        if known is None:
            return
        signed = self._good_size
        if signed < known.size:
            raise VerificationFailed(
                f"rollback: the log is signed up to size {signed} ({size} entries) but the checkpoint "
                f"you kept signs size {known.size}: entries you have seen are gone"
            )
        # Read as the feed passed its size. The latest checkpoint's root was recomputed
        # from the same leaves, so the log extends the kept checkpoint if this matches.
        root = self._known_root
        assert root is not None
        if root != known.root:
            raise VerificationFailed(
                f"fork: the log's root at size {known.size} is {_b64(root)} but the checkpoint you kept "
                f"signs {_b64(known.root)} for that size: the log was rewritten, or shows you another history"
            )

    def _flush(self) -> None:
        """The pending leaf hashes into the range, the roots read at the sizes on the way."""
        pending, rng, done = self._pending, self._range, 0
        while (size := self._next_size()) is not None and size - rng.size <= len(pending) - done:
            take = size - rng.size
            rng.grow(pending[done : done + take])
            done += take
            self._reached(size, rng.root())
        rng.grow(pending[done:])
        pending.clear()

    def _next_size(self) -> int | None:
        """The next size whose root is to be read: the next checkpoint's, or the kept
        checkpoint's while not yet passed."""
        sizes = []
        if self._next_checkpoint < len(self._checkpoints):
            sizes.append(self._checkpoints[self._next_checkpoint].size)
        if self.known is not None and self._known_root is None:
            sizes.append(self.known.size)
        return min(sizes) if sizes else None

    def _reached(self, size: int, root: bytes) -> None:
        """The root at `size`: compared with the checkpoint signed there, kept if it is
        the size of the checkpoint the auditor kept."""
        if self.known is not None and self._known_root is None and size == self.known.size:
            self._known_root = root
        checkpoints = self._checkpoints
        if self._next_checkpoint < len(checkpoints) and checkpoints[self._next_checkpoint].size == size:
            cp = checkpoints[self._next_checkpoint]
            if root != cp.root:
                matches = (
                    f"the one at {self._good_size} matches" if self._good_size else "the first checkpoint"
                )
                raise VerificationFailed(
                    f"do not hash to the root signed at size {cp.size} ({matches}): an entry "
                    "in this range was changed, inserted, removed or reordered",
                    index=self._good_size,
                    last=cp.size - 1,
                )
            # The roots at this checkpoint and at the one before were both recomputed
            # from the same leaves: this one extends that one, which is all a
            # consistency proof between them would show.
            self._good_size = cp.size
            self._next_checkpoint += 1

    def _fail(self, index: int, problem: str) -> NoReturn:
        # An earlier checkpoint range that does not match is the first problem.
        self._flush()
        raise VerificationFailed(problem, index=index)


def _split_digests(blob: bytes) -> list[bytes]:
    size = merkle.HASH_SIZE
    if len(blob) % size:
        raise ValueError(f"digests must be {size} bytes each")
    return merkle.split_joined(blob)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
