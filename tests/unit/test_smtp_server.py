"""Herald's SMTP server (services/delivery/smtp_server.py) over real loopback sockets: smtplib, aiosmtplib and
Herald's own pipelining client as senders, raw sockets for what clients do not normally send (pipelined
bursts, over-long lines, the SMTP smuggling variants, dot-stuffing, limits, timeouts, dropped connections),
and random byte streams.

Each server runs on an event loop of its own in a thread (the standard asyncio loop and uvloop, which
production runs), so that blocking clients can talk to it; nothing may reach that loop's exception
handler or the server's error log.
"""

from __future__ import annotations

import asyncio
import re
import select
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

import aiosmtplib
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.delivery import smtp_server
from services.delivery.smtp import SmtpConnectionPool, SmtpTarget
from services.delivery.smtp_server import Envelope, MailHandler, SmtpServer

T = TypeVar("T")

HOSTNAME = "mx.herald.test"
MAX_BYTES = 20_000
MAX_RECIPIENTS = 5
MESSAGE = b"Subject: hello\r\nFrom: a@example.org\r\n\r\nBody.\r\n"
REPLY_LINE = re.compile(rb"\d{3}[ -][^\r\n]*\r\n")


class Mailbox(MailHandler):
    """Accepts every recipient but `refused@…`, keeps every message; holds messages while `hold` is set."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self.rcpt_calls = 0
        self.started = threading.Event()
        self.hold = False
        self.fail = False
        self._release: asyncio.Event | None = None

    def reply_to_rcpt(self, envelope: Envelope, address: str) -> str:
        self.rcpt_calls += 1
        if address.startswith("refused@"):
            return "550 5.1.1 No such recipient here"
        return "250 2.1.5 OK"

    async def reply_to_data(self, envelope: Envelope) -> str:
        self.started.set()
        if self.hold:
            self._release = asyncio.Event()
            await self._release.wait()
        if self.fail:
            raise RuntimeError("the handler broke")
        self.messages.append(envelope)
        return f"250 2.0.0 OK: kept {len(self.messages)}"

    def release(self) -> None:
        assert self._release is not None
        self._release.set()


class ErrorLog:
    """Stands in for the server module's logger: what it logged at error level."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def exception(self, event: str, **fields: object) -> None:
        self.errors.append(event)

    error = exception


class Running:
    """A server on an event loop in a thread of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, **options: Any) -> None:
        self.loop = loop
        self.loop_errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: self.loop_errors.append(context))
        self.thread = threading.Thread(target=loop.run_forever, daemon=True)
        self.thread.start()
        self.mailbox = Mailbox()
        settings: dict[str, Any] = {
            "hostname": HOSTNAME,
            "ident": "test",
            "max_message_bytes": MAX_BYTES,
            "max_recipients": MAX_RECIPIENTS,
            "timeout": 30.0,
            **options,
        }
        self.server = self.call(self._make(settings))
        self.port = self.call(self.server.start())

    async def _make(self, settings: dict[str, Any]) -> SmtpServer:
        return SmtpServer(self.mailbox, "127.0.0.1", 0, **settings)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return self.submit(coroutine).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def in_loop(self, function: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(function)

    def stop(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> ErrorLog:
    log = ErrorLog()
    monkeypatch.setattr(smtp_server, "log", log)
    return log


@contextmanager
def running(loop_name: str, **options: Any) -> Iterator[Running]:
    server = Running(LOOPS[loop_name](), **options)
    try:
        yield server
    finally:
        server.stop()
    assert server.loop_errors == [], "the server's event loop reported an error"


@pytest.fixture(params=sorted(LOOPS))
def server(request: pytest.FixtureRequest, errors: ErrorLog) -> Iterator[Running]:
    with running(request.param) as started:
        yield started


class Client:
    """A raw SMTP client: sends bytes as given and reads replies (a multiline reply is one, its lines joined)."""

    def __init__(self, port: int, *, greeting: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = self.sock.makefile("rb")
        if greeting:
            assert self.reply().startswith(f"220 {HOSTNAME} ESMTP")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        lines = []
        while True:
            line = self.reader.readline()
            if not line:
                raise EOFError("the server closed the connection")
            assert REPLY_LINE.fullmatch(line), line
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] == b" ":
                return "\n".join(lines)

    def replies(self, count: int) -> list[str]:
        return [self.reply() for _ in range(count)]

    def code(self) -> str:
        """The first line's first two words: "550 5.1.1" (or "250 mx.herald.test" for HELO)."""
        return " ".join(self.reply().split("\n")[0].split(" ")[:2])

    def closed(self) -> bool:
        """Whether the server closed the connection (nothing more to read)."""
        return self.reader.read() == b""

    def start(self, sender: str = "<>", *recipients: str) -> None:
        """EHLO, MAIL and RCPT, each answered 2xx; DATA answered 354."""
        self.send(b"EHLO client.test\r\n")
        assert self.reply().startswith(f"250-{HOSTNAME}")
        self.send(f"MAIL FROM:{sender}\r\n".encode())
        assert self.code() == "250 2.1.0"
        for recipient in recipients or ("<a@example.org>",):
            self.send(f"RCPT TO:{recipient}\r\n".encode())
            assert self.code() == "250 2.1.5"
        self.send(b"DATA\r\n")
        assert self.code() == "354 End"

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    connection = Client(server.port)
    yield connection
    connection.close()


