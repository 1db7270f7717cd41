"""Sending over SMTP: SMTP_URL parsing and a bounded pool of reused aiosmtplib connections that classifies every outcome.

The pool sends one message to one recipient at a time (a campaign message has exactly one
recipient) and tells the caller precisely what happened, because the caller decides between
Sent, Failed and retry, and must never send twice:

- success: the server's 2xx reply to the message content;
- `SmtpSendError` with `reply` set: the server answered 4xx or 5xx (`permanent` for 5xx);
- `SmtpSendError` without `reply`: the connection failed (refused, dropped, timed out); `maybe_delivered`
  is true only when it failed after the whole message content had been sent and before the
  server's reply arrived, the one moment at which the server may have accepted the message.

aiosmtplib opens each session (greeting, EHLO, STARTTLS, AUTH); the mail transactions on it are
written by `_Session`, because aiosmtplib waits for each reply before the next command. When the
server offers PIPELINING (RFC 2920), MAIL FROM, RCPT TO and DATA go out in one write and their
three replies are read together: two round trips per message instead of four, and half the
system calls, which is most of a worker's cost per message.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib
import structlog

from services.common.flags import FALSE_STRINGS, TRUE_STRINGS

log = structlog.get_logger()

TlsMode = Literal["none", "starttls", "implicit"]


class SmtpUrlError(ValueError):
    """SMTP_URL is not a URL Herald can send through; the message never contains the password."""


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to connect: host, port, TLS mode and optional credentials."""

    host: str
    port: int
    tls: TlsMode = "none"
    username: str = ""
    # Kept out of repr() so that a logged target never shows the password.
    password: str = field(default="", repr=False)

    def describe(self) -> str:
        """host:port and TLS mode, for logs (no credentials)."""
        return f"{self.host}:{self.port} (tls={self.tls}{', auth' if self.username else ''})"


def parse_smtp_url(url: str) -> SmtpTarget:
    """SMTP_URL as a target.

    - `smtp://host[:port]`: plain SMTP (port 25); `?starttls=true` upgrades with STARTTLS and fails
      when the server does not offer it (never a silent fallback to plain text).
    - `smtps://host[:port]`: TLS from the first byte (port 465).
    - `user:password@` logs in after connecting; both are URL-decoded (`%40` for @, `%3A` for :).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise SmtpUrlError(f"SMTP_URL is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise SmtpUrlError(
            f"SMTP_URL must start with smtp:// or smtps://, not {scheme + '://' if scheme else '?'}"
        )
    host = parts.hostname or ""
    if not host:
        raise SmtpUrlError("SMTP_URL has no host")
    if port == 0:
        raise SmtpUrlError("SMTP_URL port must be between 1 and 65535")
    if parts.path not in ("", "/") or parts.fragment:
        raise SmtpUrlError("SMTP_URL must not have a path or fragment")
    tls: TlsMode = "implicit" if scheme == "smtps" else "none"
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name.lower() != "starttls":
            raise SmtpUrlError(
                f"SMTP_URL has an unknown parameter {name!r} (known: starttls, and name, weight, rate per relay)"
            )
        if scheme == "smtps":
            raise SmtpUrlError("starttls applies to smtp:// only; smtps:// is TLS from the start")
        flag = value.strip().lower()
        if flag not in TRUE_STRINGS | FALSE_STRINGS:
            raise SmtpUrlError(f"SMTP_URL starttls must be true or false, not {value!r}")
        tls = "starttls" if flag in TRUE_STRINGS else "none"
    username = unquote(parts.username) if parts.username is not None else ""
    password = unquote(parts.password) if parts.password is not None else ""
    if password and not username:
        raise SmtpUrlError("SMTP_URL has a password but no user name")
    return SmtpTarget(
        host=host,
        port=port if port is not None else (465 if scheme == "smtps" else 25),
        tls=tls,
        username=username,
        password=password,
    )


@dataclass(frozen=True)
class SmtpReply:
    """A server reply: its code and text."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


class SmtpSendError(Exception):
    """A message was not (or not provably) accepted; see the module docstring for the three cases.

    `stage` names the command a reply refused: "MAIL", "RCPT", "DATA" or "content" (the reply to the
    message itself); "session" for a session that could not be opened (connect, greeting, EHLO, TLS, login);
    "" for refusals of Herald's own. `relay` names the relay it came from when several are configured
    (services/delivery/relays.py).
    """

    def __init__(
        self,
        description: str,
        *,
        reply: SmtpReply | None = None,
        maybe_delivered: bool = False,
        stage: str = "",
    ) -> None:
        super().__init__(description)
        self.reply = reply
        self.maybe_delivered = maybe_delivered
        self.stage = stage
        self.relay = ""

    @property
    def refuses_recipient(self) -> bool:
        """The server's reply refused this recipient or its message (a bounce), not the sender or the session."""
        return self.reply is not None and self.stage in ("RCPT", "DATA", "content")

    @property
    def permanent(self) -> bool:
        """A 5xx reply: retrying the same message will not help."""
        return self.reply is not None and 500 <= self.reply.code < 600


