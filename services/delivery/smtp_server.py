"""A lean SMTP server for receiving mail (RFC 5321, with PIPELINING, SIZE, 8BITMIME, SMTPUTF8 and
ENHANCEDSTATUSCODES), one asyncio.Protocol per connection, for the bounce receiver.

aiosmtpd, which the mail capture still uses, spent about 0.28 ms of CPU per 3.4 KB DSN before the
receiver's own work began (bench/bounces.py, a bare aiosmtpd server): a StreamReader.readuntil per
content line, debug log calls per line, the standard library's address parser for every MAIL and RCPT.
Here the bytes of a connection are kept in one buffer and cut at its CRLFs with bytes.find, a message's
content is found in one search for CRLF "." CRLF and unstuffed with one bytes.replace, and the replies
to pipelined commands go out in one write.

What a session does, and what it refuses:
- Commands: EHLO, HELO, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT, VRFY (252), HELP. EXPN, STARTTLS,
  AUTH, BDAT and the like are answered 502 5.5.1, anything else 500 5.5.1; a command out of sequence 503
  5.5.1. A command line is at most 512 octets with its CRLF (500 5.5.2); a line ending in a bare LF counts
  as a line too.
- MAIL FROM takes SIZE (over the limit: 552 5.3.4), BODY=7BIT or 8BITMIME and SMTPUTF8, and the null
  reverse path `<>`. Addresses are passed on as text without their angle brackets (and without a source
  route); one that is not UTF-8 is answered 553. RCPT TO takes no parameters; past `max_recipients`
  accepted in one transaction: 452 4.5.3.
- The content of a message ends only at CRLF "." CRLF: LF "." LF, CR "." LF or LF "." CRLF do not end
  it, so that a message cannot smuggle a second one past a server that reads line ends differently.
  Lines that begin with "." lose that dot. Content over `max_message_bytes` is read to its end and
  discarded, then answered 552 5.3.4; lines may be of any length (bounces quote long ones).
- Replies come in the order of the commands, however many arrived in one packet; while the handler
  runs for a message, later commands wait in the buffer (reading pauses if it grows large).
- After `max_bad_commands` protocol errors, or `timeout` seconds without input while no message is
  being handled, the session is answered 421 and closed. Every client error is a reply; nothing a
  client sends raises.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import structlog

from services.delivery.smtp_listener import LISTEN_BACKLOG

log = structlog.get_logger()

# RFC 5321 4.5.3.1.4: a command line is at most 512 octets, its CRLF included.
MAX_COMMAND_LINE = 512
MAX_BAD_COMMANDS = 10
# While a message is handled (or the client does not read its replies), reading stops once this much
# input waits: a pipelining client cannot make the server hold more than this.
PAUSE_READING_AT = 64 * 1024

_END_OF_DATA = b"\r\n.\r\n"
# A line that begins with ".": the client doubled that dot (dot-stuffing, RFC 5321 4.5.2).
_STUFFED_LINE = b"\r\n."

# A path in angle brackets: an optional source route (ignored, RFC 5321 3.3) and a mailbox whose local
# part may be a quoted string; then nothing, or parameters after a space.
_ANGLE_PATH = re.compile(
    r'<(?:@[^<>:"\s]+:)?((?:"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*"|[^<>"\\\s\x00-\x1f\x7f])*)>(?: +(.*))?'
)
# Without brackets (RFC 5321 requires them; some clients leave them out).
_BARE_PATH = re.compile(r'([^<>"\\\s\x00-\x1f\x7f]+)(?: +(.*))?')

_NOT_IMPLEMENTED = frozenset(
    {b"EXPN", b"STARTTLS", b"AUTH", b"BDAT", b"ETRN", b"TURN", b"ATRN", b"SEND", b"SOML", b"SAML"}
)


@dataclass(slots=True)
class Envelope:
    """One mail transaction: the reverse path ("" for the null sender), the accepted recipients, and once
    DATA ends the content as received, without its final "." line and with stuffed dots removed."""

    mail_from: str
    rcpt_tos: list[str] = field(default_factory=list)
    content: bytes = b""


class MailHandler(ABC):
    """What a server asks about the mail its sessions receive."""

    @abstractmethod
    def reply_to_rcpt(self, envelope: Envelope, address: str) -> str:
        """The reply to RCPT TO:<address>. A 2xx reply adds the address to `envelope.rcpt_tos`."""

    @abstractmethod
    async def reply_to_data(self, envelope: Envelope) -> str:
        """The reply to a whole message (`envelope.content`), once whatever it needs is done."""


class SmtpServer:
    """Listens on host:port with a session per connection. `close` stops accepting, answers the sessions
    421 and waits for the messages being handled (their senders get the handler's reply first)."""

    def __init__(
        self,
        handler: MailHandler,
        host: str,
        port: int,
        *,
        hostname: str,
        ident: str,
        max_message_bytes: int,
        max_recipients: int,
        timeout: float,
        max_bad_commands: int = MAX_BAD_COMMANDS,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.max_recipients = max_recipients
        self.timeout = timeout
        self.max_bad_commands = max_bad_commands
        self.greeting = f"220 {hostname} ESMTP {ident}\r\n".encode()
        self.ehlo_reply = (
            f"250-{hostname}\r\n250-PIPELINING\r\n250-SIZE {max_message_bytes}\r\n250-8BITMIME\r\n"
            "250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"
        ).encode()
        self.helo_reply = f"250 {hostname}\r\n".encode()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._sessions: set[SmtpSession] = set()
        self._deliveries: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Starts listening; returns the port (the one chosen by the system when `port` was 0)."""
        self._server = await asyncio.get_running_loop().create_server(
            lambda: SmtpSession(self), self.host, self.port, backlog=LISTEN_BACKLOG
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stops accepting connections, closes the sessions and waits until the messages already handed to
        the handler are answered."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.shut_down()
        while self._deliveries:
            await asyncio.wait(list(self._deliveries))

    def _opened(self, session: SmtpSession) -> None:
        self._sessions.add(session)

    def _closed(self, session: SmtpSession) -> None:
        self._sessions.discard(session)

    def _delivering(self, task: asyncio.Task[None]) -> None:
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)


class SmtpSession(asyncio.Protocol):
    """One connection: the bytes not yet read, the transaction in progress, and whether the handler runs."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.id = str(uuid.uuid4())
        self._buffer = bytearray()
        self._replies: list[bytes] = []
        self._greeted = False  # EHLO or HELO came
        self._envelope: Envelope | None = None
        # DATA: the buffer holds content, after a CRLF put in front so that a first line "." is a line too.
        self._in_data = False
        self._scanned = 0  # where the search for the end of the content resumes
        self._counted = 0  # how far dot-stuffed lines are counted
        self._stuffed = 0
        self._too_big = False  # the content is over the limit: discarded as it arrives
        self._skipping_line = False  # a command line over 512 octets: discarded up to its LF
        self._handling = False
        self._write_paused = False
        self._reading_paused = False
        self._closed = False
        self._bad_commands = 0
        self._last_active = self._loop.time()  # the last input, or the last reply to a message
        self._idle_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._server._opened(self)
        if self._server.closing:
            self._close_with(b"421 4.3.2 Service shutting down\r\n")
            return
        self._transport.write(self._server.greeting)
        self._idle_timer = self._loop.call_at(self._last_active + self._server.timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_active = self._loop.time()
        self._buffer += data
        if self._handling or self._write_paused:
            if len(self._buffer) > PAUSE_READING_AT and not self._reading_paused:
                self._reading_paused = True
                self._transport_().pause_reading()
            return
        self._serve()

    def connection_lost(self, exc: Exception | None) -> None:
        # Whatever was not yet a whole message is dropped; a handler already running finishes unanswered.
        self._closed = True
        self._buffer = bytearray()
        self._envelope = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._server._closed(self)

    def pause_writing(self) -> None:
        # The client does not read its replies: no more commands until it does.
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._continue()

    def shut_down(self) -> None:
        """The server closes: 421 now, or after the reply to the message being handled."""
        if not self._handling and not self._closed:
            self._close_with(b"421 4.3.2 Service shutting down\r\n")

    # --- reading --------------------------------------------------------------------------------------

    def _serve(self) -> None:
        """Answers every whole command in the buffer, and the message content once it ended, in order."""
        buffer = self._buffer
        while not (self._handling or self._write_paused or self._closed):
            if self._in_data:
                if not self._read_content():
                    break
                continue
            end = buffer.find(b"\n")
            if self._skipping_line:
                if end < 0:
                    buffer.clear()
                    break
                del buffer[: end + 1]
                self._skipping_line = False
                self._refuse(b"500 5.5.2 Line too long\r\n")
                continue
            if end < 0:
                if len(buffer) >= MAX_COMMAND_LINE:
                    buffer.clear()
                    self._skipping_line = True
                break
            if end >= MAX_COMMAND_LINE:
                del buffer[: end + 1]
                self._refuse(b"500 5.5.2 Line too long\r\n")
                continue
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            self._command(line[:-1] if line.endswith(b"\r") else line)
        self._flush()

    def _command(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        command = _COMMANDS.get(verb)
        if command is not None:
            command(self, arg.strip(b" "))
        elif verb in _NOT_IMPLEMENTED:
            self._refuse(b"502 5.5.1 Command not implemented\r\n")
        else:
            self._refuse(b"500 5.5.1 Command unrecognized\r\n")

    def _read_content(self) -> bool:
        """Takes the message content out of the buffer once its end arrived; False while it has not."""
        buffer = self._buffer
        end = buffer.find(_END_OF_DATA, self._scanned)
        if end < 0:
            if not self._too_big:
                self._stuffed += buffer.count(_STUFFED_LINE, max(self._counted - 2, 0))
                self._counted = len(buffer)
                self._too_big = len(buffer) - 2 - self._stuffed > self._server.max_message_bytes
            if self._too_big:
                # Only the tail that may begin the end of the content is kept.
                del buffer[:-4]
                self._scanned = 0
            else:
                self._scanned = max(len(buffer) - 4, 0)
            return False
        envelope = self._envelope
        assert envelope is not None  # DATA is answered 354 only within a transaction
        too_big = self._too_big
        content = b"" if too_big else bytes(buffer[: end + 2]).replace(_STUFFED_LINE, b"\r\n")[2:]
        del buffer[: end + 5]
        self._in_data = False
        self._envelope = None
        if too_big or len(content) > self._server.max_message_bytes:
            self._reply(b"552 5.3.4 Message too big\r\n")
            return True
        envelope.content = content
        self._handling = True
        task = self._loop.create_task(self._deliver(envelope))
        self._server._delivering(task)
        return True

    async def _deliver(self, envelope: Envelope) -> None:
        # The task runs in a copy of the context: the id is on the handler's log lines only.
        structlog.contextvars.bind_contextvars(session_id=self.id)
        try:
            reply = await self._server.handler.reply_to_data(envelope)
        except Exception:
            log.exception("the handler failed on a message", size=len(envelope.content))
            reply = "451 4.3.0 Error processing the message; try again later"
        self._handling = False
        if self._closed:
            return
        self._last_active = self._loop.time()
        self._reply(f"{reply}\r\n".encode())
        if self._server.closing:
            self._close_with(b"421 4.3.2 Service shutting down\r\n")
            return
        self._continue()

    def _continue(self) -> None:
        """Reading goes on after a handler or a full write buffer held it."""
        if self._closed or self._handling:
            return
        if self._reading_paused and not self._write_paused:
            self._reading_paused = False
            self._transport_().resume_reading()
        self._serve()  # while writing is paused, this only writes the replies waiting

    def _check_idle(self) -> None:
        """One timer per session, moved on when it fires rather than on every input."""
        if self._closed:
            return
        now = self._loop.time()
        if self._handling:
            self._idle_timer = self._loop.call_at(now + self._server.timeout, self._check_idle)
            return
        deadline = self._last_active + self._server.timeout
        if now < deadline:
            self._idle_timer = self._loop.call_at(deadline, self._check_idle)
            return
        write_paused = self._write_paused
        self._close_with(b"421 4.4.2 Idle timeout, closing\r\n")
        if write_paused:
            # A client that reads none of its replies would keep the connection open while they wait.
            self._transport_().abort()

    # --- writing --------------------------------------------------------------------------------------

    def _transport_(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    def _reply(self, reply: bytes) -> None:
        self._replies.append(reply)

    def _refuse(self, reply: bytes) -> None:
        """A reply to a protocol error; too many of them end the session."""
        self._replies.append(reply)
        self._bad_commands += 1
        if self._bad_commands >= self._server.max_bad_commands:
            self._close_with(b"421 4.7.0 Too many errors, closing\r\n")

    def _flush(self) -> None:
        if self._replies and not self._closed:
            replies = self._replies
            self._transport_().write(replies[0] if len(replies) == 1 else b"".join(replies))
        self._replies = []

    def _close_with(self, reply: bytes) -> None:
        if self._closed:
            return
        self._replies.append(reply)
        self._flush()
        self._closed = True
        self._transport_().close()

    # --- commands -------------------------------------------------------------------------------------

    def _ehlo(self, arg: bytes) -> None:
        if not arg:
            self._refuse(b"501 5.5.4 Syntax: EHLO hostname\r\n")
            return
        self._greeted = True
        self._envelope = None
        self._reply(self._server.ehlo_reply)

    def _helo_(self, arg: bytes) -> None:
        if not arg:
            self._refuse(b"501 5.5.4 Syntax: HELO hostname\r\n")
            return
        self._greeted = True
        self._envelope = None
        self._reply(self._server.helo_reply)

    def _mail(self, arg: bytes) -> None:
        if not self._greeted:
            self._refuse(b"503 5.5.1 Send EHLO or HELO first\r\n")
            return
        if self._envelope is not None:
            self._refuse(b"503 5.5.1 Nested MAIL command\r\n")
            return
        if arg[:5].upper() != b"FROM:":
            self._refuse(b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n")
            return
        path = _parse_path(arg[5:])
        if path is None:
            self._refuse(b"501 5.1.7 Bad sender address syntax\r\n")
            return
        if isinstance(path, bytes):
            self._reply(b"553 5.1.7 The sender address is not valid UTF-8\r\n")
            return
        address, parameters = path
        refusal = self._mail_parameters(parameters)
        if refusal is not None:
            if refusal.startswith(b"555"):
                self._refuse(refusal)
            else:
                self._reply(refusal)
            return
        self._envelope = Envelope(address)
        self._reply(b"250 2.1.0 OK\r\n")

    def _mail_parameters(self, parameters: str) -> bytes | None:
        """None for parameters the server takes, else the reply that refuses them."""
        for parameter in parameters.split():
            keyword, equals, value = parameter.partition("=")
            keyword = keyword.upper()
            if keyword == "SIZE" and value.isascii() and value.isdigit():
                if int(value) > self._server.max_message_bytes:
                    return b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
            elif keyword == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                pass
            elif keyword == "SMTPUTF8" and not equals:
                pass
            else:
                return b"555 5.5.4 MAIL FROM parameter not recognized or not implemented\r\n"
        return None

    def _rcpt(self, arg: bytes) -> None:
        envelope = self._envelope
        if envelope is None:
            self._refuse(b"503 5.5.1 Need MAIL command\r\n")
            return
        if arg[:3].upper() != b"TO:":
            self._refuse(b"501 5.5.4 Syntax: RCPT TO:<address>\r\n")
            return
        path = _parse_path(arg[3:])
        if path is None:
            self._refuse(b"501 5.1.3 Bad recipient address syntax\r\n")
            return
        if isinstance(path, bytes):
            self._reply(b"553 5.1.3 The recipient address is not valid UTF-8\r\n")
            return
        address, parameters = path
        if not address:
            self._refuse(b"501 5.1.3 Bad recipient address syntax\r\n")
            return
        if parameters:
            self._refuse(b"555 5.5.4 RCPT TO parameters not recognized or not implemented\r\n")
            return
        if len(envelope.rcpt_tos) >= self._server.max_recipients:
            self._reply(b"452 4.5.3 Too many recipients\r\n")
            return
        try:
            reply = self._server.handler.reply_to_rcpt(envelope, address)
        except Exception:
            log.exception("the handler failed on a recipient", session_id=self.id)
            reply = "451 4.3.0 Error checking the recipient; try again later"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        self._reply(f"{reply}\r\n".encode())

    def _data(self, arg: bytes) -> None:
        if arg:
            self._refuse(b"501 5.5.4 Syntax: DATA\r\n")
            return
        if self._envelope is None:
            self._refuse(b"503 5.5.1 Need MAIL command\r\n")
            return
        if not self._envelope.rcpt_tos:
            self._refuse(b"503 5.5.1 Need RCPT command\r\n")
            return
        self._reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        self._in_data = True
        self._buffer[0:0] = b"\r\n"
        self._scanned = self._counted = self._stuffed = 0
        self._too_big = False

    def _rset(self, arg: bytes) -> None:
        if arg:
            self._refuse(b"501 5.5.4 Syntax: RSET\r\n")
            return
        self._envelope = None
        self._reply(b"250 2.0.0 OK\r\n")

    def _noop(self, arg: bytes) -> None:
        self._reply(b"250 2.0.0 OK\r\n")

    def _quit(self, arg: bytes) -> None:
        self._close_with(b"221 2.0.0 Bye\r\n")

    def _vrfy(self, arg: bytes) -> None:
        if not arg:
            self._refuse(b"501 5.5.4 Syntax: VRFY <address>\r\n")
            return
        self._reply(b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n")

    def _help(self, arg: bytes) -> None:
        self._reply(b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\r\n")


_COMMANDS: dict[bytes, Callable[[SmtpSession, bytes], None]] = {
    b"EHLO": SmtpSession._ehlo,
    b"HELO": SmtpSession._helo_,
    b"MAIL": SmtpSession._mail,
    b"RCPT": SmtpSession._rcpt,
    b"DATA": SmtpSession._data,
    b"RSET": SmtpSession._rset,
    b"NOOP": SmtpSession._noop,
    b"QUIT": SmtpSession._quit,
    b"VRFY": SmtpSession._vrfy,
    b"HELP": SmtpSession._help,
}


def _parse_path(text: bytes) -> tuple[str, str] | bytes | None:
    """(address, parameters) of MAIL FROM's or RCPT TO's argument; the text itself when it is not UTF-8,
    None when it is no path."""
    try:
        decoded = text.decode().lstrip(" ")
    except UnicodeDecodeError:
        return text
    match = (_ANGLE_PATH if decoded.startswith("<") else _BARE_PATH).fullmatch(decoded)
    if match is None:
        return None
    return match[1], match[2] or ""