def eventually(check: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# --- real clients -------------------------------------------------------------------------------------------------


def test_smtplib_sends_a_bounce_from_the_null_sender(server: Running) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test") as client:
        code, _ = client.ehlo()
        assert code == 250
        for extension in ("pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes"):
            assert client.has_extn(extension)
        assert client.esmtp_features["size"] == str(MAX_BYTES)
        refused = client.sendmail("", ["a@example.org", "b@example.org"], "Subject: x\n\n.hidden\nline\n")
        assert refused == {}
    [message] = server.mailbox.messages
    assert message.mail_from == "" and message.rcpt_tos == ["a@example.org", "b@example.org"]
    # smtplib turns the text's LF into CRLF and stuffs the dot; the server hands on the message as it was meant.
    assert message.content == b"Subject: x\r\n\r\n.hidden\r\nline\r\n"


def test_smtplib_sees_refused_recipients_and_a_utf8_address(server: Running) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        refused = client.sendmail(
            "sender@example.org",
            ["refused@example.org", "jörg@exämple.org"],
            MESSAGE,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
        assert refused == {"refused@example.org": (550, b"5.1.1 No such recipient here")}
    [message] = server.mailbox.messages
    assert message.mail_from == "sender@example.org" and message.rcpt_tos == ["jörg@exämple.org"]


async def test_aiosmtplib_sends_several_messages_on_one_connection(server: Running) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False) as client:
        for n in range(3):
            _, reply = await client.sendmail("", [f"r{n}@example.org"], MESSAGE + b"." * n + b"\r\n")
            assert reply == f"2.0.0 OK: kept {n + 1}"
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await client.sendmail("", ["refused@example.org"], MESSAGE)
        assert (await client.noop()).code == 250
        assert (await client.vrfy("someone@example.org")).code == 252
        assert (await client.help()).startswith("2.0.0 Commands:")
        assert (await client.rset()).code == 250
    assert [m.content for m in server.mailbox.messages] == [MESSAGE + b"." * n + b"\r\n" for n in range(3)]


async def test_aiosmtplib_is_told_552_for_a_message_over_the_limit_and_the_session_goes_on(
    server: Running,
) -> None:
    too_big = b"x" * (MAX_BYTES - 1) + b"\r\n"
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False) as client:
        # aiosmtplib declares the size (SIZE=) and is refused at MAIL.
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as at_mail:
            await client.sendmail("", ["a@example.org"], too_big)
        assert at_mail.value.code == 552 and at_mail.value.message.startswith("5.3.4")
        # Without SIZE, at the end of the content.
        await client.mail("")
        await client.rcpt("a@example.org")
        with pytest.raises(aiosmtplib.SMTPDataError) as at_data:
            await client.data(too_big)
        assert at_data.value.code == 552 and at_data.value.message.startswith("5.3.4")
        await client.sendmail("", ["a@example.org"], b"y" * (MAX_BYTES - 2) + b"\r\n")
    [message] = server.mailbox.messages
    assert message.content == b"y" * (MAX_BYTES - 2) + b"\r\n"


async def test_herald_pipelining_client_sends_through_it(server: Running) -> None:
    async with SmtpConnectionPool(SmtpTarget("127.0.0.1", server.port), local_hostname="client.test") as pool:
        replies = await asyncio.gather(
            *(pool.send("bounces@example.org", f"r{n}@example.org", MESSAGE) for n in range(20))
        )
    assert all(reply.code == 250 for reply in replies)
    assert sorted(m.rcpt_tos[0] for m in server.mailbox.messages) == sorted(f"r{n}@example.org" for n in range(20))


