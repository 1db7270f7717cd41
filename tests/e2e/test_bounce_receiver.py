"""Return paths and the bounce receiver, over real SMTP: a campaign goes out from signed per-recipient return paths, and a
DSN (or an ARF complaint) delivered to one of them reaches DeliveryService.RecordBounces through `herald serve
bounce-receiver`, which `herald run` started.

The tests that read recorded bounces back (ListQueuedRecipients' `bounces`, the statistics' bounce totals) need
delivery's RecordBounces and the classifier (services/common/bounces.py), which the delivery core implements.
"""

from __future__ import annotations

from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import aiosmtplib
import grpc
import pytest
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.return_path import BouncedRecipient, ReturnPaths, bounce_domain
from tests.conftest import User, grpc_metadata
from tests.e2e.delivery_helpers import (
    SENDER,
    DeliveryHerald,
    Received,
    audience,
    eventually,
    queued_recipients,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


def return_paths(herald: DeliveryHerald) -> ReturnPaths:
    """The return paths of the Herald under test, as its processes derive them from its settings."""
    env = herald.system.env
    public_url = env.get("HERALD_PUBLIC_URL") or f"http://127.0.0.1:{env['HERALD_HTTP_PORT']}"
    return ReturnPaths(bounce_domain(env.get("HERALD_BOUNCE_DOMAIN", ""), public_url), env["HERALD_TOKEN_SECRET"])


async def sent_campaign(herald: DeliveryHerald, user: User, count: int = 2) -> tuple[int, list[Received]]:
    """A campaign sent to `count` new subscribers; returns its id and the messages the SMTP server received."""
    domain, _, list_id = await audience(herald, user, count)
    campaign_id = await started_campaign(herald, user, [list_id], name="Bounces")
    assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=30) == "Sent"
    received = herald.recorder.messages_to(domain)
    assert len(received) == count
    return campaign_id, received


def dsn_for(received: Received, *, status: str = "5.1.1", message_id: str = "<dsn-e2e@mx.example.org>") -> bytes:
    """The DSN a receiving server sends back for `received`: to its envelope sender, with its headers included."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.org>"
    report["To"] = received.sender
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = message_id
    report.attach(
        MIMEText(
            f"I'm sorry to have to inform you that your message could not be delivered to {received.recipient}."
        )
    )
    status_part = MIMEBase("message", "delivery-status")
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; mx.example.org"
    per_recipient["Final-Recipient"] = f"rfc822; {received.recipient}"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = (
        f"smtp; 550 {status} <{received.recipient}>: Recipient address rejected: User unknown"
    )
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    head = received.raw.split(b"\r\n\r\n", 1)[0].decode("ascii", errors="replace").replace("\r\n", "\n")
    report.attach(MIMEText(f"Return-Path: <{received.sender}>\n{head}\n", "rfc822-headers"))
    return report.as_bytes()


def arf_for(received: Received) -> bytes:
    """An ARF abuse report about `received`, including the whole original as the provider saw it."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "Feedback Loop <fbl@provider.example>"
    report["Subject"] = "Complaint"
    report["Message-ID"] = "<arf-e2e@provider.example>"
    report.attach(MIMEText("This is an abuse report for a message you sent."))
    fields = MIMEBase("message", "feedback-report")
    fields.set_payload(
        f"Feedback-Type: abuse\nUser-Agent: ProviderFBL/1.0\nVersion: 1\nOriginal-Mail-From: <{received.sender}>\n"
    )
    del fields["MIME-Version"]
    report.attach(fields)
    report.attach(MIMEMessage(received.message))
    return report.as_bytes()


async def deliver(herald: DeliveryHerald, raw: bytes, recipient: str) -> tuple[int, str]:
    """Delivers a report to the bounce receiver as a mail server does (MAIL FROM:<>); returns the DATA reply."""
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=herald.system.bounce_receiver_port, start_tls=False
    ) as client:
        await client.mail("")
        await client.rcpt(recipient)
        reply = await client.data(raw)
    return reply.code, reply.message


async def bounces_of(herald: DeliveryHerald, user: User, campaign_id: int) -> dict[str, list[delivery_pb2.Bounce]]:
    rows = await queued_recipients(herald.system, user, campaign_id)
    return {row.email_address: list(row.bounces) for row in rows}


async def statistics_of(herald: DeliveryHerald, user: User, campaign_id: int) -> delivery_pb2.CampaignStatistics:
    async with grpc.aio.insecure_channel(herald.system.grpc_target("delivery")) as channel:
        response = await delivery_pb2_grpc.DeliveryServiceStub(channel).BatchGetCampaignStatistics(
            delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=[campaign_id]),
            metadata=grpc_metadata(herald.system, user.user_id, service="campaign"),
        )
    return response.statistics[0]


