"""The gateway's working set: settings, keys, database and plugins, opened together."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pluggy

from gateway.config import Settings
from gateway.onboarding.keys import KeyStore
from gateway.plugin.adapter import Adapter
from gateway.plugin.manager import adapters, get_plugin_manager
from gateway.storage import Database, open_database

if TYPE_CHECKING:
    from gateway.audit.signer import LogSigner
    from gateway.storage.groups import GroupWriter
    from gateway.supervision.rules import RulePack


def utcnow() -> datetime:
    return datetime.now(UTC)


def isotime(moment: datetime) -> str:
    """The one timestamp format stored and logged: UTC, RFC 3339, microseconds."""
    # isoformat, not strftime: it pads years below 1000, so every stored time has one
    # width and text order is time order.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


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
        from gateway.supervision.rules import load_rule_pack

        return load_rule_pack(self.settings.rule_pack)

    @functools.cached_property
    def audit_signer(self) -> LogSigner:
        """Signs audit checkpoints inside the appending transaction; made once."""
        from gateway.audit.signer import signer_for

        return signer_for(self)

    @functools.cached_property
    def writer(self) -> GroupWriter:
        """Runs concurrent writes in shared transactions (see `gateway.storage.groups`)."""
        from gateway.storage.groups import GroupWriter

        return GroupWriter(self)

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
