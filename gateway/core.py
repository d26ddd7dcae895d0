"""The gateway's working set: settings, keys, database and plugins, opened together.

Everything below this module (storage, audit, the rule packs) takes the parts it needs
as arguments; this is the one place that wires them together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

import pluggy

from gateway.audit import log as audit_log
from gateway.audit.signer import LogSigner, signer_for
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.onboarding.keys import KeyStore
from gateway.plugin.adapter import Adapter
from gateway.plugin.manager import adapters, get_plugin_manager
from gateway.storage import Database
from gateway.storage import open_database as open_storage
from gateway.storage.base import Transaction
from gateway.storage.groups import GroupWriter
from gateway.supervision.rules import RulePack, load_rule_pack
from schemas.audit import Entry


async def open_database(url: str) -> Database:
    """The database at ``url``, migrated, with the upgrade steps of the audit log's tables."""
    return await open_storage(url, audit_log.DATA_STEPS)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        pm: pluggy.PluginManager,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.pm = pm
        self.keys = KeyStore(settings.keys_dir)
        self.adapters: dict[str, type[Adapter]] = adapters(pm)
        self.clock = clock

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        pm: pluggy.PluginManager | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Gateway:
        db = await open_database(settings.database_url)
        return cls(settings, db, pm or get_plugin_manager(), clock)

    @functools.cached_property
    def rules(self) -> RulePack:
        """The rule pack named in gateway.toml, loaded once."""
        return load_rule_pack(self.settings.rule_pack)

    @functools.cached_property
    def audit_signer(self) -> LogSigner:
        """Signs audit checkpoints inside the appending transaction; made once."""
        return signer_for(self.settings.bank_id, self.keys, self.settings.audit_checkpoint_every, self.now)

    @functools.cached_property
    def writer(self) -> GroupWriter:
        """Runs concurrent writes in shared transactions (see `gateway.storage.groups`)."""
        return GroupWriter(self.db, self.record)

    async def record(self, tx: Transaction, entries: list[Entry]) -> None:
        """Append the audit entries of what ``tx`` did, in ``tx``."""
        await audit_log.append(tx, entries, signer=self.audit_signer)

    def now(self) -> datetime:
        return self.clock()

    async def close(self) -> None:
        if "writer" in self.__dict__:
            await self.writer.close()
        await self.db.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
