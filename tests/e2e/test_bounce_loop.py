"""The whole bounce loop over real SMTP: a campaign goes out, a report comes back, and the next campaign knows.

Each test sends a campaign to a small list of its own user (legacy campaign.create / campaign.update,
Ready with an Immediate schedule), takes one recipient's envelope sender (the signed return path) from
the mail the SmtpRecorder received, builds the report a mailbox provider would send with the standard
library's email package, and delivers it over SMTP to the bounce receiver that `herald run` started,
RCPT TO that return path. The report then travels the real path: bounce receiver → RecordBounces →
delivery's outbox → NATS → the audience service. What a legacy client sees is read over legacy HTTP
(subscriber.get, subscribers.get, campaign.get with RetrieveStatistics), and the next campaign to the
same list is checked at the SmtpRecorder.

Where a report must change nothing on the subscriber (a policy rejection, a forged return path), a hard
DSN of another recipient delivered after it is the marker: the audience consumer handles one subject's
events in order, so once the marker is Hard the earlier report was handled too.

Provider webhooks have their own end-to-end tests (test_webhooks.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from typing import Any

import aiosmtplib
import grpc
import pytest
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.return_path import PREFIX, ReturnPaths
from tests.conftest import User, eventually, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    Person,
    Received,
    audience,
    campaign_get,
    create_campaign,
    create_email,
    queued_recipients,
    send,
    wait_for_status,
)
from tests.e2e.test_bounce_receiver import deliver, return_paths

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Generous: the audience consumers start in the background and fetch about once a second.
WITHIN = 60.0
HARD, SOFT = delivery_pb2.BOUNCE_KIND_HARD, delivery_pb2.BOUNCE_KIND_SOFT
POLICY, COMPLAINT = delivery_pb2.BOUNCE_KIND_POLICY, delivery_pb2.BOUNCE_KIND_COMPLAINT

# The per-campaign figures of legacy campaign.get that bounces and complaints move.
BOUNCE_FIGURES = (
    "TotalHardBounces",
    "TotalSoftBounces",
    "HardBounceRatio",
    "SoftBounceRatio",
    "TotalSPAMComplaints",
    "TotalUnsubscriptions",
)


# --- reports, as mailbox providers send them ----------------------------------------------------------------------


def original_headers(received: Received) -> str:
    """The header section of the message as the recipient's server stored it, with the Return-Path it adds."""
    head = received.raw.split(b"\r\n\r\n", 1)[0].decode("ascii", errors="replace").replace("\r\n", "\n")
    return f"Return-Path: <{received.sender}>\n{head}\n"


def dsn(received: Received, *, status: str, diagnostic: str, action: str = "failed") -> bytes:
    """An RFC 3464 delivery status notification about `received`, sent back to its return path."""
    mta = f"mx.{received.recipient.rpartition('@')[2]}"
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{mta}>"
    report["To"] = received.sender
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(datetime.now(UTC))
    report["Message-ID"] = f"<{uuid.uuid4().hex}@{mta}>"
    report.attach(
        MIMEText(
            f"This is the mail system at host {mta}.\n\n"
            f"I'm sorry to have to inform you that your message could not\n"
            f"be delivered to one or more recipients.\n\n<{received.recipient}>: {diagnostic}\n"
        )
    )
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = f"dns; {mta}"
    per_message["Arrival-Date"] = format_datetime(datetime.now(UTC))
    per_recipient["Final-Recipient"] = f"rfc822; {received.recipient}"
    per_recipient["Original-Recipient"] = f"rfc822; {received.recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Remote-MTA"] = f"dns; {mta}"
    per_recipient["Diagnostic-Code"] = f"smtp; {diagnostic}"
    status_part = MIMEBase("message", "delivery-status")
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    report.attach(MIMEText(original_headers(received), "rfc822-headers"))
    return report.as_bytes()


