"""Adapter for file partners over SFTP: placement batches out, signed status files in.

Packages due for the partner are gathered into one batch per *window*: the window opens
with the first package the dispatcher hands over and closes when it holds
``max_records`` packages or ``max_wait`` seconds have passed. Each package's delivery
waits for its window: the batch is sealed into the journal (`plugins.sftp_batch.spool`),
uploaded (`plugins.sftp_batch.files` says what is in it), and then every package of it
is delivered, the batch id as its partner reference. An upload that fails fails each of
its packages; when the dispatcher retries one, the journal names its batch, which is
uploaded again whole under the same id; so is one whose upload stopped before its first
file because the attempt's concurrency slot lapsed (`before_sending`). The dispatcher
hands over at most ``limits.concurrency`` packages at once and cuts an attempt off after
``limits.timeout``: onboarding checks that ``max_records`` and ``max_wait`` fit.

Status files are polled (``poll_interval``) from ``status_dir``: each page is the ready
files (``NAME.jsonl`` with ``NAME.jsonl.jws``) in name order, verified and read into
events that the poller takes in through the pipeline, each once by its ``id``. The
cursor names the page's files: the next poll, which runs once the page's events are
taken in, moves them to ``processed_dir``. A file that fails its signature or does not
read as events, or whose signature has not come ``signature_wait`` seconds after it, is
moved to ``rejected_dir`` at once, nothing of it applied, and a
``status_file_refused`` event is raised (an alert).

Partners that take only OpenPGP (``sealing = "openpgp"``) get the files of
`plugins.sftp_batch.pgpfiles` instead: the same batches, windows and journal, the
records encrypted to the key ``[adapter_config.openpgp]`` pins and signed by the bank's
OpenPGP key, and their status files signed with OpenPGP (``NAME.jsonl.asc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pysequoia
from pydantic import Field, field_validator

from gateway.clock import isotime, utcnow
from gateway.errors import GatewayError, SealingError
from gateway.onboarding import openpgp
from gateway.plugin.adapter import (
    Adapter,
    AdapterConfig,
    OutboundPackage,
    PollResult,
    Receipt,
    Resources,
    before_sending,
)
from gateway.plugin.events import Event
from plugins.sftp_batch import files, pgpfiles, remote
from plugins.sftp_batch.spool import Spool
from schemas.partner import PartnerProfile

if TYPE_CHECKING:
    import asyncssh  # imported where used: every gateway command loads this plugin

log = logging.getLogger(__name__)


class OpenPgpConfig(AdapterConfig):
    key: str = Field(description="the partner's public OpenPGP key: partners/NAME.asc")
    fingerprint: str = Field(description="that key's fingerprint (40 hex digits), confirmed with the partner")

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, value: str) -> str:
        return openpgp.normal_fingerprint(value)


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
    signature_wait: float = Field(
        default=900.0, gt=0, description="seconds a status file may wait for its signature file"
    )
    openpgp: OpenPgpConfig | None = Field(default=None, description="for sealing = 'openpgp'")


@dataclass
class Window:
    packages: dict[str, OutboundPackage] = field(default_factory=dict)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    sealed: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SftpBatchAdapter(Adapter):
    name = "sftp_batch"
    kinds: ClassVar[frozenset[str]] = frozenset({"agency", "arbitration"})
    Config = SftpConfig
    sealings: ClassVar[frozenset[str]] = frozenset({"jwe", "openpgp"})
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
        #: Appended to a status file's name: its detached signature.
        self.signature_suffix = pgpfiles.STATUS_SIGNATURE if self.config.openpgp is not None else ".jws"
        if resources is not None:
            self.client_key()  # onboarding: the key is there, private to its owner, and a key
            if self.config.openpgp is not None:
                self.partner_cert()  # the partner's key as the profile pins it
                try:
                    openpgp.bank_key(resources.keys)
                except GatewayError as exc:
                    raise ValueError(f"the bank's OpenPGP key: {exc}") from None

    @classmethod
    def check_profile(cls, profile: PartnerProfile) -> AdapterConfig:
        config = SftpConfig.model_validate(profile.adapter_config)
        remote.Endpoint.parse(profile.endpoint)
        remote.pinned_keys(config.host_keys)
        if profile.sealing == "openpgp" and config.openpgp is None:
            raise ValueError("sealing 'openpgp' needs [adapter_config.openpgp] (the partner's key)")
        if profile.sealing != "openpgp" and config.openpgp is not None:
            raise ValueError("[adapter_config.openpgp] is for sealing = 'openpgp'; this profile has 'jwe'")
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
        import asyncssh

        try:
            path = self.lent().keys.partner_secret_path(self.config.client_key)
            return asyncssh.read_private_key(path)
        except GatewayError as exc:
            raise ValueError(f"client_key: {exc}") from None
        except (asyncssh.KeyImportError, OSError) as exc:
            raise ValueError(f"client_key: not an SSH private key without a passphrase: {exc}") from None

    def partner_cert(self) -> pysequoia.Cert:
        """The partner's OpenPGP key, checked now (ValueError naming what is wrong)."""
        assert self.config.openpgp is not None
        pinned = self.config.openpgp
        try:
            return openpgp.partner_cert(self.lent().keys, pinned.key, pinned.fingerprint, utcnow())
        except (GatewayError, ValueError) as exc:
            raise ValueError(f"openpgp.key: {exc}") from None

    def build_batch(self, packages: list[OutboundPackage]) -> files.Batch:
        now = utcnow()
        batch_id = files.new_batch_id(now)
        if self.config.openpgp is None:
            return files.build_batch(batch_id, self.profile.id, packages, self.lent().signer(), now)
        try:
            recipient = self.partner_cert()
            bank = openpgp.bank_key(self.lent().keys, now)
        except (GatewayError, ValueError) as exc:  # expired or replaced since onboarding
            raise SealingError(f"batch for {self.profile.id}: {exc}") from None
        return pgpfiles.build_batch(batch_id, self.profile.id, packages, bank, recipient, now)

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
            batch = self.build_batch(list(window.packages.values()))
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
            # The window and the login may have taken long enough for the process to
            # stall past its concurrency slots (the task runs in the context of the
            # delivery that started it): then nothing is uploaded, each package of the
            # batch gets NotSent and goes again, and the journal keeps the batch whole.
            before_sending()
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
            ready, unsigned = await self._ready(sftp, {h["name"] for h in handed})
            for name in unsigned:
                wait = f"{self.config.signature_wait:g}"
                await self._refuse(sftp, {"name": name}, f"no {name}{self.signature_suffix} after {wait} s")
            for entry in ready:
                taken = await self._read_status(sftp, entry)
                if taken is not None:
                    page.append(entry)
                    events += taken
        return PollResult(events=events, cursor=json.dumps(page))

    async def _file_away(self, sftp: asyncssh.SFTPClient, handed: list[dict[str, Any]]) -> None:
        """Move the files of the last page, whose events are taken in, to processed_dir,
        unless a file of that name is not the one read (a name reused since)."""
        import asyncssh

        for entry in handed:
            path = f"{self.config.status_dir}/{entry['name']}"
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                attrs = await sftp.stat(path)
                if (attrs.size, attrs.mtime) != (entry["size"], entry["mtime"]):
                    continue
                for suffix in ("", self.signature_suffix):
                    await remote.move(sftp, path + suffix, self.config.processed_dir,
                                      entry["name"] + suffix, entry["sha256"][:12])

    async def _ready(
        self, sftp: asyncssh.SFTPClient, skip: set[str]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The status files with their signature beside them, in name order; and those
        whose signature has not come within ``signature_wait`` (their mtime, the server's)."""
        names = {str(n.filename): n.attrs for n in await sftp.readdir(self.config.status_dir)}
        status = sorted(
            name for name in names
            if name.endswith(files.STATUS) and not name.startswith(".") and name not in skip
        )
        ready = [name for name in status if name + self.signature_suffix in names]
        overdue = utcnow().timestamp() - self.config.signature_wait
        unsigned = [
            name for name in status
            if name + self.signature_suffix not in names and (names[name].mtime or 0) < overdue
        ]
        return [
            {"name": name, "size": names[name].size, "mtime": names[name].mtime}
            for name in ready[: self.config.files_per_poll]
        ], unsigned

    async def _read_status(
        self, sftp: asyncssh.SFTPClient, entry: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        """The file's events, or None if it is refused (and moved to rejected_dir)."""
        path = f"{self.config.status_dir}/{entry['name']}"
        try:
            content = await remote.read_small(sftp, path)
            signature = await remote.read_small(sftp, path + self.signature_suffix)
            entry["sha256"] = files.sha256(content)
            problem = self._signature_problem(content, signature)
            if problem:
                raise ValueError(problem)
            return files.status_events(content)
        except (ValueError, UnicodeDecodeError) as exc:
            await self._refuse(sftp, entry, str(exc))
            return None

    def _signature_problem(self, content: bytes, signature: bytes) -> str | None:
        """Why ``signature`` is not the partner's over ``content``, or None."""
        if self.config.openpgp is None:
            keys = self.lent().keys.partner_signature_keys(self.profile.jwks)
            if files.verify_detached(content, signature, keys):
                return None
            return "its signature does not verify with the partner's keys"
        return openpgp.verify_detached(content, signature, self.partner_cert())

    async def _refuse(self, sftp: asyncssh.SFTPClient, entry: dict[str, Any], reason: str) -> None:
        """Move a refused status file (and its signature) to rejected_dir; say so in the
        log and as a ``status_file_refused`` event (an alert). Nothing of it is applied."""
        name = entry["name"]
        log.warning("partner %s: status file %s refused: %s", self.profile.id, name, reason)
        path = f"{self.config.status_dir}/{name}"
        tag = entry.get("sha256", "x")[:12]
        for suffix in ("", self.signature_suffix):
            await remote.move(sftp, path + suffix, self.config.rejected_dir, name + suffix, tag)
        emit = self.lent().emit
        if emit is not None:
            detail = {"file": name, "reason": reason, "moved_to": self.config.rejected_dir}
            emit([Event("status_file_refused", isotime(utcnow()), self.profile.id, detail=detail)])

    async def aclose(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        self._tasks.clear()
