"""The partner's SFTP server: connecting with a pinned host key, atomic uploads, moves.

The server's host key must be one the profile pins (``adapter_config.host_keys``):
there is no trust on first use and no known_hosts file; a server presenting any other
key is refused before a byte is sent. The bank logs in with its SSH key for this
partner (``adapter_config.client_key``, a 0600 file of the key store).

Foreign errors become ``gateway.errors`` here, at the boundary: a refused connection,
a wrong host key, a refused login, an SFTP failure -> ``PartnerUnavailable`` (retried:
the next attempt may find it fixed); no answer within the time left ->
``PartnerTimeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.errors import PartnerTimeout, PartnerUnavailable

if TYPE_CHECKING:
    import asyncssh

#: Largest status file read; a bigger one is refused unread.
MAX_FILE = 16 << 20


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    username: str

    @classmethod
    def parse(cls, endpoint: str) -> Endpoint:
        url = urlsplit(endpoint)
        if url.scheme != "sftp" or not url.hostname or not url.username or url.path not in ("", "/"):
            raise ValueError(f"endpoint {endpoint!r} must be sftp://USER@HOST[:PORT]")
        return cls(url.hostname, url.port or 22, url.username)

    def __str__(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


def pinned_keys(lines: list[str]) -> list[asyncssh.SSHKey]:
    """The host keys a profile pins (``ssh-ed25519 AAAA...`` lines); ValueError if not."""
    import asyncssh  # here, not at start-up: every gateway command would load it (~0.1 s)

    keys = []
    for number, line in enumerate(lines):
        try:
            keys.append(asyncssh.import_public_key(line))
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError(
                f"host_keys[{number}] is not an SSH public key line (ssh-ed25519 AAAA...)"
            ) from None
    return keys


@contextlib.asynccontextmanager
async def session(
    where: Endpoint, host_keys: list[asyncssh.SSHKey], client_key: asyncssh.SSHKey, timeout: float
) -> AsyncIterator[asyncssh.SFTPClient]:
    """An SFTP session with the partner, every foreign error translated; the whole
    block must finish within ``timeout`` seconds."""
    import asyncssh

    try:
        async with asyncio.timeout(timeout):
            async with asyncssh.connect(
                where.host, where.port, username=where.username, client_keys=[client_key],
                known_hosts=(host_keys, [], []), agent_path=None, config=None, connect_timeout=timeout,
            ) as conn, conn.start_sftp_client() as sftp:
                yield sftp
    except TimeoutError:
        raise PartnerTimeout(f"sftp {where}: no answer within {timeout:g} s") from None
    except asyncssh.HostKeyNotVerifiable:
        raise PartnerUnavailable(
            f"sftp {where}: the server's host key is not one adapter_config.host_keys pins; refused, nothing"
            " sent (if the partner changed its key, confirm the new one with them and update the profile)"
        ) from None
    except asyncssh.PermissionDenied:
        raise PartnerUnavailable(
            f"sftp {where}: login refused for the bank's key (adapter_config.client_key)"
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise PartnerUnavailable(f"sftp {where}: {type(exc).__name__}: {exc}") from None


async def put_atomic(sftp: asyncssh.SFTPClient, folder: str, name: str, content: bytes) -> None:
    """Write ``folder/name`` under a temporary name, then rename it into place: the
    partner never sees half a file. An existing file of that name (an earlier try)
    is replaced."""
    import asyncssh

    final = f"{folder}/{name}"
    temporary = f"{folder}/.{name}.part"
    async with sftp.open(temporary, "wb") as handle:
        await handle.write(content)
        with contextlib.suppress(asyncssh.SFTPOpUnsupported):
            await handle.fsync()
    try:
        await sftp.posix_rename(temporary, final)
    except asyncssh.SFTPOpUnsupported:
        if await sftp.exists(final):
            await sftp.remove(final)
        await sftp.rename(temporary, final)


async def move(sftp: asyncssh.SFTPClient, source: str, folder: str, name: str, tag: str) -> None:
    """Move ``source`` to ``folder/name``, or ``folder/name.tag`` if that is taken
    (a partner reusing a file name); a file already gone is left alone."""
    import asyncssh

    await sftp.makedirs(folder, exist_ok=True)
    target = f"{folder}/{name}"
    if await sftp.exists(target):
        target = f"{target}.{tag}"
    with contextlib.suppress(asyncssh.SFTPNoSuchFile):
        await sftp.rename(source, target)


async def read_small(sftp: asyncssh.SFTPClient, path: str) -> bytes:
    """The file at ``path``; ValueError if it is larger than `MAX_FILE`."""
    attrs = await sftp.stat(path)
    if attrs.size is not None and attrs.size > MAX_FILE:
        raise ValueError(f"larger than {MAX_FILE >> 20} MiB")
    async with sftp.open(path, "rb") as handle:
        data: bytes = await handle.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise ValueError(f"larger than {MAX_FILE >> 20} MiB")
    return data