def arf(received: Received) -> bytes:
    """An RFC 5965 abuse report about `received`: the feedback fields and the original's headers, which carry
    its X-Herald-Token."""
    provider = "fbl.provider.example"
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = f"Feedback Loop <abuse@{provider}>"
    report["To"] = received.sender
    report["Subject"] = "FW: " + received.header("Subject")
    report["Date"] = format_datetime(datetime.now(UTC))
    report["Message-ID"] = f"<{uuid.uuid4().hex}@{provider}>"
    report.attach(MIMEText("This is an email abuse report for an email message received from your server.\n"))
    fields = MIMEBase("message", "feedback-report")
    fields.set_payload(
        "Feedback-Type: abuse\n"
        "User-Agent: ProviderFBL/2.1\n"
        "Version: 1\n"
        f"Original-Mail-From: <{received.sender}>\n"
        f"Original-Rcpt-To: <{received.recipient}>\n"
        f"Arrival-Date: {format_datetime(datetime.now(UTC))}\n"
        "Source-IP: 192.0.2.25\n"
    )
    del fields["MIME-Version"]
    report.attach(fields)
    report.attach(MIMEText(original_headers(received), "rfc822-headers"))
    return report.as_bytes()


HARD_DSN = ("5.1.1", "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table")
SOFT_DSN = ("4.2.2", "452 4.2.2 <{rcpt}>: Mailbox full: user is over quota")
POLICY_DSN = (
    "5.7.1",
    "550 5.7.1 Message blocked: the sending host 192.0.2.25 is listed at a blocklist (bl.blocklist.example)",
)


def dsn_of(received: Received, kind: tuple[str, str]) -> bytes:
    status, diagnostic = kind
    return dsn(received, status=status, diagnostic=diagnostic.format(rcpt=received.recipient))


# --- the loop --------------------------------------------------------------------------------------------------------