# --- pipelining ---------------------------------------------------------------------------------------------------


def test_pipelined_commands_are_answered_in_order_and_content_after_data_is_the_message(
    server: Running, client: Client
) -> None:
    client.send(
        b"EHLO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<refused@example.org>\r\n"
        b"RCPT TO:<b@example.org>\r\nDATA\r\nSubject: one\r\n\r\n.\r\n"
        b"MAIL FROM:<x@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n..two\r\n.\r\nNOOP\r\nQUIT\r\n"
    )
    ehlo = client.reply()
    assert ehlo.splitlines()[1:] == [
        "250-PIPELINING",
        f"250-SIZE {MAX_BYTES}",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250 ENHANCEDSTATUSCODES",
    ]
    assert [reply.split(" ")[0] for reply in client.replies(12)] == [
        "250", "250", "550", "250", "354", "250", "250", "250", "354", "250", "250", "221",
    ]  # fmt: skip
    assert client.closed()
    first, second = server.mailbox.messages
    assert (first.mail_from, first.rcpt_tos, first.content) == (
        "",
        ["a@example.org", "b@example.org"],
        b"Subject: one\r\n\r\n",
    )
    assert (second.mail_from, second.rcpt_tos, second.content) == ("x@example.org", ["c@example.org"], b".two\r\n")


def test_commands_after_a_message_wait_until_the_handler_answered_it(server: Running, client: Client) -> None:
    server.mailbox.hold = True
    client.start()
    client.send(b"Subject: held\r\n\r\n.\r\nNOOP\r\nRSET\r\n")
    assert server.mailbox.started.wait(5)
    # Neither the message nor the NOOP is answered while the handler runs.
    assert select.select([client.sock], [], [], 0.3)[0] == []
    server.in_loop(server.mailbox.release)
    assert client.replies(3) == ["250 2.0.0 OK: kept 1", "250 2.0.0 OK", "250 2.0.0 OK"]


def test_a_large_pipelined_burst_behind_a_held_message_is_answered_in_full(
    server: Running, client: Client
) -> None:
    server.mailbox.hold = True
    client.start()
    burst = 40_000  # 240 KB of commands: reading pauses while the handler runs
    client.send(b"Subject: held\r\n\r\n.\r\n")
    assert server.mailbox.started.wait(5)
    sender = threading.Thread(target=client.send, args=(b"NOOP\r\n" * burst,))
    sender.start()
    time.sleep(0.2)
    server.in_loop(server.mailbox.release)
    assert client.reply() == "250 2.0.0 OK: kept 1"
    assert client.replies(burst) == ["250 2.0.0 OK"] * burst
    sender.join(5)


# --- lines and content --------------------------------------------------------------------------------------------


def test_a_command_line_over_512_octets_is_refused_and_the_session_goes_on(client: Client) -> None:
    client.send(b"NOOP " + b"x" * 505 + b"\r\n")  # 512 octets with CRLF: the limit
    assert client.code() == "250 2.0.0"
    client.send(b"NOOP " + b"x" * 506 + b"\r\n")
    assert client.code() == "500 5.5.2"
    client.send(b"MAIL FROM:<" + b"y" * 100_000)  # arrives in pieces, none of it kept
    client.send(b"z" * 100_000 + b">\r\nNOOP\r\n")
    assert client.replies(2) == ["500 5.5.2 Line too long", "250 2.0.0 OK"]


@pytest.mark.parametrize("false_end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n. \r\n"])
def test_only_crlf_dot_crlf_ends_the_content(server: Running, client: Client, false_end: bytes) -> None:
    client.start()
    smuggled = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\n"
    sent = b"Subject: real\r\n\r\nbefore" + false_end + smuggled + b"after\r\n"
    client.send(sent + b".\r\nNOOP\r\n")
    assert client.replies(2) == ["250 2.0.0 OK: kept 1", "250 2.0.0 OK"]
    [message] = server.mailbox.messages
    # One message with all of it; a CRLF "." that is not the end is a stuffed dot, and loses it.
    assert message.content == sent.replace(b"\r\n.", b"\r\n") and message.mail_from == ""
    assert smuggled in message.content