async def test_every_message_goes_out_from_its_recipients_signed_return_path_and_from_the_users_address(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    campaign_id, received = await sent_campaign(herald, user, count=3)
    recipient_ids = {
        row.email_address: row.recipient_id for row in await queued_recipients(herald.system, user, campaign_id)
    }
    paths = return_paths(herald)
    for message in received:
        assert message.sender.startswith("b-") and message.sender.endswith(f"@{paths.domain}")
        assert paths.verify_address(message.sender) == BouncedRecipient(
            campaign_id, recipient_ids[message.recipient]
        )
        assert message.header("From") == f"Herald News <{SENDER}>"
        assert message.sender == f"b-{message.header('X-Herald-Token')}@{paths.domain}"
    assert len({message.sender for message in received}) == 3


async def test_a_forged_return_path_is_refused_at_rcpt(delivery_system: DeliveryHerald) -> None:
    herald = delivery_system
    paths = return_paths(herald)
    genuine = paths.address(1, 1)
    flipped = genuine[:5] + ("a" if genuine[5] != "a" else "b") + genuine[6:]
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=herald.system.bounce_receiver_port, start_tls=False
    ) as client:
        await client.mail("")
        for forged in (
            flipped,
            ReturnPaths(paths.domain, "not-the-secret").address(1, 1),
            f"postmaster@{paths.domain}",
        ):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refusal:
                await client.rcpt(forged)
            assert refusal.value.code == 550 and "5.1.1" in refusal.value.message
        reply = await client.rcpt(genuine)
        assert reply.code == 250


# --- these need delivery's RecordBounces (the delivery core) ------------------------------------------------------


async def test_a_dsn_delivered_to_a_return_path_is_recorded_for_that_recipient_once(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    campaign_id, received = await sent_campaign(herald, user, count=2)
    bounced, delivered = received
    report = dsn_for(bounced)

    assert await deliver(herald, report, bounced.sender) == (250, "2.0.0 OK: recorded")
    # The same DSN again (a server that did not see the first answer): accepted, counted once.
    assert await deliver(herald, report, bounced.sender) == (250, "2.0.0 OK: recorded")

    async def recorded() -> dict[str, list[delivery_pb2.Bounce]] | None:
        found = await bounces_of(herald, user, campaign_id)
        return found if found.get(bounced.recipient) else None

    bounces = await eventually(recorded, within=10)
    assert bounces is not None, "the bounce was not recorded"
    [bounce] = bounces[bounced.recipient]
    assert (bounce.status_code, bounce.reply_code) == ("5.1.1", 550)
    assert bounce.source == delivery_pb2.BOUNCE_SOURCE_DSN and bounce.kind == delivery_pb2.BOUNCE_KIND_HARD
    assert "User unknown" in bounce.diagnostic
    assert bounces[delivered.recipient] == []
    statistics = await statistics_of(herald, user, campaign_id)
    assert (statistics.total_hard_bounces, statistics.total_soft_bounces) == (1, 0)


async def test_an_arf_complaint_delivered_to_a_return_path_is_recorded_as_a_complaint(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    campaign_id, received = await sent_campaign(herald, user, count=1)
    [message] = received
    assert await deliver(herald, arf_for(message), message.sender) == (250, "2.0.0 OK: recorded")

    async def recorded() -> list[delivery_pb2.Bounce]:
        return (await bounces_of(herald, user, campaign_id)).get(message.recipient, [])

    bounces = await eventually(recorded, within=10)
    assert [(b.kind, b.source) for b in bounces] == [
        (delivery_pb2.BOUNCE_KIND_COMPLAINT, delivery_pb2.BOUNCE_SOURCE_ARF)
    ]
    assert (await statistics_of(herald, user, campaign_id)).total_spam_complaints == 1


async def test_an_auto_reply_to_a_return_path_is_accepted_and_records_nothing(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    campaign_id, [message] = await sent_campaign(herald, user, count=1)
    reply = EmailMessage()
    reply["From"] = message.recipient
    reply["To"] = message.sender
    reply["Subject"] = "Out of office"
    reply.set_content("I am away until Monday.")
    assert await deliver(herald, reply.as_bytes(), message.sender) == (250, "2.0.0 OK: nothing to record")
    assert (await bounces_of(herald, user, campaign_id))[message.recipient] == []