@dataclass
class Loop:
    """One user's list on the Herald under test, the campaigns sent to it and what the recorder received."""

    herald: DeliveryHerald
    user: User
    domain: str
    readers: list[Person]
    list_id: int

    @classmethod
    async def start(cls, herald: DeliveryHerald, count: int) -> Loop:
        user = await herald.new_user()
        domain, readers, list_id = await audience(herald, user, count)
        return cls(herald, user, domain, readers, list_id)

    @property
    def addresses(self) -> list[str]:
        return [person.email for person in self.readers]

    async def campaign(self, name: str) -> tuple[int, dict[str, Received]]:
        """Sends a campaign to the list and waits until it is Sent; returns its id and its mail by recipient."""
        api, user = self.herald.api, self.user
        email_id = await create_email(api, user, name=name)
        campaign_id = await create_campaign(api, user, email_id, [self.list_id], name=name)
        await send(api, user, campaign_id)
        assert await wait_for_status(api, user, campaign_id, "Sent", within=60) == "Sent"
        paths = return_paths(self.herald)
        mail: dict[str, Received] = {}
        for message in self.herald.recorder.messages_to(self.domain):
            if paths.verify_address(message.sender).campaign_id == campaign_id:
                assert message.recipient not in mail, f"{message.recipient} got campaign {campaign_id} twice"
                mail[message.recipient] = message
        return campaign_id, mail

    async def subscriber(self, address: str) -> dict[str, Any]:
        """Legacy subscriber.get's SubscriberInformation, with the answer's Suppressed beside it."""
        body = await self.herald.api.call(
            "subscriber.get", self.user.api_key, ListID=self.list_id, EmailAddress=address
        )
        assert body["Success"] is True, body
        return {**body["SubscriberInformation"], "Suppressed": body["Suppressed"]}

    async def becomes(self, address: str, **expected: Any) -> dict[str, Any]:
        """The subscriber once every expected field has its value (the effects cross NATS)."""

        async def check() -> dict[str, Any] | None:
            found = await self.subscriber(address)
            return found if all(found[key] == value for key, value in expected.items()) else None

        # subscriber.get allows a user 100 calls a minute: once a second leaves room for the rest.
        found = await eventually(check, within=WITHIN, interval=1.0)
        assert found is not None, (address, expected, await self.subscriber(address))
        return found

    async def segment(self, name: str) -> list[str]:
        """The addresses of legacy subscribers.get's named segment of the list."""
        body = await self.herald.api.call(
            "subscribers.get",
            self.user.api_key,
            SubscriberListID=self.list_id,
            SubscriberSegment=name,
            RecordsPerRequest=100,
        )
        assert body["Success"] is True and body["TotalSubscribers"] == len(body["Subscribers"]), body
        return sorted(row["EmailAddress"] for row in body["Subscribers"])

    async def figures(self, campaign_id: int) -> dict[str, Any]:
        """Legacy campaign.get with RetrieveStatistics: the sending totals and the bounce figures."""
        campaign = (await campaign_get(self.herald.api, self.user, campaign_id))["Campaign"]
        return {key: campaign[key] for key in ("TotalSent", "TotalFailed", *BOUNCE_FIGURES)}

    async def statistics(self, campaign_id: int) -> delivery_pb2.CampaignStatistics:
        """The gRPC statistics, read as the campaign service reads them (BatchGetCampaignStatistics is internal)."""
        async with grpc.aio.insecure_channel(self.herald.system.grpc_target("delivery")) as channel:
            response = await delivery_pb2_grpc.DeliveryServiceStub(channel).BatchGetCampaignStatistics(
                delivery_pb2.BatchGetCampaignStatisticsRequest(
                    campaign_ids=[campaign_id], view=delivery_pb2.STATISTICS_VIEW_TOTALS
                ),
                metadata=grpc_metadata(self.herald.system, self.user.user_id, service="campaign"),
            )
        [figures] = response.statistics
        return figures

    async def bounces(self, campaign_id: int) -> dict[str, list[tuple[int, int, str, int]]]:
        """Each recipient's delivery log: (kind, source, status code, reply code) of its bounces."""
        rows = await queued_recipients(self.herald.system, self.user, campaign_id)
        return {
            row.email_address: [(b.kind, b.source, b.status_code, b.reply_code) for b in row.bounces]
            for row in rows
        }

    async def recorded(self, campaign_id: int, address: str) -> list[tuple[int, int, str, int]]:
        """The address's bounces in the campaign's log, once there is one."""

        async def check() -> list[tuple[int, int, str, int]]:
            return (await self.bounces(campaign_id)).get(address, [])

        found: list[tuple[int, int, str, int]] = await eventually(check, within=WITHIN, interval=0.25)
        assert found, f"no bounce of {address} was recorded for campaign {campaign_id}"
        return found


RECORDED = (250, "2.0.0 OK: recorded")


# --- the tests ---------------------------------------------------------------------------------------------------


async def test_a_hard_bounce_dsn_makes_the_subscriber_hard_and_suppressed_and_the_next_campaign_skips_them(
    delivery_system: DeliveryHerald,
) -> None:
    loop = await Loop.start(delivery_system, 3)
    gone, *others = loop.addresses
    first, mail = await loop.campaign("First")
    assert sorted(mail) == sorted(loop.addresses)

    # The receiving server bounced gone's message: its DSN goes back to the message's envelope sender.
    return_path = mail[gone].sender
    assert return_path.startswith(PREFIX) and return_path.endswith("@" + return_paths(loop.herald).domain)
    assert await deliver(loop.herald, dsn_of(mail[gone], HARD_DSN), return_path) == RECORDED

    found = await loop.becomes(gone, BounceType="Hard", Suppressed=True)
    assert (found["SubscriptionStatus"], found["SuppressionReason"]) == ("Subscribed", "Bounce")
    assert await loop.segment("Hard bounced") == [gone]
    assert await loop.segment("Suppressed") == [gone]
    assert await loop.segment("Soft bounced") == []
    for address in others:
        assert (await loop.subscriber(address))["BounceType"] == "Not Bounced"
    assert await loop.recorded(first, gone) == [(HARD, delivery_pb2.BOUNCE_SOURCE_DSN, "5.1.1", 550)]

    second, mail = await loop.campaign("Second")
    assert sorted(mail) == sorted(others)
    assert loop.herald.recorder.counts(loop.domain)[gone] == 1, (
        "only the first campaign mailed the bounced address"
    )

    assert await loop.figures(first) == {
        "TotalSent": 3,
        "TotalFailed": 0,
        "TotalHardBounces": 1,
        "TotalSoftBounces": 0,
        "HardBounceRatio": "33.33",
        "SoftBounceRatio": "0.00",
        "TotalSPAMComplaints": 0,
        "TotalUnsubscriptions": 0,
    }
    assert (await loop.figures(second))["TotalHardBounces"] == 0


