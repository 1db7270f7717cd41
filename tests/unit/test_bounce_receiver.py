"""The bounce receiver over real SMTP on loopback, with its RecordBounces calls captured in the test: who is accepted at
RCPT TO, what is reported for a DSN, a complaint and an auto-reply, the event keys, the group commit, and 451 when delivery
cannot record."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import aiosmtplib
import grpc
import pytest
import pytest_asyncio
from herald.delivery.v1 import delivery_pb2

from services.common import auth
from services.common.return_path import ReturnPaths
from services.delivery.bounce_receiver import BounceReceiver, BounceServer, service_token
from services.delivery.group_commit import GroupCommit

SECRET = "unit-test-secret-of-thirty-two-bytes!"
DOMAIN = "bounces.herald.test"
FEEDBACK = "fbl@bounces.herald.test"
PATHS = ReturnPaths(DOMAIN, SECRET)


@dataclass
class Delivery:
    """Stands in for DeliveryService.RecordBounces: keeps each call's reports, or fails while `down`."""

    calls: list[list[delivery_pb2.BounceReport]] = field(default_factory=list)
    down: bool = False
    delay: float = 0.0

    async def record(self, reports: Sequence[delivery_pb2.BounceReport]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "delivery is down"
            )
        self.calls.append(list(reports))

    @property
    def reports(self) -> list[delivery_pb2.BounceReport]:
        return [report for call in self.calls for report in call]


@dataclass
class Running:
    delivery: Delivery
    port: int

    async def send(self, raw: bytes, *recipients: str, sender: str = "") -> None:
        """Sends as a bounce is sent: from the null reverse path (MAIL FROM:<>) unless `sender` is given."""
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, start_tls=False) as client:
            await client.sendmail(sender, list(recipients), raw)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Running]:
    delivery = Delivery()
    server = BounceServer(BounceReceiver(PATHS, GroupCommit(delivery.record, 1000), FEEDBACK), "127.0.0.1", 0)
    port = await server.start()
    yield Running(delivery, port)
    await server.close()


def block(fields: dict[str, str]) -> Message:
    fields_block = Message()
    for name, value in fields.items():
        fields_block[name] = value
    return fields_block


def dsn(message_id: str = "<dsn-1@mx.example.org>", status: str = "5.1.1") -> bytes:
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.org"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = message_id
    report.attach(MIMEText("Your message could not be delivered."))
    fields = MIMEBase("message", "delivery-status")
    fields.set_payload(
        [
            block({"Reporting-MTA": "dns; mx.example.org"}),
            block(
                {
                    "Final-Recipient": "rfc822; reader@example.org",
                    "Action": "failed",
                    "Status": status,
                    "Diagnostic-Code": f"smtp; 550 {status} User unknown",
                }
            ),
        ]
    )
    report.attach(fields)
    return report.as_bytes()


def arf(token: str) -> bytes:
    original = EmailMessage()
    original["From"] = "news@shop.example"
    original["Subject"] = "Spring sale"
    original["X-Herald-Token"] = token
    original.set_content("sale")
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "feedback@provider.example"
    report["Message-ID"] = "<arf-1@provider.example>"
    report.attach(MIMEText("An abuse report."))
    fields = MIMEBase("message", "feedback-report")
    fields.set_payload("Feedback-Type: abuse\nUser-Agent: ProviderFBL/1.0\nVersion: 1\n")
    del fields["MIME-Version"]
    report.attach(fields)
    report.attach(MIMEMessage(original))
    return report.as_bytes()


async def test_a_dsn_at_a_return_path_is_recorded_for_the_recipient_that_return_path_names(
    receiver: Running,
) -> None:
    await receiver.send(dsn(), PATHS.address(7, 21).upper())  # mail systems may change the case
    [report] = receiver.delivery.reports
    assert (report.campaign_id, report.recipient_id) == (7, 21)
    assert (report.status_code, report.reply_code, report.diagnostic) == ("5.1.1", 550, "550 5.1.1 User unknown")
    assert report.source == delivery_pb2.BOUNCE_SOURCE_DSN
    assert report.kind_hint == delivery_pb2.BOUNCE_KIND_UNSPECIFIED  # the classifier judges
    assert report.event_key.startswith("smtp:") and report.event_key.endswith(":7:21")


async def test_forged_and_foreign_recipients_are_refused_at_rcpt(receiver: Running) -> None:
    address = PATHS.address(7, 21)
    forged = address.replace(address[2:6], "aaaa" if address[2:6] != "aaaa" else "bbbb")
    for refused in (
        forged,
        ReturnPaths(DOMAIN, "another-secret").address(7, 21),
        address.replace(DOMAIN, "elsewhere.example"),
        f"postmaster@{DOMAIN}",
    ):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refusal:
            await receiver.send(dsn(), refused)
        assert refusal.value.recipients[0].code == 550 and "5.1.1" in refusal.value.recipients[0].message
    assert receiver.delivery.reports == []


async def test_the_same_dsn_twice_has_the_same_event_key_and_another_dsn_another(receiver: Running) -> None:
    address = PATHS.address(7, 21)
    await receiver.send(dsn(), address)
    await receiver.send(dsn(), address)
    await receiver.send(dsn(message_id="<dsn-2@mx.example.org>"), address)
    await receiver.send(dsn(), PATHS.address(7, 22))
    keys = [report.event_key for report in receiver.delivery.reports]
    assert keys[0] == keys[1] and len(set(keys)) == 3


