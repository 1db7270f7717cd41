"""The bounce receiver (`herald serve bounce-receiver`): an SMTP server for the bounce domain that records bounces and complaints.

The SMTP conversation is Herald's own lean server (services/delivery/smtp_server.py), which costs a fraction
of aiosmtpd's CPU per message; this module says whom it accepts and what it answers a message.

Every message Herald sends has MAIL FROM `b-<signed token>@<bounce domain>` (services/common/return_path.py),
so a bounce comes back here addressed to the return path of the one recipient it is about.

- RCPT TO is accepted for a return path whose signature verifies, and for HERALD_BOUNCE_FEEDBACK_ADDRESS
  when it is set (where feedback loops send ARF reports); anything else is answered 550 5.1.1, so
  forged and unrelated mail is refused before its content is sent.
- DATA is read by services/delivery/bounce_parser.py. The recipient is the verified return path the
  message was sent to, never a guess from its body; at the feedback address it is the recipient whose
  signed token (X-Herald-Token, or the return path) the ARF report's included original carries.
- Reports go to DeliveryService.RecordBounces, which classifies and records them; the reports of
  concurrent sessions share calls (group commit, at most 1,000 reports each, each call waiting 5 ms for
  more). A message is answered 250
  only once its reports are recorded, and 451 when delivery could not record them, so the sender tries
  again later and nothing is lost; the event key (the report's Message-ID, or its content's hash, and
  the recipient) makes a report that arrives twice count once.
- A message that reports nothing (an auto-reply, a 'delayed' DSN) is accepted, logged and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import Awaitable, Callable, Sequence

import grpc
import structlog
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from prometheus_client import Counter

from services.common import auth, grpcutil, health
from services.common.config import Settings
from services.common.return_path import BouncedRecipient, InvalidReturnPath, ReturnPaths
from services.delivery.bounce_parser import Reading, ReportSource, read_report
from services.delivery.group_commit import GroupCommit
from services.delivery.smtp_server import Envelope, MailHandler, SmtpServer

log = structlog.get_logger()

SERVICE = "bounce-receiver"
IDENT = "Herald bounce receiver"
# A DSN carries at most the original message; campaign messages are far smaller. Bigger: 552.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
# A bounce is addressed to one return path; a message for more is not a bounce.
MAX_RECIPIENTS = 50
# The contract's limit of reports per RecordBounces call.
MAX_REPORTS_PER_CALL = 1000
RECORD_TIMEOUT_SECONDS = 10.0
# Each RecordBounces call first waits this long for more reports (unless 1,000 are waiting). Under load
# the calls then carry tens of reports instead of a handful, and delivery and PostgreSQL spend less per
# report (bench/bounces.py); each reply comes at most this much later.
RECORD_LINGER_SECONDS = 0.005
# Messages larger than this are parsed in a thread, so that one big report does not stall every session.
PARSE_IN_THREAD_BYTES = 256 * 1024
# An idle SMTP session is closed after this many seconds.
SESSION_TIMEOUT_SECONDS = 120

MESSAGES = Counter(
    "herald_bounce_receiver_messages_total",
    "Messages received at return paths or the feedback address, by what became of them",
    ["outcome"],  # recorded, nothing (reported nothing), deferred (451: delivery could not record)
)
REPORTS = Counter("herald_bounce_receiver_reports_total", "Reports recorded, by source", ["source"])
REFUSED_RECIPIENTS = Counter(
    "herald_bounce_receiver_refused_recipients_total", "RCPT TO refused: not a valid return path"
)

_SOURCES = {
    ReportSource.DSN: delivery_pb2.BOUNCE_SOURCE_DSN,
    ReportSource.PLAIN_TEXT: delivery_pb2.BOUNCE_SOURCE_PLAIN_TEXT,
    ReportSource.ARF: delivery_pb2.BOUNCE_SOURCE_ARF,
}

RecordReports = Callable[[Sequence[delivery_pb2.BounceReport]], Awaitable[object]]


class BounceReceiver(MailHandler):
    """What the SMTP sessions ask: whether to accept a recipient, and what to answer a message's content."""

    def __init__(
        self,
        return_paths: ReturnPaths,
        recorder: GroupCommit[delivery_pb2.BounceReport],
        feedback_address: str = "",
    ) -> None:
        self.return_paths = return_paths
        self.recorder = recorder
        self.feedback_address = feedback_address.strip().lower()

    def accepts(self, address: str) -> bool:
        """A return path this installation signed, or the feedback address."""
        if self.feedback_address and address.strip().strip("<>").lower() == self.feedback_address:
            return True
        try:
            self.return_paths.verify_address(address)
        except InvalidReturnPath:
            return False
        return True

    def reply_to_rcpt(self, envelope: Envelope, address: str) -> str:
        """250 for an address `accepts`, 550 5.1.1 (counted) for any other: refused before any content."""
        if not self.accepts(address):
            REFUSED_RECIPIENTS.inc()
            return "550 5.1.1 No such recipient here"
        return "250 2.1.5 OK"

    async def reply_to_data(self, envelope: Envelope) -> str:
        """What `receive` answers the message."""
        return await self.receive(envelope.content, envelope.rcpt_tos)

    async def receive(self, raw: bytes, recipients: Sequence[str]) -> str:
        """The SMTP reply to one message: 250 once what it reports is recorded, 451 if that failed."""
        try:
            if len(raw) > PARSE_IN_THREAD_BYTES:
                reading = await asyncio.to_thread(read_report, raw)
            else:
                reading = read_report(raw)
        except Exception:
            # A report the parser cannot read is Herald's fault: the sender keeps it and tries again.
            log.exception("could not read a report", size=len(raw))
            MESSAGES.labels("deferred").inc()
            return "451 4.3.0 Could not read the report; try again later"
        reports = self.reports_of(reading, raw, recipients)
        if not reports:
            MESSAGES.labels("nothing").inc()
            log.info(
                "received mail that reports nothing",
                why=reading.why_nothing or "no recipient named by a verified return path",
                message_id=reading.message_id,
            )
            return "250 2.0.0 OK: nothing to record"
        try:
            await self.recorder.store_all(reports)
        except Exception as exc:
            MESSAGES.labels("deferred").inc()
            log.warning("could not record bounce reports; the sender will try again", error=_rpc_error(exc))
            return "451 4.3.0 Could not record the report; try again later"
        MESSAGES.labels("recorded").inc()
        for report in reports:
            REPORTS.labels(delivery_pb2.BounceSource.Name(report.source)).inc()
        log.debug("recorded bounce reports", reports=len(reports), message_id=reading.message_id)
        return "250 2.0.0 OK: recorded"

    def reports_of(
        self, reading: Reading, raw: bytes, recipients: Sequence[str]
    ) -> list[delivery_pb2.BounceReport]:
        """One report per recipient the message is verifiably about (none when it reports nothing)."""
        notice = reading.notice
        if notice is None:
            return []
        named: dict[BouncedRecipient, None] = {}
        for address in recipients:
            recipient = self._named_by(address, reading)
            if recipient is not None:
                named[recipient] = None
        # Stable for the report whatever path it takes to arrive: its Message-ID, else its content.
        report_id = hashlib.sha256(reading.message_id.encode() if reading.message_id else raw).hexdigest()[:32]
        reports = []
        for recipient in named:
            report = delivery_pb2.BounceReport(
                campaign_id=recipient.campaign_id,
                recipient_id=recipient.recipient_id,
                kind_hint=delivery_pb2.BOUNCE_KIND_COMPLAINT
                if notice.complaint
                else delivery_pb2.BOUNCE_KIND_UNSPECIFIED,
                status_code=notice.status_code,
                reply_code=notice.reply_code,
                diagnostic=notice.diagnostic,
                source=_SOURCES[notice.source],
                event_key=f"smtp:{report_id}:{recipient.campaign_id}:{recipient.recipient_id}",
            )
            if notice.occurred_at is not None:
                report.occur_time.CopyFrom(grpcutil.to_timestamp(notice.occurred_at))
            reports.append(report)
        return reports

    def _named_by(self, address: str, reading: Reading) -> BouncedRecipient | None:
        """The recipient a message to `address` is about: the return path's, or for an ARF report at the feedback
        address, the one its included original names with a signature that verifies."""
        try:
            return self.return_paths.verify_address(address)
        except InvalidReturnPath:
            pass
        if reading.notice is None or reading.notice.source is not ReportSource.ARF:
            return None  # at the feedback address only complaints count
        for token in reading.original_tokens:
            try:
                return self.return_paths.verify_token(token)
            except InvalidReturnPath:
                continue
        for return_path in reading.original_return_paths:
            try:
                return self.return_paths.verify_address(return_path)
            except InvalidReturnPath:
                continue
        log.info("complaint about no message of ours", message_id=reading.message_id)
        return None