async def test_a_soft_bounce_dsn_makes_the_subscriber_soft_until_the_next_campaign_delivers_to_them(
    delivery_system: DeliveryHerald,
) -> None:
    loop = await Loop.start(delivery_system, 3)
    full = loop.addresses[0]
    first, mail = await loop.campaign("First")

    assert await deliver(loop.herald, dsn_of(mail[full], SOFT_DSN), mail[full].sender) == RECORDED

    found = await loop.becomes(full, BounceType="Soft")
    assert (found["Suppressed"], found["SuppressionReason"], found["SubscriptionStatus"]) == (
        False,
        "",
        "Subscribed",
    )
    assert await loop.segment("Soft bounced") == [full]
    assert await loop.segment("Hard bounced") == []
    assert await loop.segment("Suppressed") == []
    assert await loop.recorded(first, full) == [(SOFT, delivery_pb2.BOUNCE_SOURCE_DSN, "4.2.2", 452)]
    assert await loop.figures(first) == {
        "TotalSent": 3,
        "TotalFailed": 0,
        "TotalHardBounces": 0,
        "TotalSoftBounces": 1,
        "HardBounceRatio": "0.00",
        "SoftBounceRatio": "33.33",
        "TotalSPAMComplaints": 0,
        "TotalUnsubscriptions": 0,
    }

    # A soft bounce keeps nobody from the next campaign, and its delivery clears the bounce state.
    _, mail = await loop.campaign("Second")
    assert sorted(mail) == sorted(loop.addresses)
    await loop.becomes(full, BounceType="Not Bounced", Suppressed=False)
    assert await loop.segment("Soft bounced") == []


async def test_a_policy_rejection_dsn_is_counted_apart_and_changes_nothing_for_the_subscriber(
    delivery_system: DeliveryHerald,
) -> None:
    loop = await Loop.start(delivery_system, 3)
    blocked, marker, fine = loop.addresses
    first, mail = await loop.campaign("First")

    assert await deliver(loop.herald, dsn_of(mail[blocked], POLICY_DSN), mail[blocked].sender) == RECORDED
    assert await loop.recorded(first, blocked) == [(POLICY, delivery_pb2.BOUNCE_SOURCE_DSN, "5.7.1", 550)]
    # The marker: once its hard bounce is applied, the policy rejection before it was handled too.
    assert await deliver(loop.herald, dsn_of(mail[marker], HARD_DSN), mail[marker].sender) == RECORDED
    await loop.becomes(marker, BounceType="Hard", Suppressed=True)

    found = await loop.subscriber(blocked)
    assert (found["BounceType"], found["Suppressed"], found["SubscriptionStatus"], found["SuppressionReason"]) == (
        "Not Bounced",
        False,
        "Subscribed",
        "",
    )
    assert await loop.segment("Suppressed") == [marker]
    assert await loop.segment("Hard bounced") == [marker]
    assert await loop.segment("Soft bounced") == []

    statistics = await loop.statistics(first)
    assert (
        statistics.total_policy_rejections,
        statistics.total_hard_bounces,
        statistics.total_soft_bounces,
        statistics.total_spam_complaints,
    ) == (1, 1, 0, 0)
    # Legacy campaign.get has no figure for policy rejections: they are neither hard nor soft bounces.
    figures = await loop.figures(first)
    assert (figures["TotalHardBounces"], figures["TotalSoftBounces"], figures["SoftBounceRatio"]) == (1, 0, "0.00")

    _, mail = await loop.campaign("Second")
    assert sorted(mail) == sorted([blocked, fine])


