"""Sending over SMTP: SMTP_URL parsing and a bounded pool of reused aiosmtplib connections that classifies every outcome.

The pool sends one message to one recipient at a time (a campaign message has exactly one
recipient) and tells the caller precisely what happened, because the caller decides between
Sent, Failed and retry, and must never send twice:

- success: the server's 2xx reply to the message content;
- `SmtpSendError` with `reply` set: the server answered 4xx or 5xx (`permanent` for 5xx);
- `SmtpSendError` without `reply`: the connection failed (refused, dropped, timed out); `maybe_delivered`
  is true only when it failed after the whole message content had been sent and before the
  server's reply arrived, the one moment at which the server may have accepted the message.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib
import structlog

log = structlog.get_logger()

TlsMode = Literal["none", "starttls", "implicit"]
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


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
            raise SmtpUrlError(f"SMTP_URL has an unknown parameter {name!r} (only starttls is known)")
        if scheme == "smtps":
            raise SmtpUrlError("starttls applies to smtp:// only; smtps:// is TLS from the start")
        flag = value.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise SmtpUrlError(f"SMTP_URL starttls must be true or false, not {value!r}")
        tls = "starttls" if flag in _TRUE else "none"
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
    """A message was not (or not provably) accepted; see the module docstring for the three cases."""

    def __init__(self, description: str, *, reply: SmtpReply | None = None, maybe_delivered: bool = False) -> None:
        super().__init__(description)
        self.reply = reply
        self.maybe_delivered = maybe_delivered

    @property
    def permanent(self) -> bool:
        """A 5xx reply: retrying the same message will not help."""
        return self.reply is not None and 500 <= self.reply.code < 600


def _reply(exc: aiosmtplib.SMTPResponseException) -> SmtpReply:
    return SmtpReply(exc.code, exc.message)


class _Connection:
    """One SMTP session and how much it has been used."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
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
            if self.target.username:
                await client.login(self.target.username, self.target.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise SmtpSendError(f"SMTP login to {self.target.describe()} failed", reply=_reply(exc)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise SmtpSendError(
                f"SMTP server {self.target.describe()} refused the session", reply=_reply(exc)
            ) from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            client.close()
            raise SmtpSendError(f"cannot connect to {self.target.describe()}: {exc}") from exc
        self.connections_opened += 1
        return _Connection(client)

    async def _healthy(self, connection: _Connection) -> bool:
        if not connection.client.is_connected:
            return False
        if time.monotonic() - connection.last_used <= self.idle_check_seconds:
            return True
        try:
            await connection.client.noop()
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.info("idle SMTP session is gone; reconnecting", target=self.target.describe(), error=str(exc))
            return False
        return True

    async def _take(self) -> _Connection:
        """An open session: an idle one that still works, or a new one. The caller holds a slot."""
        while self._idle:
            connection = self._idle.pop()
            try:
                healthy = await self._healthy(connection)
            except asyncio.CancelledError:
                connection.client.close()
                raise
            if healthy:
                return connection
            connection.client.close()
        return await self._open()

    async def _give_back(self, connection: _Connection) -> None:
        connection.last_used = time.monotonic()
        if self._closed or connection.broken or not connection.client.is_connected:
            connection.client.close()
        elif connection.messages >= self.max_messages_per_connection:
            await self._quit(connection)
        else:
            self._idle.append(connection)

    async def _quit(self, connection: _Connection) -> None:
        try:
            await connection.client.quit()
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The session is being dropped anyway; a server that hangs up first is no problem.
            log.debug("SMTP QUIT failed", error=str(exc))
        finally:
            connection.client.close()

    async def send(self, sender: str, recipient: str, message: bytes) -> SmtpReply:
        """Sends `message` (RFC 5322 bytes, CRLF or LF line ends) from `sender` to `recipient`."""
        if self._closed:
            raise RuntimeError("the SMTP pool is closed")
        async with self._slots:
            connection = await self._take()
            try:
                return await self._transact(connection, sender, recipient, message)
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
                return await self._transact(connection, sender, recipient, message)
            finally:
                await self._give_back(connection)

    async def _transact(self, connection: _Connection, sender: str, recipient: str, message: bytes) -> SmtpReply:
        client = connection.client
        options: list[str] = []
        encoding = "ascii"
        if not (sender.isascii() and recipient.isascii()):
            if not client.supports_extension("smtputf8"):
                raise SmtpSendError(
                    "the address is not ASCII and the server does not offer SMTPUTF8",
                    reply=SmtpReply(553, "non-ASCII address without SMTPUTF8"),
                )
            options, encoding = ["SMTPUTF8"], "utf-8"
        connection.messages += 1
        stage = "MAIL"
        try:
            await client.mail(sender, options=options, encoding=encoding)
            stage = "RCPT"
            await client.rcpt(recipient, encoding=encoding)
            stage = "DATA"
            response = await client.data(message)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(connection)
            raise SmtpSendError(f"{stage} refused: {exc.code} {exc.message}", reply=_reply(exc)) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            connection.broken = True
            client.close()
            # Only a failure while waiting for the reply to the content leaves the outcome open.
            maybe = stage == "DATA" and isinstance(
                exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPTimeoutError
            )
            raise SmtpSendError(f"connection failed at {stage}: {exc}", maybe_delivered=maybe) from exc
        except asyncio.CancelledError:
            # Stopped mid-transaction (pause, shutdown): the session's state is unknown, so it is
            # not reused.
            connection.broken = True
            client.close()
            raise
        return SmtpReply(response.code, response.message)

    async def _reset(self, connection: _Connection) -> None:
        """RSET after a refused transaction, so the session is clean for the next message."""
        try:
            await connection.client.rset()
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.info("RSET failed; dropping the SMTP session", error=str(exc))
            connection.broken = True

    async def close(self) -> None:
        """Says QUIT on every idle session; sessions in use close when they are given back."""
        self._closed = True
        while self._idle:
            await self._quit(self._idle.pop())
