"""Versioned schema migrations, applied in order when a database is opened.

Each version is a list of portable statements written with SQLite's type names; a
backend swaps them through ``Database.translate_ddl`` (e.g. ``BLOB`` becomes ``BYTEA`` on
PostgreSQL). Both backends apply the same versions. Never edit a released version: add a new one.

A step that computes data from rows already stored (``DataStep``) belongs to the layer
that owns those rows: storage knows it only by name, and whoever opens the database
hands in the function (``gateway.core.open_database`` passes the audit log's). A new
database skips them: its tables are created empty, so there is nothing to compute.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.errors import ConfigError, StorageError
from gateway.storage.base import Database, Lock, Transaction

#: A function that recomputes stored data inside the migrating transaction.
DataStepFunction = Callable[[Transaction], Awaitable[None]]


@dataclass(frozen=True)
class DataStep:
    """A step that changes the data in Python, named here and supplied by its owner."""

    name: str


#: A statement, or a step that changes the data in Python.
Step = str | DataStep

MIGRATIONS: list[list[Step]] = [
    [
        """CREATE TABLE partners (
            id TEXT PRIMARY KEY,
            profile TEXT NOT NULL,
            profile_digest TEXT NOT NULL,
            source TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'offboarded')),
            status_reason TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE packages (
            id TEXT PRIMARY KEY,
            partner_id TEXT NOT NULL REFERENCES partners(id),
            case_id TEXT NOT NULL,
            case_ref TEXT NOT NULL,
            subject_token TEXT NOT NULL,
            purpose TEXT NOT NULL,
            sealing TEXT NOT NULL,
            sealed TEXT NOT NULL,
            signed TEXT NOT NULL,
            payload_digest TEXT NOT NULL,
            fields TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN
                ('queued', 'sending', 'retry_wait', 'delivered', 'dead', 'recalled')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            lease_owner TEXT,
            lease_until TEXT,
            partner_ref TEXT,
            last_error TEXT
        )""",
        "CREATE INDEX packages_due ON packages (state, next_attempt_at)",
        "CREATE INDEX packages_case ON packages (case_id, partner_id)",
        "CREATE UNIQUE INDEX packages_case_ref ON packages (partner_id, case_ref, id)",
        """CREATE TABLE attempts (
            package_id TEXT NOT NULL REFERENCES packages(id),
            number INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            latency_ms REAL NOT NULL,
            outcome TEXT NOT NULL,
            status TEXT,
            error_class TEXT,
            detail TEXT,
            PRIMARY KEY (package_id, number)
        )""",
        """CREATE TABLE audit_entries (
            idx INTEGER PRIMARY KEY,
            leaf TEXT NOT NULL,
            leaf_hash BLOB NOT NULL,
            kind TEXT NOT NULL,
            partner_id TEXT,
            case_token TEXT,
            at TEXT NOT NULL
        )""",
        "CREATE INDEX audit_by_partner ON audit_entries (partner_id, idx)",
        "CREATE INDEX audit_by_case ON audit_entries (case_token, idx)",
        """CREATE TABLE audit_checkpoints (
            size INTEGER PRIMARY KEY,
            note TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
    ],
    [
        # Delivery: when each failed attempt scheduled the next one, and the circuit
        # breaker per partner, shared by every dispatcher process through the database.
        "ALTER TABLE attempts ADD COLUMN retry_at TEXT",
        """CREATE TABLE partner_state (
            partner_id TEXT PRIMARY KEY REFERENCES partners(id),
            breaker TEXT NOT NULL DEFAULT 'closed'
                CHECK (breaker IN ('closed', 'open', 'half_open')),
            failures INTEGER NOT NULL DEFAULT 0,
            opened_until TEXT,
            probe_until TEXT,
            paused_until TEXT,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX packages_partner_due ON packages (partner_id, state, next_attempt_at)",
    ],
    # 3: inbound status and supervision.
    [
        """CREATE TABLE assignments (
            partner_id TEXT NOT NULL REFERENCES partners(id),
            case_ref TEXT NOT NULL,
            case_id TEXT NOT NULL,
            case_token TEXT NOT NULL,
            subject_token TEXT NOT NULL,
            purpose TEXT NOT NULL,
            timezone TEXT NOT NULL,
            currency TEXT NOT NULL,
            amount_placed TEXT NOT NULL,
            last_due_date TEXT NOT NULL,
            last_reset TEXT,
            state TEXT NOT NULL,
            placed_at TEXT NOT NULL,
            accepted_at TEXT,
            recalled_at TEXT,
            recall_reason TEXT,
            deletion_due TEXT,
            attested_at TEXT,
            PRIMARY KEY (partner_id, case_ref)
        )""",
        "CREATE INDEX assignments_case ON assignments (case_id)",
        "CREATE INDEX assignments_subject ON assignments (subject_token)",
        """CREATE TABLE callbacks (
            partner_id TEXT NOT NULL,
            webhook_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (partner_id, webhook_id)
        )""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            partner_id TEXT NOT NULL,
            case_ref TEXT NOT NULL,
            case_id TEXT NOT NULL,
            subject_token TEXT NOT NULL,
            type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            received_at TEXT NOT NULL,
            source TEXT NOT NULL,
            webhook_id TEXT,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX events_case ON events (case_id, occurred_at)",
        "CREATE INDEX events_subject ON events (subject_token, occurred_at)",
        "CREATE INDEX events_partner ON events (partner_id, type)",
        """CREATE TABLE violations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            partner_id TEXT NOT NULL,
            case_id TEXT NOT NULL,
            rule TEXT NOT NULL,
            source TEXT NOT NULL,
            message TEXT NOT NULL,
            evidence TEXT NOT NULL,
            event_id INTEGER,
            at TEXT NOT NULL
        )""",
        "CREATE INDEX violations_partner ON violations (partner_id, at)",
        """CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('operator', 'auditor', 'admin')),
            secret_hash TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )""",
        """CREATE TABLE poll_cursors (
            partner_id TEXT PRIMARY KEY,
            cursor TEXT,
            polled_at TEXT NOT NULL
        )""",
    ],
    [
        # Audit: the writer's compact range (size and the perfect-subtree hashes,
        # concatenated), so an append hashes O(log n) nodes instead of re-reading the
        # log; and the hashes of perfect subtrees of 64 leaves and up, so an inclusion
        # or consistency proof reads a few rows instead of every leaf hash.
        """CREATE TABLE audit_tree (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            size INTEGER NOT NULL,
            nodes BLOB NOT NULL
        )""",
        """CREATE TABLE audit_nodes (
            height INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            hash BLOB NOT NULL,
            PRIMARY KEY (height, idx)
        )""",
    ],
    [
        # Audit: the lookup by case token is indexed per block of 4096 entries. Case
        # tokens are random, so an index led by the token takes each append at a
        # random page of an index as large as the log, and a commit of 1000 entries
        # writes about as many index pages (appends ran at a fifth of their speed
        # without it). Led by the block, an append only touches the current block's
        # few pages; a lookup seeks once per block (`gateway.audit.query.CASE_BLOCK`,
        # whose expression must match this one for the index to be used).
        "DROP INDEX audit_by_case",
        "CREATE INDEX audit_by_case_block ON audit_entries ((idx / 4096), case_token)",
    ],
    [
        # Audit: subtrees of 16 and 32 leaves are stored too, so that a proof reads and
        # hashes a block of 16 leaf hashes instead of 64 (about 0.65 against 0.95 ms
        # at a million entries, bench/audit.py). Computed here for the log so far.
        DataStep("audit-subtrees-16-32"),
    ],
    [
        # Supervision: the numbers and addresses of a debtor under one bank-side identity
        # (a pseudonym, never the number), with the zone and label the case gives them;
        # which partner-scoped token stands for which of them (recorded at placement,
        # so per-number caps hold across partners); and the case's limitation events.
        """CREATE TABLE contact_points (
            subject_token TEXT NOT NULL,
            number_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            label TEXT,
            timezone TEXT,
            PRIMARY KEY (subject_token, number_id)
        )""",
        """CREATE TABLE number_tokens (
            partner_id TEXT NOT NULL,
            token TEXT NOT NULL,
            number_id TEXT NOT NULL,
            subject_token TEXT NOT NULL,
            PRIMARY KEY (partner_id, token)
        )""",
        "CREATE INDEX number_tokens_subject ON number_tokens (subject_token)",
        "ALTER TABLE assignments ADD COLUMN limitation_events TEXT",
    ],
    [
        # Go-live tests (`gateway partners test`): the test package's case_ref, by which
        # the partner's test report is known, and how the test stands. Written by the
        # command, read and updated by whichever instance takes the partner's report.
        """CREATE TABLE partner_tests (
            package_id TEXT PRIMARY KEY,
            partner_id TEXT NOT NULL REFERENCES partners(id),
            case_ref TEXT NOT NULL UNIQUE,
            package_digest TEXT NOT NULL,
            started_at TEXT NOT NULL,
            deadline TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('waiting', 'passed', 'failed')),
            outcome TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX partner_tests_waiting ON partner_tests (state, partner_id)",
    ],
    [
        # Operations: tokens that expire; a package put back in the outbox counts its
        # tries again from the attempts it had (`retry_base`), while its attempt rows
        # keep their numbers; notices already given (an overdue attestation, a late
        # checkpoint), so that every instance alerts once.
        "ALTER TABLE api_tokens ADD COLUMN expires_at TEXT",
        "ALTER TABLE packages ADD COLUMN retry_base INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE ops_notices (
            key TEXT PRIMARY KEY,
            at TEXT NOT NULL
        )""",
    ],
    [
        # Delivery: the circuit breaker opens on a failure rate over a sliding window
        # (its buckets, as JSON) and ignores attempts that started before it opened; a
        # Retry-After holds back its own package, the partner only through the breaker.
        "ALTER TABLE partner_state ADD COLUMN recent TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE partner_state ADD COLUMN opened_at TEXT",
        "ALTER TABLE partner_state DROP COLUMN paused_until",
    ],
    [
        # Audit: witnesses' cosignatures of checkpoints (C2SP tlog-cosignature), one
        # signature line per witness and checkpoint, kept apart from the log's own note.
        """CREATE TABLE audit_cosignatures (
            size INTEGER NOT NULL REFERENCES audit_checkpoints(size),
            witness TEXT NOT NULL,
            line TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (size, witness)
        )""",
    ],
    [
        # Personal data lifecycle (gateway/lifecycle/): data keys of encryption at rest
        # (gateway/storage/atrest.py), what each retention purge left behind, the
        # original of a partner's free text (encrypted; the body keeps it screened),
        # legal holds and erasure requests. The upgrade step encrypts what is stored.
        """CREATE TABLE data_keys (
            id TEXT PRIMARY KEY,
            scope TEXT NOT NULL UNIQUE,
            kek_id TEXT NOT NULL,
            wrapped BLOB NOT NULL
        )""",
        "ALTER TABLE packages ADD COLUMN sealed_purged_at TEXT",
        "ALTER TABLE packages ADD COLUMN plaintext_purged_at TEXT",
        "ALTER TABLE events ADD COLUMN original TEXT",
        "ALTER TABLE events ADD COLUMN original_purged_at TEXT",
        "ALTER TABLE events ADD COLUMN text_purged_at TEXT",
        "ALTER TABLE assignments ADD COLUMN reference_purged_at TEXT",
        "CREATE INDEX packages_subject ON packages (subject_token)",
        """CREATE TABLE legal_holds (
            case_token TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            held_at TEXT NOT NULL,
            actor TEXT NOT NULL
        )""",
        """CREATE TABLE erasures (
            id TEXT PRIMARY KEY,
            subject_token TEXT NOT NULL,
            reason TEXT NOT NULL,
            requested_at TEXT NOT NULL,
            actor TEXT NOT NULL,
            completed_at TEXT
        )""",
        "CREATE INDEX erasures_subject ON erasures (subject_token)",
        """CREATE TABLE erasure_cases (
            erasure_id TEXT NOT NULL REFERENCES erasures(id),
            partner_id TEXT NOT NULL,
            case_ref TEXT NOT NULL,
            case_token TEXT NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (erasure_id, partner_id, case_ref)
        )""",
        DataStep("encrypt-at-rest"),
    ],
    [
        # Dashboard: signed-in browser sessions, each opened with an API token (whose
        # role and revocation it follows); only SHA-256 of the session secret is stored.
        """CREATE TABLE ui_sessions (
            secret_hash TEXT PRIMARY KEY,
            token_id TEXT NOT NULL REFERENCES api_tokens(id),
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""",
        "CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at)",
    ],
    [
        # Delivery: a partner's rate and concurrency limits hold for the whole deployment
        # (gateway/delivery/ratelimit.py): the rate as the theoretical arrival time of
        # the next send (GCRA), and each dispatcher lane's hold on concurrency slots,
        # with its wish and an expiry (database clock, seconds since the epoch) after
        # which a dead dispatcher's slots count no more.
        """CREATE TABLE partner_limits (
            partner_id TEXT PRIMARY KEY REFERENCES partners(id),
            next_send REAL NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE partner_slots (
            partner_id TEXT NOT NULL REFERENCES partners(id),
            holder TEXT NOT NULL,
            held INTEGER NOT NULL,
            wanted INTEGER NOT NULL,
            expires REAL NOT NULL,
            PRIMARY KEY (partner_id, holder)
        )""",
    ],
    [
        # Supervision: a person's contact history (read for each contact report they
        # are the subject of, gateway/supervision/history.py) by kind of event and
        # time, instead of every event of the person, from the first placement on.
        "CREATE INDEX events_subject_type ON events (subject_token, type, occurred_at)",
        # ... and their contacts of third parties, counted over all time. The query names
        # the same terms, literally, or the index is not used; the same columns as the
        # index above, or SQLite's planner prefers that one (more terms).
        "CREATE INDEX events_third_party ON events (subject_token, type, occurred_at) WHERE"
        """ type = 'contact_attempt' AND body LIKE '%"target":"third_party"%'""",
    ],
    [
        # Delivery: a package's two large columns (the JWE sent and the JWS inside it,
        # some 7 KB together, encrypted at rest) in a table of their own, written once at
        # placement and blanked by purges: claiming a package and storing its result
        # rewrite a small row, not the body's overflow pages. A purged value stays '',
        # its time in packages.sealed_purged_at / plaintext_purged_at.
        """CREATE TABLE package_bodies (
            package_id TEXT PRIMARY KEY REFERENCES packages(id),
            sealed TEXT NOT NULL,
            signed TEXT NOT NULL
        )""",
        "INSERT INTO package_bodies (package_id, sealed, signed) SELECT id, sealed, signed FROM packages",
        "ALTER TABLE packages DROP COLUMN sealed",
        "ALTER TABLE packages DROP COLUMN signed",
    ],
    [
        # Events: the index by (subject_token, occurred_at) is read by no statement since
        # events_subject_type (subject_token, type, occurred_at) came: each finds a
        # person's events through that one's leading column. Every report still wrote an
        # entry into it, at a random page (subject tokens are random).
        "DROP INDEX events_subject",
    ],
]