async def test_a_message_without_message_id_is_keyed_by_its_content(receiver: Running) -> None:
    raw = dsn().replace(b"Message-ID: <dsn-1@mx.example.org>\n", b"")
    await receiver.send(raw, PATHS.address(7, 21))
    await receiver.send(raw, PATHS.address(7, 21))
    await receiver.send(raw.replace(b"User unknown", b"No such user"), PATHS.address(7, 21))
    keys = [report.event_key for report in receiver.delivery.reports]
    assert keys[0] == keys[1] != keys[2]


async def test_while_delivery_cannot_record_the_sender_is_told_to_try_again(receiver: Running) -> None:
    receiver.delivery.down = True
    with pytest.raises(aiosmtplib.SMTPDataError) as refusal:
        await receiver.send(dsn(), PATHS.address(7, 21))
    assert refusal.value.code == 451
    receiver.delivery.down = False
    await receiver.send(dsn(), PATHS.address(7, 21))
    assert len(receiver.delivery.reports) == 1


async def test_an_auto_reply_is_accepted_and_records_nothing(receiver: Running) -> None:
    message = EmailMessage()
    message["From"] = "reader@example.org"
    message["Subject"] = "Out of office"
    message.set_content("I am away until Monday.")
    await receiver.send(message.as_bytes(), PATHS.address(7, 21), sender="reader@example.org")
    assert receiver.delivery.calls == []


async def test_a_complaint_at_the_feedback_address_names_the_recipient_of_the_included_original(
    receiver: Running,
) -> None:
    await receiver.send(arf(PATHS.token(7, 21)), FEEDBACK)
    [report] = receiver.delivery.reports
    assert (report.campaign_id, report.recipient_id) == (7, 21)
    assert (
        report.kind_hint == delivery_pb2.BOUNCE_KIND_COMPLAINT and report.source == delivery_pb2.BOUNCE_SOURCE_ARF
    )


async def test_at_the_feedback_address_a_forged_original_or_a_dsn_records_nothing(receiver: Running) -> None:
    forged = PATHS.token(7, 21)[:-4] + ("aaaa" if not PATHS.token(7, 21).endswith("aaaa") else "bbbb")
    await receiver.send(arf(forged), FEEDBACK)
    await receiver.send(arf(ReturnPaths(DOMAIN, "another-secret").token(7, 21)), FEEDBACK)
    await receiver.send(dsn(), FEEDBACK)  # a DSN's recipient comes from its return path only
    assert receiver.delivery.calls == []


async def test_a_complaint_at_a_return_path_is_about_that_return_paths_recipient(receiver: Running) -> None:
    await receiver.send(arf(PATHS.token(7, 99)), PATHS.address(7, 21))
    [report] = receiver.delivery.reports
    assert (report.recipient_id, report.kind_hint) == (21, delivery_pb2.BOUNCE_KIND_COMPLAINT)


async def test_concurrent_sessions_share_record_calls(receiver: Running) -> None:
    receiver.delivery.delay = 0.05
    await asyncio.gather(*(receiver.send(dsn(f"<dsn-{n}@mx>"), PATHS.address(7, n)) for n in range(1, 41)))
    assert len(receiver.delivery.reports) == 40
    assert len(receiver.delivery.calls) < 40


async def test_with_a_linger_reports_handed_in_one_after_another_share_a_call() -> None:
    calls: list[list[int]] = []

    async def write(items: Sequence[int]) -> None:
        calls.append(list(items))

    commit: GroupCommit[int] = GroupCommit(write, 1000, linger=0.2)

    async def later(n: int) -> None:
        await asyncio.sleep(n * 0.01)
        await commit.store(n)

    await asyncio.gather(*(later(n) for n in range(5)))
    assert calls == [[0, 1, 2, 3, 4]]


async def test_a_full_group_does_not_wait_for_the_linger() -> None:
    calls: list[list[int]] = []

    async def write(items: Sequence[int]) -> None:
        calls.append(list(items))

    commit: GroupCommit[int] = GroupCommit(write, 3, linger=60)

    async def later(n: int) -> None:
        await asyncio.sleep(n * 0.01)
        await commit.store(n)

    await asyncio.wait_for(asyncio.gather(*(later(n) for n in range(3))), timeout=5)
    assert calls == [[0, 1, 2]]


async def test_a_message_over_the_size_limit_is_refused(
    receiver: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 11_000
    with pytest.raises(aiosmtplib.SMTPResponseException) as refusal:
        await receiver.send(huge, PATHS.address(7, 21))
    assert refusal.value.code == 552


def test_the_receivers_token_is_an_admin_token_marked_as_the_receivers() -> None:
    principal = auth.verify_token(service_token(SECRET)(), SECRET)
    assert principal.is_admin and principal.service == "bounce-receiver" and principal.user_id == 0


def test_herald_serves_the_bounce_receiver_and_herald_run_starts_it() -> None:
    from services import cli, supervisor
    from services.delivery import bounce_receiver

    assert "bounce-receiver" in cli.SERVABLE
    assert importlib.import_module(cli.ENTRY_MODULES["bounce-receiver"]).main is bounce_receiver.main
    assert "bounce-receiver" in supervisor.PROCESSES
