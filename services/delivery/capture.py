"""The local mail capture: an SMTP server that accepts every message and stores it in `delivery.captured_messages`.

`herald run` starts it (`herald serve mail-capture`) when SMTP_URL is unset and points the other
processes' SMTP_URL at it, so a campaign can be sent on a laptop with no mail server and read at
the translator's /mail pages. It relays nothing.

A message is answered 250 only once its row is committed, so the sender's "sent" is never a
message the capture lost. Rows are written by group commit: the messages that arrive while one
INSERT runs go out together in the next, so many concurrent sessions cost few transactions.
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import signal
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import db
from services.common.config import Settings
from services.delivery import store
from services.delivery.domain import CapturedMessage
from services.delivery.group_commit import GroupCommit
from services.delivery.smtp_listener import SmtpListener, smtp_session

log = structlog.get_logger()

IDENT = "Herald mail capture"
# Bigger than any campaign message; a client sending more gets 552 from aiosmtpd.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# Rows per INSERT: far below PostgreSQL's 65535 parameters per statement (9 per row).
MAX_ROWS_PER_INSERT = 500


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; a hostile header must not make a message unstorable.
    return value.replace("\x00", "\ufffd")


def message_headers(raw: bytes) -> tuple[str, str]:
    """The decoded Subject and Message-ID of a raw message ("" for a missing one)."""
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    try:
        return str(headers.get("Subject", "")), str(headers.get("Message-ID", "")).strip()
    except (ValueError, TypeError, IndexError, LookupError) as exc:
        # The standard library's header decoder trips over some malformed encodings; the message is
        # still kept, with its headers undecoded.
        log.info("undecodable headers in a captured message", error=repr(exc))
        raw_headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        return str(raw_headers.get("Subject", "")), str(raw_headers.get("Message-ID", "")).strip()


class SessionHandler:
    """aiosmtpd's handler for one SMTP connection: every message is accepted and stored."""

    def __init__(self, sink: GroupCommit[CapturedMessage], on_session: Callable[[], None] | None = None) -> None:
        self.session_id = str(uuid.uuid4())
        self._sink = sink
        if on_session is not None:
            on_session()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's EHLO reply with PIPELINING: it reads commands one line at a time, so pipelining clients work."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        subject, message_id = message_headers(raw)
        peer: Any = session.peer
        message = CapturedMessage(
            session_id=self.session_id,
            peer=_text(f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")),
            helo_name=_text(session.host_name or ""),
            envelope_from=_text(envelope.mail_from or ""),
            envelope_to=[_text(address) for address in envelope.rcpt_tos],
            subject=_text(subject),
            message_id=_text(message_id),
            raw=raw,
            received_at=datetime.now(UTC),
        )
        try:
            await self._sink.store(message)
        except Exception:
            log.exception("could not store a captured message", session_id=self.session_id)
            return "451 4.3.0 Could not store the message; try again later"
        return "250 2.0.0 OK: captured"


class CaptureServer(SmtpListener):
    """The SMTP listener; `sessions` counts the connections it accepted (tests check connection reuse with it).
    Close waits for the messages already received to be written."""

    def __init__(
        self, sink: GroupCommit[CapturedMessage], host: str, port: int, hostname: str = "herald-capture"
    ) -> None:
        super().__init__(host, port)
        self.sink = sink
        self.hostname = hostname
        self.sessions = 0

    def _count_session(self) -> None:
        self.sessions += 1

    def _session(self) -> SMTP:
        return smtp_session(
            SessionHandler(self.sink, self._count_session),
            hostname=self.hostname,
            ident=IDENT,
            max_message_bytes=MAX_MESSAGE_BYTES,
        )

    async def _drain(self) -> None:
        await self.sink.drain()


def database_sink(engine: AsyncEngine) -> GroupCommit[CapturedMessage]:
    """Group commit into delivery.captured_messages."""

    async def write(messages: Sequence[CapturedMessage]) -> None:
        async with engine.begin() as conn:
            await store.insert_captured_messages(conn, messages)

    return GroupCommit(write, MAX_ROWS_PER_INSERT)


async def main(settings: Settings) -> None:
    """`herald serve mail-capture`: the capture server on HERALD_BIND:HERALD_SMTP_CAPTURE_PORT until SIGTERM."""
    # aiosmtpd logs every connection and command at INFO: thousands of lines per campaign.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    engine = db.make_engine(settings, pool_size=4)
    # The delivery service migrates the same schema; the migration lock lets both start at once.
    await db.migrate(engine, store.SCHEMA, Path(__file__).with_name("migrations"))
    server = CaptureServer(database_sink(engine), settings.bind, settings.smtp_capture_port)
    await server.start()
    log.info("serving", service="mail-capture", address=f"{settings.bind}:{server.port}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping", service="mail-capture")
    await server.close()
    await engine.dispose()
    log.info("stopped", service="mail-capture")
