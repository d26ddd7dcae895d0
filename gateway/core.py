"""The gateway's working set: settings, keys, database and plugins, opened together.

Everything below this module (storage, audit, the rule packs) takes the parts it needs
as arguments; this is the one place that wires them together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import pluggy

from gateway.audit import log as audit_log
from gateway.audit import timer as checkpoint_timer
from gateway.audit import witnessing
from gateway.audit.canonical import entry_fields
from gateway.audit.signer import LogSigner, signer_for
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.inbound.formats import CallbackFormat
from gateway.lifecycle import upgrade
from gateway.onboarding.custody import KeyCustody
from gateway.onboarding.keys import KeyStore
from gateway.ops.plugin import OpsPlugin
from gateway.placement.transforms import Transform
from gateway.plugin.adapter import Adapter, Resources
from gateway.plugin.events import Event, emit
from gateway.plugin.manager import (
    adapters,
    callback_formats,
    get_plugin_manager,
    key_custody,
    rule_packs,
    transforms,
)
from gateway.storage import Database
from gateway.storage import open_database as open_storage
from gateway.storage.atrest import FileKek, KeyRing
from gateway.storage.base import Transaction
from gateway.storage.groups import GroupWriter
from gateway.storage.migrations import DataStepFunction
from gateway.supervision.rules import RulePack, load_rule_pack
from schemas.audit import Entry


async def open_database(url: str, keyring: KeyRing | None = None) -> Database:
    """The database at ``url``, migrated, with the upgrade steps of the audit log's tables
    and, given the ``keyring`` of encryption at rest, of the personal data's."""
    steps: dict[str, DataStepFunction] = dict(audit_log.DATA_STEPS)
    if keyring is not None:
        steps.update(upgrade.data_steps(keyring))
    return await open_storage(url, steps)


def storage_keyring(custody: KeyCustody, settings: Settings) -> KeyRing:
    """The keys of the data at rest: the custody's, or the file in keys/bank/."""
    return KeyRing(custody.storage_keys() or FileKek(settings.keys_dir / "bank"))


class Gateway:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        pm: pluggy.PluginManager,
        clock: Callable[[], datetime] = utcnow,
        custody: KeyCustody | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.pm = pm
        self.keys = KeyStore(settings.keys_dir)
        self.adapters: dict[str, type[Adapter]] = adapters(pm)
        self.transforms: dict[str, Transform] = transforms(pm)
        self.callback_formats: dict[str, CallbackFormat] = callback_formats(pm)
        self.custody: KeyCustody = custody or key_custody(pm, settings)
        self.keyring = storage_keyring(self.custody, settings)
        self.clock = clock
        # Metrics, logs and alerts of committed actions (gateway.ops).
        self.ops = OpsPlugin(settings)
        pm.register(self.ops, name=f"gateway.ops.{id(self)}")

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        pm: pluggy.PluginManager | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Gateway:
        pm = pm or get_plugin_manager()
        custody = key_custody(pm, settings)
        db = await open_database(settings.database_url, storage_keyring(custody, settings))
        return cls(settings, db, pm, clock, custody)

    @functools.cached_property
    def rules(self) -> RulePack:
        """The rule pack named in gateway.toml, loaded once."""
        return load_rule_pack(self.settings.rule_pack, rule_packs(self.pm))

    @functools.cached_property
    def audit_signer(self) -> LogSigner:
        """Signs audit checkpoints inside the appending transaction; made once."""
        return signer_for(
            self.settings.bank_id,
            self.keys,
            self.custody.audit_log_key(),
            self.settings.audit_checkpoint_every,
            self.now,
        )

    @functools.cached_property
    def witnesses(self) -> list[witnessing.Target]:
        """The witnesses of gateway.toml, as the log submits checkpoints to them."""
        return witnessing.configured(self.settings.audit_witnesses)

    def audit_upkeep(self, *, final: bool) -> AbstractAsyncContextManager[None]:
        """The checkpoint timer and witness submissions while a command that appends
        runs; with `final`, a last checkpoint and submission as it stops."""
        return checkpoint_timer.upkeep(
            self.db,
            self.audit_signer,
            self.settings.audit_checkpoint_seconds,
            self.witnesses,
            final=final,
        )

    @functools.cached_property
    def adapter_resources(self) -> Resources:
        """What adapters are lent: the key store, the package signer, a state folder, events."""
        return Resources(self.keys, self.custody.package_signer, self.settings.base_dir / "spool", self.emit)

    @functools.cached_property
    def writer(self) -> GroupWriter:
        """Runs concurrent writes in shared transactions (see `gateway.storage.groups`)."""
        return GroupWriter(self.db, self.record)

    async def record(self, tx: Transaction, entries: list[Entry]) -> None:
        """Append the audit entries of what ``tx`` did, in ``tx``; once it commits, tell
        the ``gateway_event`` subscribers (and the checkpoint signed, if one was)."""
        if not entries:
            return
        indices = await audit_log.append(tx, entries, signer=self.audit_signer)
        events = [Event.from_entry(entry, entry_fields(entry)) for entry in entries]
        every = self.audit_signer.every
        if indices[0] // every != (indices[-1] + 1) // every:
            events.append(Event("checkpoint", events[-1].at, detail={"size": indices[-1] + 1}))
        tx.after_commit(lambda: self.emit(events))

    def emit(self, events: list[Event]) -> None:
        """Hand committed actions to the ``gateway_event`` subscribers."""
        emit(self.pm, events)

    def now(self) -> datetime:
        return self.clock()

    async def close(self) -> None:
        if "writer" in self.__dict__:
            await self.writer.close()
        await self.db.close()
        await self.ops.close()
        if self.pm.is_registered(self.ops):
            self.pm.unregister(self.ops)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