class SmtpReplyError(Exception):
    """The session cannot go on: the connection was lost, timed out, or the server spoke no SMTP."""


_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_MAX_REPLY_BYTES = 64 * 1024


def message_content(message: bytes) -> bytes:
    """The message as DATA content: CRLF line ends, lines starting with a dot doubled, the final dot line."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _LINE_ENDS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class _Replies(asyncio.Protocol):
    """The receiving side of a session: every reply the server sends, parsed and kept in order."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._buffer = bytearray()
        self._replies: deque[SmtpReply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.lost: SmtpReplyError | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (reply := self._parse()) is not None:
            self._replies.append(reply)
        if len(self._buffer) > _MAX_REPLY_BYTES:
            self._lose(SmtpReplyError("the server's reply is too long"))
        self._wake()

    def eof_received(self) -> bool:
        self._lose(SmtpReplyError("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(SmtpReplyError(f"connection lost: {exc}" if exc else "connection lost"))

    def _lose(self, error: SmtpReplyError) -> None:
        if self.lost is None:
            self.lost = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> SmtpReply | None:
        """The first complete reply in the buffer (removed from it), or None while it is incomplete."""
        lines: list[str] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            code = line[:3]
            if not code.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
                self._lose(SmtpReplyError(f"the server sent no SMTP reply: {line[:80]!r}"))
                return None
            lines.append(line[4:].strip().decode("utf-8", "replace"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return SmtpReply(int(code), "\n".join(lines))
        return None

    async def next(self) -> SmtpReply:
        """The next reply, waiting at most `timeout` seconds for it."""
        if not self._replies and self.lost is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    while not self._replies and self.lost is None:
                        await self._waiter
                        self._waiter = asyncio.get_running_loop().create_future()
            except TimeoutError:
                raise SmtpReplyError(f"no reply from the server within {self.timeout:g} s") from None
            finally:
                self._waiter = None
        if self._replies:
            return self._replies.popleft()
        assert self.lost is not None
        raise self.lost


class _Session:
    """Mail transactions on a session that aiosmtplib opened, pipelined when the server offers it."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float) -> None:
        transport = client.transport
        if transport is None:
            raise SmtpReplyError("the session has no connection")
        self._transport = cast(asyncio.Transport, transport)
        self._replies = _Replies(timeout)
        # From here on the replies come to this session, not to aiosmtplib's protocol.
        transport.set_protocol(self._replies)
        self.pipelining = client.supports_extension("pipelining")
        self.smtputf8 = client.supports_extension("smtputf8")

    @property
    def is_connected(self) -> bool:
        return self._replies.lost is None and not self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def _write(self, data: bytes) -> None:
        if not self.is_connected:
            raise self._replies.lost or SmtpReplyError("connection lost")
        self._transport.write(data)

    async def command(self, line: bytes) -> SmtpReply:
        self._write(line + b"\r\n")
        return await self._replies.next()

    async def envelope(self, mail: bytes, rcpt: bytes) -> tuple[SmtpReply, SmtpReply, SmtpReply]:
        """The replies to MAIL FROM, RCPT TO and DATA; after a refusal the later commands are not sent."""
        if self.pipelining:
            self._write(mail + b"\r\n" + rcpt + b"\r\nDATA\r\n")
            return (
                await self._replies.next(),
                await self._replies.next(),
                await self._replies.next(),
            )
        skipped = SmtpReply(0, "not sent")
        mail_reply = await self.command(mail)
        if not 200 <= mail_reply.code < 300:
            return mail_reply, skipped, skipped
        rcpt_reply = await self.command(rcpt)
        if not 200 <= rcpt_reply.code < 300:
            return mail_reply, rcpt_reply, skipped
        return mail_reply, rcpt_reply, await self.command(b"DATA")

    def send_content(self, message: bytes) -> None:
        """Writes the message after DATA was accepted; raises before writing anything when the session is gone."""
        self._write(message_content(message))

    async def reply(self) -> SmtpReply:
        return await self._replies.next()


class _Content:
    """A message's bytes, made when first needed and kept."""

    def __init__(self, make: Callable[[], bytes]) -> None:
        self._make = make
        self._bytes: bytes | None = None

    def bytes(self) -> bytes:
        if self._bytes is None:
            self._bytes = self._make()
        return self._bytes


def _address(address: str, encoding: str) -> bytes:
    """`<address>` for MAIL FROM / RCPT TO; an address that could break the command line is refused for good."""
    if not address or any(c in address for c in "<>\r\n\x00 "):
        raise SmtpSendError(
            f"{address!r} is not a mailbox address", reply=SmtpReply(553, "invalid mailbox address")
        )
    return b"<" + address.encode(encoding) + b">"


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO for a server that knows no ESMTP, so the session's extensions are known before it is used."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


def _refusal(mail: SmtpReply, rcpt: SmtpReply, data: SmtpReply) -> tuple[str, SmtpReply] | None:
    """The first command of the envelope the server refused, with its reply; None when DATA may go on."""
    if not 200 <= mail.code < 300:
        return "MAIL", mail
    if not 200 <= rcpt.code < 300:
        return "RCPT", rcpt
    if data.code != 354:
        return "DATA", data
    return None


def _reply(exc: aiosmtplib.SMTPResponseException) -> SmtpReply:
    return SmtpReply(exc.code, exc.message)


class _Connection:
    """One SMTP session and how much it has been used."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.messages = 0
        self.last_used = time.monotonic()
        self.broken = False


class SmtpConnectionPool:
    """At most `size` SMTP sessions to one target, reused across messages.

    A session is closed after `max_messages_per_connection` messages (servers often cap them and
    a long session pins one server of a cluster), checked with NOOP before reuse when it sat idle
    for more than `idle_check_seconds` (servers drop idle sessions), and replaced after any
    connection failure. `send` waits for a free session when all are busy, so `size` bounds the
    concurrency towards the server.
    """

    def __init__(
        self,
        target: SmtpTarget,
        *,
        size: int = 4,
        max_messages_per_connection: int = 100,
        idle_check_seconds: float = 30.0,
        timeout: float = 30.0,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("an SMTP pool needs at least one connection")
        if max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be at least 1")
        self.target = target
        self.size = size
        self.max_messages_per_connection = max_messages_per_connection
        self.idle_check_seconds = idle_check_seconds
        self.timeout = timeout
        # socket.getfqdn() may wait on DNS; it is asked once here, not on every connect.
        self.local_hostname = local_hostname or socket.getfqdn() or "localhost"
        self.tls_context = tls_context
        self._slots = asyncio.Semaphore(size)
        # Most recently used last: popping from the right reuses the warmest session, so that
        # sessions beyond the load's needs sit idle and get closed by the server or the idle check.
        self._idle: deque[_Connection] = deque()
        self._closed = False
        self.connections_opened = 0

    async def __aenter__(self) -> SmtpConnectionPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _open(self) -> _Connection:
        client = aiosmtplib.SMTP(
            hostname=self.target.host,
            port=self.target.port,
            use_tls=self.target.tls == "implicit",
            start_tls=self.target.tls == "starttls",
            timeout=self.timeout,
            local_hostname=self.local_hostname,
            tls_context=self.tls_context,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                await _greet(client)
            if self.target.username:
                await client.login(self.target.username, self.target.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise SmtpSendError(
                f"SMTP login to {self.target.describe()} failed", reply=_reply(exc), stage="session"
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise SmtpSendError(
                f"SMTP server {self.target.describe()} refused the session", reply=_reply(exc), stage="session"
            ) from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            client.close()
            raise SmtpSendError(f"cannot connect to {self.target.describe()}: {exc}", stage="session") from exc
        try:
            session = _Session(client, self.timeout)
        except SmtpReplyError as exc:
            client.close()
            raise SmtpSendError(f"cannot connect to {self.target.describe()}: {exc}", stage="session") from exc
        self.connections_opened += 1
        return _Connection(session)

    async def _healthy(self, connection: _Connection) -> bool:
        if not connection.session.is_connected:
            return False
        if time.monotonic() - connection.last_used <= self.idle_check_seconds:
            return True
        try:
            reply = await connection.session.command(b"NOOP")
        except (SmtpReplyError, OSError) as exc:
            log.info("idle SMTP session is gone; reconnecting", target=self.target.describe(), error=str(exc))
            return False
        return reply.code == 250

    async def _take(self) -> _Connection:
        """An open session: an idle one that still works, or a new one. The caller holds a slot."""
        while self._idle:
            connection = self._idle.pop()
            try:
                healthy = await self._healthy(connection)
            except asyncio.CancelledError:
                connection.session.close()
                raise
            if healthy:
                return connection
            connection.session.close()
        return await self._open()

    async def _give_back(self, connection: _Connection) -> None:
        connection.last_used = time.monotonic()
        if self._closed or connection.broken or not connection.session.is_connected:
            connection.session.close()
        elif connection.messages >= self.max_messages_per_connection:
            await self._quit(connection)
        else:
            self._idle.append(connection)

    async def _quit(self, connection: _Connection) -> None:
        try:
            await connection.session.command(b"QUIT")
        except (SmtpReplyError, OSError) as exc:
            # The session is being dropped anyway; a server that hangs up first is no problem.
            log.debug("SMTP QUIT failed", error=str(exc))
        finally:
            connection.session.close()

    async def send(self, sender: str, recipient: str, message: bytes | Callable[[], bytes]) -> SmtpReply:
        """Sends `message` (RFC 5322 bytes, CRLF or LF line ends) from `sender` to `recipient`.

        `message` may be a function that makes the bytes: it is called only once the server accepted the
        envelope and DATA, so a recipient refused at RCPT TO (a greylisted one) costs no rendering, and at
        most once (its bytes are kept for a second session).
        """
        content = _Content(message) if callable(message) else message
        if self._closed:
            raise RuntimeError("the SMTP pool is closed")
        async with self._slots:
            connection = await self._take()
            try:
                return await self._transact(connection, sender, recipient, content)
            except SmtpSendError as exc:
                # A reused session that the server had dropped fails before any content was sent:
                # the message goes out over a fresh session (once; a second failure is reported).
                reused = connection.messages > 1
                if not (reused and connection.broken and exc.reply is None and not exc.maybe_delivered):
                    raise
            finally:
                await self._give_back(connection)
            connection = await self._open()
            try:
                return await self._transact(connection, sender, recipient, content)
            finally:
                await self._give_back(connection)

    async def _transact(
        self, connection: _Connection, sender: str, recipient: str, message: bytes | _Content
    ) -> SmtpReply:
        session = connection.session
        encoding, options = "ascii", b""
        if not (sender.isascii() and recipient.isascii()):
            if not session.smtputf8:
                raise SmtpSendError(
                    "the address is not ASCII and the server does not offer SMTPUTF8",
                    reply=SmtpReply(553, "non-ASCII address without SMTPUTF8"),
                )
            encoding, options = "utf-8", b" SMTPUTF8"
        mail = b"MAIL FROM:" + _address(sender, encoding) + options
        rcpt = b"RCPT TO:" + _address(recipient, encoding)
        connection.messages += 1
        stage = "MAIL"
        try:
            mail_reply, rcpt_reply, data_reply = await session.envelope(mail, rcpt)
            refused = _refusal(mail_reply, rcpt_reply, data_reply)
            if refused is not None:
                stage, reply = refused
                if data_reply.code == 354:
                    # The server accepted DATA after refusing the envelope and now waits for content:
                    # none is sent, and the session is not reused.
                    connection.broken = True
                    session.close()
                else:
                    await self._reset(connection)
                raise SmtpSendError(f"{stage} refused: {reply}", reply=reply, stage=stage)
            stage = "DATA"
            if isinstance(message, _Content):
                try:
                    content = message.bytes()
                except BaseException:
                    # The server waits for content that cannot be made: the session is not reused.
                    connection.broken = True
                    session.close()
                    raise
            else:
                content = message
            session.send_content(content)
            # From here until the reply the server may have accepted the message.
            stage = "content"
            reply = await session.reply()
        except (SmtpReplyError, OSError) as exc:
            connection.broken = True
            session.close()
            raise SmtpSendError(
                f"connection failed at {stage}: {exc}", maybe_delivered=stage == "content"
            ) from exc
        except asyncio.CancelledError:
            # Stopped mid-transaction (pause, shutdown): the session's state is unknown, so it is
            # not reused.
            connection.broken = True
            session.close()
            raise
        if not 200 <= reply.code < 300:
            await self._reset(connection)
            raise SmtpSendError(f"DATA refused: {reply}", reply=reply, stage="content")
        return reply

    async def _reset(self, connection: _Connection) -> None:
        """RSET after a refused transaction, so the session is clean for the next message."""
        try:
            reply = await connection.session.command(b"RSET")
        except (SmtpReplyError, OSError) as exc:
            log.info("RSET failed; dropping the SMTP session", error=str(exc))
            connection.broken = True
            return
        if reply.code != 250:
            log.info("RSET refused; dropping the SMTP session", reply=str(reply))
            connection.broken = True

    async def close(self) -> None:
        """Says QUIT on every idle session; sessions in use close when they are given back."""
        self._closed = True
        while self._idle:
            await self._quit(self._idle.pop())