def test_lines_beginning_with_a_dot_lose_that_dot(server: Running, client: Client) -> None:
    client.start()
    # As sent (dot-stuffed), one piece at a time so that the stuffing spans the pieces.
    for piece in (b"..first\r\n", b"\r", b"\n..", b"\r\n...\r\n", b"a.b\r\n.", b"\r\n"):
        client.send(piece)
        time.sleep(0.01)
    assert client.reply() == "250 2.0.0 OK: kept 1"
    assert server.mailbox.messages[0].content == b".first\r\n\r\n.\r\n..\r\na.b\r\n"


def test_an_empty_message_and_a_lone_dot_line(server: Running, client: Client) -> None:
    client.start()
    client.send(b".\r\n")
    assert client.reply() == "250 2.0.0 OK: kept 1"
    assert server.mailbox.messages[0].content == b""


def test_content_over_the_limit_is_read_to_its_end_and_refused(server: Running, client: Client) -> None:
    client.start()
    for _ in range(MAX_BYTES // 1000 * 3):
        client.send(b"x" * 998 + b"\r\n")
    client.send(b".\r\nNOOP\r\n")
    assert client.replies(2) == ["552 5.3.4 Message too big", "250 2.0.0 OK"]
    assert server.mailbox.messages == []
    # The limit counts the message as meant: stuffed dots do not count.
    client.send(b"MAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n")
    assert [r.split(" ")[0] for r in client.replies(3)] == ["250", "250", "354"]
    client.send(b"..\r\n" * (MAX_BYTES // 3) + b".\r\n")
    assert client.reply() == "250 2.0.0 OK: kept 1"
    assert len(server.mailbox.messages[0].content) == MAX_BYTES // 3 * 3


def test_a_declared_size_over_the_limit_is_refused_at_mail(client: Client) -> None:
    client.send(b"EHLO c\r\n")
    client.reply()
    client.send(f"MAIL FROM:<> SIZE={MAX_BYTES + 1}\r\nMAIL FROM:<> SIZE={MAX_BYTES} BODY=8BITMIME\r\n".encode())
    assert [client.code(), client.code()] == ["552 5.3.4", "250 2.1.0"]


# --- commands -----------------------------------------------------------------------------------------------------


def test_the_limit_of_recipients_is_452(server: Running, client: Client) -> None:
    client.send(b"EHLO client.test\r\nMAIL FROM:<>\r\n")
    client.replies(2)
    client.send(b"".join(f"RCPT TO:<r{n}@example.org>\r\n".encode() for n in range(MAX_RECIPIENTS + 1)))
    assert [client.code() for _ in range(MAX_RECIPIENTS + 1)][-2:] == ["250 2.1.5", "452 4.5.3"]


@pytest.mark.parametrize(
    ("commands", "codes"),
    [
        (b"MAIL FROM:<>\r\n", ["503 5.5.1"]),
        (b"HELO c\r\nRCPT TO:<a@example.org>\r\nDATA\r\n", ["250 mx.herald.test", "503 5.5.1", "503 5.5.1"]),
        (b"HELO c\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\nDATA\r\n", ["250 mx.herald.test", "250 2.1.0", "503 5.5.1", "503 5.5.1"]),
        (b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<refused@example.org>\r\nDATA\r\n", ["250 mx.herald.test", "250 2.1.0", "550 5.1.1", "503 5.5.1"]),
        (b"HELO c\r\nMAIL FROM:<>\r\nRSET\r\nRCPT TO:<a@example.org>\r\n", ["250 mx.herald.test", "250 2.1.0", "250 2.0.0", "503 5.5.1"]),
        (b"HELO c\r\nMAIL FROM:<>\r\nEHLO c\r\nRCPT TO:<a@example.org>\r\n", ["250 mx.herald.test", "250 2.1.0", "250-mx.herald.test", "503 5.5.1"]),
    ],
)  # fmt: skip
def test_commands_out_of_sequence_are_503(client: Client, commands: bytes, codes: list[str]) -> None:
    client.send(commands)
    assert [client.code() for _ in codes] == codes


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (b"EHLO", "501 5.5.4"),
        (b"HELO", "501 5.5.4"),
        (b"FOO bar", "500 5.5.1"),
        (b"", "500 5.5.1"),
        (b"EXPN list", "502 5.5.1"),
        (b"STARTTLS", "502 5.5.1"),
        (b"AUTH PLAIN AAAA", "502 5.5.1"),
        (b"BDAT 10 LAST", "502 5.5.1"),
        (b"VRFY", "501 5.5.4"),
        (b"vrfy someone", "252 2.5.0"),
        (b"help", "214 2.0.0"),
        (b"RSET now", "501 5.5.4"),
        (b"MAIL TO:<a@example.org>", "501 5.5.4"),
        (b"MAIL FROM:", "501 5.1.7"),
        (b"MAIL FROM:<a@example.org", "501 5.1.7"),
        (b"MAIL FROM:<a b@example.org>", "501 5.1.7"),
        (b"MAIL FROM:<a\xff@example.org>", "553 5.1.7"),
        (b"MAIL FROM:<> BODY=BINARYMIME", "555 5.5.4"),
        (b"MAIL FROM:<> SIZE=abc", "555 5.5.4"),
        (b"MAIL FROM:<> XFORWARD=1", "555 5.5.4"),
        (b"MAIL FROM:<> SMTPUTF8=yes", "555 5.5.4"),
        (b"MAIL FROM:<> SMTPUTF8 BODY=7bit size=12", "250 2.1.0"),
        (b'MAIL FROM:<"odd > local"@example.org>', "250 2.1.0"),
        (b"MAIL FROM: <spaced@example.org>", "250 2.1.0"),
        (b"mail from:bare@example.org", "250 2.1.0"),
    ],
)
def test_each_command_is_answered(client: Client, command: bytes, code: str) -> None:
    client.send(b"HELO client.test\r\n" + command + b"\r\n")
    client.reply()
    assert client.code() == code


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (b"RCPT TO:<>", "501 5.1.3"),
        (b"RCPT TO:", "501 5.1.3"),
        (b"RCPT FROM:<a@example.org>", "501 5.5.4"),
        (b"RCPT TO:<a\xc3@example.org>", "553 5.1.3"),
        (b"RCPT TO:<a@example.org> NOTIFY=NEVER", "555 5.5.4"),
        (b"RCPT TO:<@relay.example,@other.example:routed@example.org>", "250 2.1.5"),
        (b"RCPT TO:<Postmaster>", "250 2.1.5"),
    ],
)
def test_recipients_are_parsed_before_the_handler_is_asked(
    server: Running, client: Client, command: bytes, code: str
) -> None:
    client.send(b"HELO client.test\r\nMAIL FROM:<>\r\n" + command + b"\r\nDATA\r\n")
    client.replies(2)
    assert client.code() == code
    if code.startswith("250"):
        client.reply()
        client.send(b".\r\n")
        client.reply()
        assert server.mailbox.messages[0].rcpt_tos in (["routed@example.org"], ["Postmaster"])


