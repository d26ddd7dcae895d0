"""Open SMTP connections of one email partner, each sending many messages.

A connection costs a TCP connect, the greeting, EHLO, STARTTLS (a TLS handshake), EHLO
again and perhaps AUTH: several milliseconds of CPU, more than the message itself. So
an adapter keeps the connections it opened and sends the next messages over them; as
many are open as attempts run at once (the partner's ``limits.concurrency``).

- A connection carries at most ``messages_per_connection`` messages (the profile's
  ``adapter_config``; relays limit it, often to a few dozen or a hundred), then QUIT.
- An error the relay *answered* (4xx, 5xx: refused recipient, full mailbox) leaves the
  connection usable: it is reset (RSET) and goes back to the pool. A relay that does not
  answer the RSET within ``RSET_SECONDS`` (or the attempt's time left), or answers it
  wrongly, costs the connection, never the refusal: the caller gets the refusal.
- Anything else (a connection lost, a timeout, a cancelled attempt, a protocol error)
  closes it: its state is unknown. The next message opens a new one; the failed one is
  the core's to retry, never resent here, since the relay may have taken it.
- A connection the relay closed while idle is seen closed and dropped before use; one
  idle longer than ``IDLE_SECONDS`` is closed too (relays drop idle clients after a
  few minutes, RFC 5321 §4.5.3.2.7).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib

from gateway.errors import NotSent
from gateway.plugin.adapter import before_sending

#: Longest a connection waits unused in the pool before it is closed instead of reused.
IDLE_SECONDS = 60.0
QUIT_TIMEOUT = 5.0
#: Longest a relay may take to answer RSET after a refusal; RSET does no work, so a
#: relay slower than this is not worth keeping the connection to.
RSET_SECONDS = 1.0


@dataclass
class Connection:
    client: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = field(default_factory=time.monotonic)


class Connections:
    def __init__(
        self, connect: Callable[[], Awaitable[aiosmtplib.SMTP]], per_connection: int, timeout: float
    ) -> None:
        self._connect = connect
        self.per_connection = per_connection
        self.timeout = timeout
        self._idle: list[Connection] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.opened = 0
        """Connections opened so far (for tests and the bench)."""

    async def send(self, sender: str, recipient: str, message: bytes, utf8: bool) -> str:
        """Send one message within ``timeout``; return the relay's reply to its DATA.
        Errors are aiosmtplib's (and OSError): the caller translates them; NotSent (see
        :func:`before_sending`) before anything is sent, the connection kept."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        conn = await self._take()
        try:
            before_sending()
        except NotSent:
            self._give_back(conn)
            raise
        try:
            async with asyncio.timeout_at(deadline):
                reply = await _transaction(conn.client, sender, recipient, message, utf8)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            await self._reset(conn, deadline)
            raise  # the refusal, whatever became of the connection
        except BaseException:
            conn.client.close()
            raise
        conn.sent += 1
        self._give_back(conn)
        return reply

    async def _reset(self, conn: Connection, deadline: float) -> None:
        """RSET after a refusal, then back to the pool; on no answer in time, any error or
        a cancelled attempt, the connection is closed (a cancellation goes on)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + RSET_SECONDS)):
                await conn.client.rset(timeout=None)
        except Exception:
            conn.client.close()
            return
        except BaseException:
            conn.client.close()
            raise
        self._give_back(conn)

    async def _take(self) -> Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.client.is_connected and now - conn.idle_since < IDLE_SECONDS:
                return conn
            self._quit(conn)
        client = await self._connect()
        self.opened += 1
        return Connection(client)

    def _give_back(self, conn: Connection) -> None:
        if self._closed or conn.sent >= self.per_connection or not conn.client.is_connected:
            self._quit(conn)
        else:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)

    def _quit(self, conn: Connection) -> None:
        """Say QUIT and close, apart from the attempt (its result is known already)."""
        if not conn.client.is_connected:
            conn.client.close()
            return
        task = asyncio.ensure_future(_quit(conn.client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """QUIT the idle connections; one in use is closed when its message is done."""
        self._closed = True
        while self._idle:
            self._quit(self._idle.pop())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _transaction(
    client: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes, utf8: bool
) -> str:
    """MAIL, RCPT and DATA for one message: what ``SMTP.sendmail`` does, less parsing the
    addresses twice more (about a sixth of a message's CPU here): the schemas checked them
    (no white space, one ``@``) and aiosmtplib refuses a command with a control character.
    The caller bounds the whole of it in time: one timer a message, where a timeout per
    command would cost four. Returns the relay's reply to the DATA."""
    options = b""
    if utf8:
        if not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("the relay does not take non-ASCII addresses (no SMTPUTF8)")
        options = b" SMTPUTF8"
    reply = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode() + b">" + options, timeout=None)
    if reply.code != 250:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
    reply = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode() + b">", timeout=None)
    if reply.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)]
        )
    return (await client.data(message, timeout=None)).message


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await client.quit(timeout=QUIT_TIMEOUT)
    finally:  # cancelled too (the loop closing): never left open
        client.close()