def _rpc_error(exc: Exception) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc)


class BounceServer(SmtpServer):
    """The SMTP server for the bounce domain; close waits for the reports already handed in to be recorded
    (each session is answered only after its reports are)."""

    def __init__(self, receiver: BounceReceiver, host: str, port: int) -> None:
        super().__init__(
            receiver,
            host,
            port,
            hostname=receiver.return_paths.domain,
            ident=IDENT,
            max_message_bytes=MAX_MESSAGE_BYTES,
            max_recipients=MAX_RECIPIENTS,
            timeout=SESSION_TIMEOUT_SECONDS,
        )


def delivery_recorder(
    stub: delivery_pb2_grpc.DeliveryServiceStub, token: Callable[[], str]
) -> GroupCommit[delivery_pb2.BounceReport]:
    """Group commit into DeliveryService.RecordBounces, with the bounce receiver's own token."""

    async def record(reports: Sequence[delivery_pb2.BounceReport]) -> delivery_pb2.RecordBouncesResponse:
        response: delivery_pb2.RecordBouncesResponse = await stub.RecordBounces(
            delivery_pb2.RecordBouncesRequest(reports=reports),
            metadata=(("authorization", f"Bearer {token()}"),),
            timeout=RECORD_TIMEOUT_SECONDS,
        )
        if response.unknown_count:
            log.info("reports about recipients delivery does not know", unknown=response.unknown_count)
        return response

    return GroupCommit(record, MAX_REPORTS_PER_CALL, linger=RECORD_LINGER_SECONDS)