def test_ten_protocol_errors_close_the_session_with_421(server: Running, client: Client) -> None:
    client.send(b"BOGUS\r\n" * 9)
    assert [client.code() for _ in range(9)] == ["500 5.5.1"] * 9
    client.send(b"NOOP\r\nBOGUS\r\nNOOP\r\n")
    assert client.replies(3) == [
        "250 2.0.0 OK",
        "500 5.5.1 Command unrecognized",
        "421 4.7.0 Too many errors, closing",
    ]
    assert client.closed()


def test_quit_is_answered_221_and_closes(client: Client) -> None:
    client.send(b"QUIT\r\nNOOP\r\n")
    assert client.code() == "221 2.0.0"
    assert client.closed()


# --- timeouts, dropped connections, shutdown ----------------------------------------------------------------------


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_an_idle_session_is_closed_with_421(loop_name: str, errors: ErrorLog) -> None:
    with running(loop_name, timeout=0.3) as server:
        client = Client(server.port)
        client.start()
        client.send(b"Subject: half a message\r\n")
        started = time.monotonic()
        assert client.code() == "421 4.4.2"
        assert 0.2 < time.monotonic() - started < 3
        assert client.closed()
        client.close()
        # A session that keeps talking is not idle.
        busy = Client(server.port)
        for _ in range(6):
            busy.send(b"NOOP\r\n")
            assert busy.code() == "250 2.0.0"
            time.sleep(0.1)
        busy.close()
        assert server.mailbox.messages == []


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_message_being_handled_is_not_cut_by_the_idle_timeout(loop_name: str, errors: ErrorLog) -> None:
    with running(loop_name, timeout=0.2) as server:
        server.mailbox.hold = True
        client = Client(server.port)
        client.start()
        client.send(b"Subject: slow\r\n\r\n.\r\n")
        assert server.mailbox.started.wait(5)
        time.sleep(0.5)
        server.in_loop(server.mailbox.release)
        assert client.reply() == "250 2.0.0 OK: kept 1"
        client.close()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_client_that_reads_no_replies_is_cut_off_after_the_idle_timeout(
    loop_name: str, errors: ErrorLog
) -> None:
    with running(loop_name, timeout=0.3) as server:
        client = Client(server.port)
        started = time.monotonic()
        # The server stops reading once its replies pile up, and then the client's sending stalls.
        with pytest.raises(OSError):
            for _ in range(200):
                client.send(b"NOOP\r\n" * 100_000)
        assert time.monotonic() - started < 5
        client.close()


