"""The SMTP pool against small in-process SMTP servers: how every outcome is classified, and when sessions are reused.

Loopback sockets only (no database): each test starts an aiosmtpd server whose handler misbehaves
in one chosen way.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import trustme
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.delivery.capture import CaptureServer, GroupCommit
from services.delivery.domain import CapturedMessage
from services.delivery.smtp import SmtpConnectionPool, SmtpReply, SmtpSendError, SmtpTarget, message_content

pytestmark = pytest.mark.asyncio(loop_scope="session")

MESSAGE = b"Subject: hello\r\nFrom: a@example.com\r\nTo: b@example.com\r\n\r\nBody.\r\n"


class Behaviour:
    """An aiosmtpd handler: refuses or drops what the test asks for, accepts the rest."""

    def __init__(self, pipelining: bool = False) -> None:
        self.pipelining = pipelining
        self.sessions = 0
        self.accepted: list[str] = []
        self.noops = 0
        self.drop_after_data = False
        self.slow_data = False
        self.protocols: list[SMTP] = []

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads commands one line at a time, so it serves a pipelining client correctly.
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("refused"):
            return "553 5.1.8 Sender address rejected: Domain not found"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("reject"):
            return "550 5.1.1 No such user"
        if address.startswith("defer"):
            return "451 4.7.1 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Envelope, arg: str) -> str:
        self.noops += 1
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.slow_data:
            self.slow_data = False
            await asyncio.sleep(5)
        if self.drop_after_data:
            # The content arrived; the connection dies before the reply: the sender cannot know.
            assert server.transport is not None
            server.transport.abort()
            return "250 OK"
        if any(address.startswith("spam") for address in envelope.rcpt_tos):
            return "554 5.7.1 Message rejected as spam"
        self.accepted.extend(envelope.rcpt_tos)
        return "250 2.0.0 Queued"


@pytest_asyncio.fixture(loop_scope="session", params=["pipelining", "one command at a time"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Behaviour, int]]:
    """Every test runs against a server that offers PIPELINING and against one that does not."""
    behaviour = Behaviour(pipelining=request.param == "pipelining")

    def protocol() -> SMTP:
        behaviour.sessions += 1
        smtp = SMTP(behaviour, hostname="test", loop=asyncio.get_running_loop())
        behaviour.protocols.append(smtp)
        return smtp

    listener = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    try:
        yield behaviour, int(listener.sockets[0].getsockname()[1])
    finally:
        listener.close()


def pool_for(port: int, **options: Any) -> SmtpConnectionPool:
    return SmtpConnectionPool(SmtpTarget("127.0.0.1", port), local_hostname="client.test", **options)


async def test_a_5xx_is_permanent_and_the_session_stays_usable(server: tuple[Behaviour, int]) -> None:
    behaviour, port = server
    async with pool_for(port, size=1) as pool:
        with pytest.raises(SmtpSendError) as caught:
            await pool.send("a@example.com", "reject@example.com", MESSAGE)
        assert caught.value.permanent
        assert caught.value.reply is not None and caught.value.reply.code == 550
        assert "No such user" in caught.value.reply.message
        assert not caught.value.maybe_delivered
        reply = await pool.send("a@example.com", "ok@example.com", MESSAGE)
    assert reply.code == 250
    assert behaviour.accepted == ["ok@example.com"]
    assert behaviour.sessions == 1


@pytest.mark.parametrize(
    ("sender", "recipient", "stage", "bounce"),
    [
        ("a@example.com", "reject@example.com", "RCPT", True),
        ("a@example.com", "spam@example.com", "content", True),
        # A refused MAIL FROM is the sender's problem, not the recipient's bounce.
        ("refused@example.com", "ok@example.com", "MAIL", False),
    ],
)
async def test_a_refusal_names_the_command_it_answered(
    server: tuple[Behaviour, int], sender: str, recipient: str, stage: str, bounce: bool
) -> None:
    _, port = server
    async with pool_for(port, size=1) as pool:
        with pytest.raises(SmtpSendError) as caught:
            await pool.send(sender, recipient, MESSAGE)
    assert (caught.value.stage, caught.value.refuses_recipient) == (stage, bounce)


async def test_a_4xx_is_transient(server: tuple[Behaviour, int]) -> None:
    _, port = server
    async with pool_for(port) as pool:
        with pytest.raises(SmtpSendError) as caught:
            await pool.send("a@example.com", "defer@example.com", MESSAGE)
    assert not caught.value.permanent
    assert caught.value.reply is not None and caught.value.reply.code == 451


async def test_content_made_on_demand_is_made_only_for_an_accepted_envelope_and_once(
    server: tuple[Behaviour, int],
) -> None:
    behaviour, port = server
    made: list[str] = []

    def content_of(recipient: str) -> Any:
        def make() -> bytes:
            made.append(recipient)
            return MESSAGE

        return make

    async with pool_for(port, size=1) as pool:
        for refused in ("defer@example.com", "reject@example.com"):
            with pytest.raises(SmtpSendError):
                await pool.send("a@example.com", refused, content_of(refused))
        reply = await pool.send("a@example.com", "ok@example.com", content_of("ok@example.com"))
    assert reply.code == 250
    # A greylisted or refused recipient costs no rendering; an accepted one is rendered once.
    assert made == ["ok@example.com"]
    assert behaviour.accepted == ["ok@example.com"]


async def test_content_that_cannot_be_made_drops_the_session_waiting_for_it(server: tuple[Behaviour, int]) -> None:
    behaviour, port = server

    def broken() -> bytes:
        raise ValueError("cannot render")

    async with pool_for(port, size=1) as pool:
        with pytest.raises(ValueError, match="cannot render"):
            await pool.send("a@example.com", "ok@example.com", broken)
        # The server was left waiting for content (after DATA or the pipelined envelope): a new session.
        reply = await pool.send("a@example.com", "ok@example.com", MESSAGE)
    assert reply.code == 250
    assert behaviour.accepted == ["ok@example.com"]
    assert behaviour.sessions == 2


async def test_a_session_the_server_dropped_is_replaced_without_losing_the_message(
    server: tuple[Behaviour, int],
) -> None:
    behaviour, port = server
    async with pool_for(port, size=1) as pool:
        await pool.send("a@example.com", "first@example.com", MESSAGE)
        # The server hangs up on the idle session (an idle timeout on its side).
        for protocol in behaviour.protocols:
            assert protocol.transport is not None
            protocol.transport.close()
        await asyncio.sleep(0.05)
        await pool.send("a@example.com", "second@example.com", MESSAGE)
    assert behaviour.accepted == ["first@example.com", "second@example.com"]
    assert behaviour.sessions == 2


async def test_an_idle_session_is_checked_with_noop_before_reuse(server: tuple[Behaviour, int]) -> None:
    behaviour, port = server
    async with pool_for(port, size=1, idle_check_seconds=0.0) as pool:
        await pool.send("a@example.com", "one@example.com", MESSAGE)
        await asyncio.sleep(0.01)
        await pool.send("a@example.com", "two@example.com", MESSAGE)
    assert behaviour.noops == 1
    assert behaviour.sessions == 1


async def test_a_connection_lost_before_the_reply_to_the_content_is_maybe_delivered(
    server: tuple[Behaviour, int],
) -> None:
    behaviour, port = server
    behaviour.drop_after_data = True
    async with pool_for(port) as pool:
        with pytest.raises(SmtpSendError) as caught:
            await pool.send("a@example.com", "lost@example.com", MESSAGE)
    assert caught.value.reply is None
    assert caught.value.maybe_delivered
    assert not caught.value.permanent


async def test_a_send_cancelled_mid_transaction_never_leaves_its_session_for_reuse(
    server: tuple[Behaviour, int],
) -> None:
    behaviour, port = server
    behaviour.slow_data = True
    async with pool_for(port, size=1) as pool:
        stuck = asyncio.create_task(pool.send("a@example.com", "slow@example.com", MESSAGE))
        await asyncio.sleep(0.2)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        reply = await pool.send("a@example.com", "next@example.com", MESSAGE)
    assert reply.code == 250
    assert behaviour.sessions == 2
    assert "next@example.com" in behaviour.accepted


async def test_a_refused_connection_is_transient_and_certainly_not_delivered() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with pool_for(port, timeout=2.0) as pool:
        with pytest.raises(SmtpSendError) as caught:
            await pool.send("a@example.com", "b@example.com", MESSAGE)
    assert caught.value.reply is None and not caught.value.refuses_recipient
    assert not caught.value.maybe_delivered and not caught.value.permanent


async def test_starttls_is_never_skipped_silently(server: tuple[Behaviour, int]) -> None:
    _, port = server
    pool = SmtpConnectionPool(SmtpTarget("127.0.0.1", port, tls="starttls"), local_hostname="client.test")
    async with pool:
        with pytest.raises(SmtpSendError, match="connect"):
            await pool.send("a@example.com", "b@example.com", MESSAGE)


async def test_concurrency_is_bounded_by_the_pool_size(server: tuple[Behaviour, int]) -> None:
    behaviour, port = server
    async with pool_for(port, size=3) as pool:
        await asyncio.gather(*(pool.send("a@example.com", f"r{n}@example.com", MESSAGE) for n in range(60)))
        assert pool.connections_opened == 3
    assert behaviour.sessions == 3
    assert sorted(behaviour.accepted) == sorted(f"r{n}@example.com" for n in range(60))


async def test_the_capture_answers_451_when_it_cannot_store_and_250_once_stored() -> None:
    stored: list[CapturedMessage] = []
    failing = True

    async def write(messages: Any) -> None:
        if failing:
            raise RuntimeError("database is down")
        stored.extend(messages)

    capture = CaptureServer(GroupCommit(write), "127.0.0.1", 0)
    port = await capture.start()
    try:
        async with pool_for(port, size=1) as pool:
            with pytest.raises(SmtpSendError) as caught:
                await pool.send("a@example.com", "b@example.com", MESSAGE)
            assert caught.value.reply is not None and caught.value.reply.code == 451
            failing = False
            await pool.send("a@example.com", "b@example.com", MESSAGE)
    finally:
        await capture.close()
    assert [(m.envelope_from, m.envelope_to, m.subject) for m in stored] == [
        ("a@example.com", ["b@example.com"], "hello")
    ]
    assert capture.sessions == 1


class ScriptedServer:
    """A raw SMTP server that answers MAIL, RCPT and DATA only once all three have arrived.

    A client that waits for each reply before the next command never gets one from it, so a send
    that succeeds proves the client pipelined. `rcpt_reply` and `data_reply` script refusals, and
    replies go out one byte at a time when `trickle` is set (a reply split over many reads).
    """

    def __init__(self, rcpt_reply: bytes = b"250 OK", data_reply: bytes = b"354 End data with <CR><LF>.<CR><LF>"):
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.trickle = False
        self.received: list[bytes] = []
        self.commands: list[bytes] = []

    async def _say(self, writer: asyncio.StreamWriter, text: bytes) -> None:
        if not self.trickle:
            writer.write(text)
        else:
            for i in range(len(text)):
                writer.write(text[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)
        await writer.drain()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._say(writer, b"220 scripted ESMTP\r\n")
        try:
            while line := await reader.readline():
                self.commands.append(line.strip())
                verb = line[:4].upper()
                if verb == b"EHLO":
                    await self._say(writer, b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    rcpt, data = await reader.readline(), await reader.readline()
                    self.commands += [rcpt.strip(), data.strip()]
                    await self._say(writer, b"250 OK\r\n" + self.rcpt_reply + b"\r\n" + self.data_reply + b"\r\n")
                    if self.data_reply.startswith(b"354"):
                        self.received.append(await reader.readuntil(b"\r\n.\r\n"))
                        await self._say(writer, b"250-2.0.0 Queued\r\n250 2.0.0 as 1\r\n")
                elif verb == b"QUIT":
                    await self._say(writer, b"221 Bye\r\n")
                    break
                else:
                    await self._say(writer, b"250 OK\r\n")
        finally:
            writer.close()


@pytest_asyncio.fixture(loop_scope="session")
async def scripted() -> AsyncIterator[tuple[ScriptedServer, int]]:
    script = ScriptedServer()
    listener = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    try:
        yield script, int(listener.sockets[0].getsockname()[1])
    finally:
        listener.close()


async def test_with_pipelining_the_envelope_goes_out_in_one_write_and_multiline_replies_are_read(
    scripted: tuple[ScriptedServer, int],
) -> None:
    script, port = scripted
    async with pool_for(port, size=1, timeout=2) as pool:
        reply = await pool.send("a@example.com", "b@example.com", MESSAGE)
        script.trickle = True
        await pool.send("a@example.com", "c@example.com", b".starts with a dot\n.\nends without a line end")
    assert reply == SmtpReply(250, "2.0.0 Queued\n2.0.0 as 1")
    assert script.received == [
        MESSAGE + b".\r\n",
        b"..starts with a dot\r\n..\r\nends without a line end\r\n.\r\n",
    ]
    assert script.commands[1:4] == [b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>", b"DATA"]


async def test_a_server_that_accepts_data_after_refusing_the_recipient_gets_no_content(
    scripted: tuple[ScriptedServer, int],
) -> None:
    script, port = scripted
    script.rcpt_reply = b"550 5.1.1 No such user"
    async with pool_for(port, size=1, timeout=2) as pool:
        with pytest.raises(SmtpSendError) as caught:
            await pool.send("a@example.com", "nobody@example.com", MESSAGE)
        assert caught.value.permanent and not caught.value.maybe_delivered
        assert caught.value.reply == SmtpReply(550, "5.1.1 No such user")
        script.rcpt_reply = b"250 OK"
        await pool.send("a@example.com", "b@example.com", MESSAGE)
        # The session that was waiting for content was dropped, not reused.
        assert pool.connections_opened == 2
    assert script.received[-1] == MESSAGE + b".\r\n"


async def test_an_address_that_could_break_the_command_line_is_refused_for_good(
    server: tuple[Behaviour, int],
) -> None:
    behaviour, port = server
    async with pool_for(port, size=1) as pool:
        with pytest.raises(SmtpSendError) as caught:
            await pool.send("a@example.com", "b@example.com>\r\nRCPT TO:<c@example.com", MESSAGE)
    assert caught.value.permanent and not caught.value.maybe_delivered
    assert behaviour.accepted == []


@pytest.mark.parametrize(
    ("message", "content"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb", b"a\r\nb\r\n.\r\n"),
        (b"a\rb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".a\r\n..b\r\n.\r\n", b"..a\r\n...b\r\n..\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
async def test_message_content_has_crlf_line_ends_doubled_leading_dots_and_the_final_dot(
    message: bytes, content: bytes
) -> None:
    assert message_content(message) == content


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_messages_go_out_over_tls_once_aiosmtplib_opened_the_session(
    tls: str, server: tuple[Behaviour, int]
) -> None:
    """The pipelined transactions take over the TLS transport that aiosmtplib's handshake made."""
    behaviour, _ = server
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    tls_sessions: list[SMTP] = []

    def protocol() -> SMTP:
        if tls == "starttls":
            smtp = SMTP(behaviour, hostname="test", tls_context=server_context, require_starttls=True)
        else:
            smtp = SMTP(behaviour, hostname="test")
        tls_sessions.append(smtp)
        return smtp

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        protocol, "127.0.0.1", 0, ssl=server_context if tls == "implicit" else None
    )
    port = int(listener.sockets[0].getsockname()[1])
    try:
        target = SmtpTarget("127.0.0.1", port, tls="starttls" if tls == "starttls" else "implicit")
        async with SmtpConnectionPool(
            target, size=2, local_hostname="client.test", tls_context=client_context
        ) as pool:
            await asyncio.gather(*(pool.send("a@example.com", f"t{n}@example.com", MESSAGE) for n in range(10)))
            assert pool.connections_opened == 2
            # Both sessions are still open here, and the server sees TLS on each.
            assert len(tls_sessions) == 2
            assert all(smtp.transport and smtp.transport.get_extra_info("ssl_object") for smtp in tls_sessions)
    finally:
        listener.close()
    assert sorted(behaviour.accepted) == sorted(f"t{n}@example.com" for n in range(10))