async def migrate(db: Database, data_steps: Mapping[str, DataStepFunction] | None = None) -> int:
    """Bring ``db`` to the newest version; return that version. ``data_steps`` maps each
    `DataStep`'s name to its function; a database that needs one not given is refused."""
    async with db.transaction() as tx:
        # Instances starting together: one migrates, the others wait and find it done.
        await tx.take_turns(Lock.MIGRATIONS)
        await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = await tx.fetchval("SELECT MAX(version) FROM schema_version") or 0
        if current > len(MIGRATIONS):
            raise ConfigError(
                f"the database is at schema version {current}, newer than this gateway "
                f"knows ({len(MIGRATIONS)}): upgrade the gateway"
            )
        fresh = current == 0
        for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
            for step in statements:
                if isinstance(step, str):
                    await tx.execute(db.translate_ddl(step))
                elif not fresh:
                    await _data_step(tx, step, data_steps or {}, current)
            await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return len(MIGRATIONS)


async def _data_step(
    tx: Transaction, step: DataStep, data_steps: Mapping[str, DataStepFunction], current: int
) -> None:
    function = data_steps.get(step.name)
    if function is None:
        raise StorageError(
            f"the database (schema version {current}) needs the upgrade step {step.name!r}: "
            "open it through the gateway (any `gateway` command) to upgrade it"
        )
    await function(tx)