@pytest.mark.parametrize("abort", [False, True], ids=["close", "reset"])
def test_a_connection_lost_during_data_hands_nothing_to_the_handler(
    server: Running, client: Client, abort: bool
) -> None:
    client.start()
    client.send(b"Subject: cut\r\n\r\nhalf of it\r\n.")
    if abort:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    with smtplib.SMTP("127.0.0.1", server.port) as other:
        other.sendmail("", ["a@example.org"], b"Subject: whole\r\n\r\n")
    assert [m.content for m in server.mailbox.messages] == [b"Subject: whole\r\n\r\n"]


def test_close_waits_for_the_message_being_handled(server: Running) -> None:
    server.mailbox.hold = True
    sending, idle = Client(server.port), Client(server.port)
    sending.start()
    sending.send(b"Subject: last\r\n\r\n.\r\n")
    assert server.mailbox.started.wait(5)
    closing = server.submit(server.server.close())
    assert idle.code() == "421 4.3.2" and idle.closed()
    time.sleep(0.2)
    assert not closing.done()
    server.in_loop(server.mailbox.release)
    closing.result(5)
    assert sending.replies(2) == ["250 2.0.0 OK: kept 1", "421 4.3.2 Service shutting down"]
    assert sending.closed()
    sending.close()
    idle.close()
    with pytest.raises(OSError):
        Client(server.port)


def test_a_handler_that_fails_is_answered_451_and_logged(
    server: Running, client: Client, errors: ErrorLog
) -> None:
    server.mailbox.fail = True
    client.start()
    client.send(b"Subject: x\r\n\r\n.\r\nNOOP\r\n")
    assert [client.code(), client.code()] == ["451 4.3.0", "250 2.0.0"]
    assert errors.errors == ["the handler failed on a message"]
    errors.errors.clear()


# --- random input -------------------------------------------------------------------------------------------------

PIECES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"EHLO x\r\n",
            b"HELO x\r\n",
            b"MAIL FROM:<>\r\n",
            b"MAIL FROM:<a@b> SIZE=99999999999 BODY=8BITMIME SMTPUTF8\r\n",
            b"RCPT TO:<a@b>\r\n",
            b"RCPT TO:<refused@b>\r\n",
            b"DATA\r\n",
            b".\r\n",
            b"\r\n.\r\n",
            b"\r\n..",
            b"\r\n",
            b"\n",
            b"\r",
            b"RSET\r\n",
            b"NOOP\r\n",
            b"x" * 600,
            b"\xff\xfe",
        ]
    ),
)


@pytest.fixture(scope="module", params=sorted(LOOPS))
def fuzzed(request: pytest.FixtureRequest) -> Iterator[Running]:
    with running(request.param) as server:
        yield server


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(PIECES, max_size=25))
def test_random_input_only_ever_gets_replies(fuzzed: Running, errors: ErrorLog, pieces: list[bytes]) -> None:
    client = Client(fuzzed.port)
    received = b""
    # The server may end the session (421 after ten errors) while pieces still arrive: its kernel then
    # resets the connection, and what the client had not read yet may be lost.
    reset = False
    try:
        for piece in pieces:
            client.send(piece)
        client.sock.shutdown(socket.SHUT_WR)
        while chunk := client.sock.recv(65536):
            received += chunk
    except OSError:
        reset = True
    client.close()
    # After the greeting (Client read it), everything the server wrote is reply lines, whatever arrived.
    rest = REPLY_LINE.sub(b"", received)
    assert rest == b"" or (reset and b"\n" not in rest)  # a reset may cut the last reply short
    assert errors.errors == [] and fuzzed.loop_errors == []