async def test_an_arf_complaint_unsubscribes_and_suppresses_the_subscriber_and_the_next_campaign_skips_them(
    delivery_system: DeliveryHerald,
) -> None:
    loop = await Loop.start(delivery_system, 3)
    angry, *others = loop.addresses
    first, mail = await loop.campaign("First")
    token = mail[angry].header("X-Herald-Token")
    assert token and f"X-Herald-Token: {token}" in original_headers(mail[angry])

    assert await deliver(loop.herald, arf(mail[angry]), mail[angry].sender) == RECORDED

    found = await loop.becomes(angry, SubscriptionStatus="Unsubscribed", Suppressed=True)
    assert (found["UnsubscriptionChannel"], found["SuppressionReason"], found["BounceType"]) == (
        "complaint",
        "Complaint",
        "Not Bounced",
    )
    assert found["UnsubscriptionDate"]
    assert await loop.segment("Unsubscribed") == [angry]
    assert await loop.segment("Suppressed") == [angry]
    assert await loop.segment("Hard bounced") == []
    assert await loop.recorded(first, angry) == [(COMPLAINT, delivery_pb2.BOUNCE_SOURCE_ARF, "", 0)]

    _, mail = await loop.campaign("Second")
    assert sorted(mail) == sorted(others)
    assert loop.herald.recorder.counts(loop.domain)[angry] == 1, "only the first campaign mailed the complainer"

    assert await loop.figures(first) == {
        "TotalSent": 3,
        "TotalFailed": 0,
        "TotalHardBounces": 0,
        "TotalSoftBounces": 0,
        "HardBounceRatio": "0.00",
        "SoftBounceRatio": "0.00",
        "TotalSPAMComplaints": 1,
        "TotalUnsubscriptions": 1,
    }


async def test_a_dsn_to_a_forged_return_path_is_refused_at_rcpt_and_changes_nothing(
    delivery_system: DeliveryHerald,
) -> None:
    loop = await Loop.start(delivery_system, 2)
    target, marker = loop.addresses
    first, mail = await loop.campaign("First")
    genuine = mail[target].sender
    paths = return_paths(loop.herald)
    recipient = paths.verify_address(genuine)
    local, _, domain = genuine.partition("@")
    flipped = local[:-1] + ("a" if local[-1] != "a" else "b")
    forgeries = [
        # The same campaign and recipient, signed with another secret.
        ReturnPaths(paths.domain, "not-the-token-secret").address(recipient.campaign_id, recipient.recipient_id),
        # The genuine token with one character altered.
        f"{flipped}@{domain}",
        # The genuine token at another domain.
        f"{local}@bounces.elsewhere.example",
    ]
    report = dsn_of(mail[target], HARD_DSN)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=loop.herald.system.bounce_receiver_port, start_tls=False
    ) as client:
        for forged in forgeries:
            await client.mail("")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refusal:
                await client.rcpt(forged)
            assert (refusal.value.code, refusal.value.message[:5]) == (550, "5.1.1"), forged
            await client.rset()
        # With every recipient refused there is no transaction to send the report in.
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await client.sendmail("", forgeries, report)

    # The marker: a genuine report sent after the forged ones, applied once the subscriber is Hard.
    assert await deliver(loop.herald, dsn_of(mail[marker], HARD_DSN), mail[marker].sender) == RECORDED
    await loop.becomes(marker, BounceType="Hard", Suppressed=True)

    found = await loop.subscriber(target)
    assert (found["BounceType"], found["Suppressed"], found["SubscriptionStatus"]) == (
        "Not Bounced",
        False,
        "Subscribed",
    )
    assert (await loop.bounces(first))[target] == []
    assert await loop.segment("Suppressed") == [marker]
    figures = await loop.figures(first)
    assert (figures["TotalHardBounces"], figures["HardBounceRatio"]) == (1, "50.00")