def service_token(secret: str) -> Callable[[], str]:
    """The receiver's token: reports are about every user's campaigns, so an admin principal marked as this
    process's (like the translator's system token); minted again shortly before it expires."""
    principal = auth.Principal(user_id=0, is_admin=True)
    return lambda: auth.service_token(principal, SERVICE, secret)


async def main(settings: Settings) -> None:
    """`herald serve bounce-receiver`: the receiver on HERALD_BIND:HERALD_BOUNCE_RECEIVER_PORT until SIGTERM."""
    secret = settings.effective_token_secret()
    return_paths = ReturnPaths(settings.effective_bounce_domain(), secret)
    channel = grpcutil.channel(settings.grpc_addr("delivery"), forward_principal=False)
    recorder = delivery_recorder(delivery_pb2_grpc.DeliveryServiceStub(channel), service_token(secret))
    receiver = BounceReceiver(return_paths, recorder, settings.bounce_feedback_address)
    server = BounceServer(receiver, settings.bind, settings.bounce_receiver_port)
    await server.start()
    log.info(
        "serving",
        service=SERVICE,
        address=f"{settings.bind}:{server.port}",
        bounce_domain=return_paths.domain,
        feedback_address=settings.bounce_feedback_address or None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Readiness on the metrics port (/readyz; services/common/health.py): the delivery service that records reports.
    health.PROCESS.add("delivery", health.grpc_check(settings, "delivery"))
    await health.PROCESS.runner(settings)(stop)
    log.info("stopping", service=SERVICE)
    await server.close()
    await channel.close()
    log.info("stopped", service=SERVICE)
