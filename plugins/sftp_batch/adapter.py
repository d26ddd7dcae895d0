"""Adapter for file partners over SFTP: placement batches out, signed status files in.

Packages due for the partner are gathered into one batch per *window*: the window opens
with the first package the dispatcher hands over and closes when it holds
``max_records`` packages or ``max_wait`` seconds have passed. Each package's delivery
waits for its window: the batch is sealed into the journal (`plugins.sftp_batch.spool`),
uploaded (`plugins.sftp_batch.files` says what is in it), and then every package of it
is delivered, the batch id as its partner reference. An upload that fails fails each of
its packages; when the dispatcher retries one, the journal names its batch, which is
uploaded again whole under the same id. The dispatcher hands over at most
``limits.concurrency`` packages at once and cuts an attempt off after
``limits.timeout``: onboarding checks that ``max_records`` and ``max_wait`` fit.

Status files are polled (``poll_interval``) from ``status_dir``: each page is the ready
files (``NAME.jsonl`` with ``NAME.jsonl.jws``) in name order, verified and read into
events that the poller takes in through the pipeline, each once by its ``id``. The
cursor names the page's files: the next poll, which runs once the page's events are
taken in, moves them to ``processed_dir``. A file that fails its signature or does not
read as events is moved to ``rejected_dir`` at once, nothing of it applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import asyncssh
from pydantic import Field

from gateway.clock import utcnow
from gateway.errors import GatewayError
from gateway.plugin.adapter import Adapter, AdapterConfig, OutboundPackage, PollResult, Receipt, Resources
from plugins.sftp_batch import files, remote
from plugins.sftp_batch.spool import Spool
from schemas.partner import PartnerProfile

log = logging.getLogger(__name__)


class SftpConfig(AdapterConfig):
    host_keys: list[str] = Field(min_length=1, description="the server's SSH host keys, pinned")
    client_key: str = Field(description="the bank's SSH private key for this partner: partners/NAME.key")
    upload_dir: str = Field(default="inbound", description="where placement batches go")
    status_dir: str = Field(default="outbound", description="where the partner leaves status files")
    processed_dir: str = Field(default="outbound/processed", description="status files taken in")
    rejected_dir: str = Field(default="outbound/rejected", description="status files refused")
    max_records: int = Field(default=100, ge=1, description="packages per batch, at most limits.concurrency")
    max_wait: float = Field(default=10.0, gt=0, description="seconds a window stays open")
    poll_interval: float | None = Field(default=300.0, gt=0, description="seconds between status polls")
    files_per_poll: int = Field(default=20, ge=1, le=1000, description="status files read per poll")
    retain_days: int = Field(default=7, ge=1, description="days batches stay in the journal")


@dataclass
class Window:
    packages: dict[str, OutboundPackage] = field(default_factory=dict)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    sealed: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SftpBatchAdapter(Adapter):
    name = "sftp_batch"
    kinds: ClassVar[frozenset[str]] = frozenset({"agency", "arbitration"})
    Config = SftpConfig
    config: SftpConfig

    def __init__(
        self, profile: PartnerProfile, config: AdapterConfig, resources: Resources | None = None
    ) -> None:
        super().__init__(profile, config, resources)
        self.where = remote.Endpoint.parse(profile.endpoint)
        self.host_keys = remote.pinned_keys(self.config.host_keys)
        self._window: Window | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._spool: Spool | None = None
        if resources is not None:
            self.client_key()  # onboarding: the key is there, private to its owner, and a key

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = SftpConfig.model_validate(profile.adapter_config)
        remote.Endpoint.parse(profile.endpoint)
        remote.pinned_keys(config.host_keys)
        if profile.sealing != "jwe":
            raise ValueError("a file partner receives sealed packages: sealing = 'jwe'")
        if config.max_records > profile.limits.concurrency:
            raise ValueError(
                f"max_records ({config.max_records}) exceeds limits.concurrency "
                f"({profile.limits.concurrency}): the dispatcher hands over at most that many at once"
            )
        if config.max_wait > profile.limits.timeout / 2:
            raise ValueError(
                f"max_wait ({config.max_wait:g} s) is over half of limits.timeout "
                f"({profile.limits.timeout:g} s): the upload needs the rest"
            )
        return config

    def client_key(self) -> asyncssh.SSHKey:
        try:
            path = self.lent().keys.partner_secret_path(self.config.client_key)
            return asyncssh.read_private_key(path)
        except GatewayError as exc:
            raise ValueError(f"client_key: {exc}") from None
        except (asyncssh.KeyImportError, OSError) as exc:
            raise ValueError(f"client_key: not an SSH private key without a passphrase: {exc}") from None

    def spool(self) -> Spool:
        if self._spool is None:
            folder = self.lent().state_dir / self.profile.id
            self._spool = Spool(folder, self.config.retain_days)
        return self._spool

    def session(self, timeout: float) -> contextlib.AbstractAsyncContextManager[asyncssh.SFTPClient]:
        return remote.session(self.where, self.host_keys, self.client_key(), timeout)

    # -- placements out ----------------------------------------------------------------

    async def deliver(self, package: OutboundPackage) -> Receipt:
        batch_id = self.spool().batch_of(package.package_id)
        if batch_id is None:
            batch_id = await asyncio.shield(self._join(package).sealed)
        await self._sent(batch_id)
        return Receipt(partner_ref=batch_id, status="uploaded", detail=f"in batch {batch_id}")

    def _join(self, package: OutboundPackage) -> Window:
        window = self._window
        if window is None:
            window = self._window = Window()
            self._keep(f"window:{id(window)}", self._close(window))
        window.packages[package.package_id] = package
        if len(window.packages) >= self.config.max_records:
            window.full.set()
        return window

    async def _close(self, window: Window) -> None:
        """Close ``window`` when full or due, and journal its batch."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.max_wait):
                await window.full.wait()
        self._window = None
        try:
            now = utcnow()
            batch = files.build_batch(
                files.new_batch_id(now), self.profile.id, list(window.packages.values()),
                self.lent().signer(), now,
            )
            self.spool().write(batch)
        except asyncio.CancelledError:
            window.sealed.cancel()
            raise
        except Exception as exc:  # a signer or disk failure: each package of it is retried
            window.sealed.set_exception(exc)
            return
        window.sealed.set_result(batch.batch_id)

    async def _sent(self, batch_id: str) -> None:
        """Upload the journalled batch unless it is sent; one upload however many wait."""
        if self.spool().is_sent(batch_id):
            return
        task = self._tasks.get(batch_id) or self._keep(batch_id, self._upload(batch_id))
        await asyncio.shield(task)

    def _keep(self, key: str, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t else None)
        # A failure reaches whoever awaits the task; none may be left (all cancelled).
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _upload(self, batch_id: str) -> None:
        batch = self.spool().read(batch_id)
        # What the attempt has left once its window closed (onboarding keeps it over half).
        async with self.session(self.profile.limits.timeout - self.config.max_wait) as sftp:
            for name, content in batch.files:
                await remote.put_atomic(sftp, self.config.upload_dir, name, content)
        self.spool().mark_sent(batch_id)

    # -- status files in -----------------------------------------------------------------

    def poll_interval(self) -> float | None:
        return self.config.poll_interval

    async def poll(self, since: str | None) -> PollResult:
        handed: list[dict[str, Any]] = json.loads(since) if since else []
        page: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        async with self.session(self.profile.limits.timeout) as sftp:
            await self._file_away(sftp, handed)
            for entry in await self._ready(sftp, {h["name"] for h in handed}):
                taken = await self._read_status(sftp, entry)
                if taken is not None:
                    page.append(entry)
                    events += taken
        return PollResult(events=events, cursor=json.dumps(page))

    async def _file_away(self, sftp: asyncssh.SFTPClient, handed: list[dict[str, Any]]) -> None:
        """Move the files of the last page, whose events are taken in, to processed_dir,
        unless a file of that name is not the one read (a name reused since)."""
        for entry in handed:
            path = f"{self.config.status_dir}/{entry['name']}"
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                attrs = await sftp.stat(path)
                if (attrs.size, attrs.mtime) != (entry["size"], entry["mtime"]):
                    continue
                for suffix in ("", ".jws"):
                    await remote.move(sftp, path + suffix, self.config.processed_dir,
                                      entry["name"] + suffix, entry["sha256"][:12])

    async def _ready(self, sftp: asyncssh.SFTPClient, skip: set[str]) -> list[dict[str, Any]]:
        """The status files with their signature beside them, in name order."""
        names = {str(n.filename): n.attrs for n in await sftp.readdir(self.config.status_dir)}
        ready = sorted(
            name for name in names
            if name.endswith(files.STATUS) and not name.startswith(".") and name + ".jws" in names
            and name not in skip
        )
        return [
            {"name": name, "size": names[name].size, "mtime": names[name].mtime}
            for name in ready[: self.config.files_per_poll]
        ]

    async def _read_status(
        self, sftp: asyncssh.SFTPClient, entry: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        """The file's events, or None if it is refused (and moved to rejected_dir)."""
        path = f"{self.config.status_dir}/{entry['name']}"
        try:
            content = await remote.read_small(sftp, path)
            signature = await remote.read_small(sftp, path + ".jws")
            entry["sha256"] = files.sha256(content)
            keys = self.lent().keys.partner_signature_keys(self.profile.jwks)
            if not files.verify_detached(content, signature, keys):
                raise ValueError("its signature does not verify with the partner's keys")
            return files.status_events(content)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("partner %s: status file %s refused: %s", self.profile.id, entry["name"], exc)
            tag = entry.get("sha256", "x")[:12]
            for suffix in ("", ".jws"):
                await remote.move(sftp, path + suffix, self.config.rejected_dir, entry["name"] + suffix, tag)
            return None

    async def aclose(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        self._tasks.clear()
