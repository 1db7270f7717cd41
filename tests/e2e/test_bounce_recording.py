"""Bounces on delivery's side end to end: send-time refusals and RecordBounces reports, counted once, in statistics and logs.

A campaign is sent to a recorder that refuses one recipient with "550 5.1.1 user unknown" and another
with "550 5.7.1 blocked by policy"; a reporter with a service token then records a DSN hard bounce of
a third recipient (twice: counted once) and a complaint of a fourth, and a fifth unsubscribes through
the message's link. What audience does with the announcements is another test's subject; here they
are read from the events stream.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
import nats
import nats.errors
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common import events
from services.common.events import EventType
from services.common.natsutil import Subjects
from tests.conftest import User, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    assert_each_received_once,
    audience,
    campaign_get,
    eventually,
    queued_recipients,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

HARD, SOFT = delivery_pb2.BOUNCE_KIND_HARD, delivery_pb2.BOUNCE_KIND_SOFT
POLICY, COMPLAINT = delivery_pb2.BOUNCE_KIND_POLICY, delivery_pb2.BOUNCE_KIND_COMPLAINT
SMTP_REPLY, DSN, ARF = (
    delivery_pb2.BOUNCE_SOURCE_SMTP_REPLY,
    delivery_pb2.BOUNCE_SOURCE_DSN,
    delivery_pb2.BOUNCE_SOURCE_ARF,
)


@pytest.fixture
def herald(delivery_system: DeliveryHerald) -> DeliveryHerald:
    return delivery_system


@pytest_asyncio.fixture(loop_scope="session")
async def user(herald: DeliveryHerald) -> User:
    return await herald.new_user()


def reporter_metadata(herald: DeliveryHerald) -> tuple[tuple[str, str], ...]:
    """A token as the bounce receiver holds it: an admin principal marked as a Herald process's."""
    return grpc_metadata(herald.system, 0, is_admin=True, service="bounce-receiver")


async def record_bounces(
    herald: DeliveryHerald, reports: list[delivery_pb2.BounceReport], metadata: tuple[tuple[str, str], ...]
) -> delivery_pb2.RecordBouncesResponse:
    async with grpc.aio.insecure_channel(herald.system.grpc_target("delivery")) as channel:
        response: delivery_pb2.RecordBouncesResponse = await delivery_pb2_grpc.DeliveryServiceStub(
            channel
        ).RecordBounces(delivery_pb2.RecordBouncesRequest(reports=reports), metadata=metadata)
        return response


async def statistics(herald: DeliveryHerald, user: User, campaign_id: int) -> delivery_pb2.CampaignStatistics:
    async with grpc.aio.insecure_channel(herald.system.grpc_target("delivery")) as channel:
        response = await delivery_pb2_grpc.DeliveryServiceStub(channel).BatchGetCampaignStatistics(
            delivery_pb2.BatchGetCampaignStatisticsRequest(
                campaign_ids=[campaign_id], view=delivery_pb2.STATISTICS_VIEW_TOTALS
            ),
            metadata=grpc_metadata(herald.system, user.user_id, service="campaign"),
        )
    [figures] = response.statistics
    return figures


async def published(herald: DeliveryHerald, event: EventType[Any], campaign_id: int) -> list[Any]:
    """Every message of `event` about the campaign in the events stream, decoded by its one decoder."""
    subjects = Subjects(herald.system.env["HERALD_NATS_NAMESPACE"])
    client = await nats.connect(herald.nats.url)
    found: list[Message] = []
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe(subjects.event(event), stream=subjects.events_stream)
        while True:
            try:
                batch = await subscription.fetch(batch=100, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for message in batch:
                found.append(event.decode(message.data))
                await message.ack()
        await subscription.unsubscribe()
    finally:
        await client.close()
    return [message for message in found if getattr(message, "campaign_id", 0) == campaign_id]


def report(campaign_id: int, recipient_id: int, key: str, **fields: Any) -> delivery_pb2.BounceReport:
    return delivery_pb2.BounceReport(campaign_id=campaign_id, recipient_id=recipient_id, event_key=key, **fields)


async def test_send_time_refusals_and_reports_are_classified_counted_once_and_logged(
    herald: DeliveryHerald, user: User
) -> None:
    domain, readers, list_id = await audience(herald, user, 6)
    ann, bob, cid, dan, eve, fay = (person.email for person in readers)
    herald.recorder.answer([ann], "550 5.1.1 user unknown")
    herald.recorder.answer([bob], "550 5.7.1 blocked by policy")
    campaign_id = await started_campaign(herald, user, [list_id], name="Bounces")
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert_each_received_once(herald.recorder, domain, [cid, dan, eve, fay])
    rows = {row.email_address: row for row in await queued_recipients(herald.system, user, campaign_id)}

    # Reports as the bounce receiver and the webhooks send them: a DSN hard bounce of cid (its status in
    # the fields, the text as the DSN quotes it), dan's complaint, and one naming no queued recipient.
    dsn = report(
        campaign_id,
        rows[cid].recipient_id,
        f"dsn:<{campaign_id}.1@mx.{domain}>:{cid}",
        status_code="5.1.1",
        diagnostic=f"smtp; 550 5.1.1 <{cid}>: Recipient address rejected: User unknown",
        source=DSN,
    )
    complaint = report(
        campaign_id,
        rows[dan].recipient_id,
        f"arf:<{campaign_id}.2@fbl.{domain}>",
        kind_hint=COMPLAINT,
        diagnostic="abuse report: spam",
        source=ARF,
    )
    stray = report(campaign_id, 9_000_000_000, f"dsn:stray:{campaign_id}", status_code="5.1.1", source=DSN)

    # Only Herald's own services (or an admin) may record bounces: a user's token is refused.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await record_bounces(herald, [dsn], grpc_metadata(herald.system, user.user_id))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    first = await record_bounces(herald, [dsn, complaint, stray], reporter_metadata(herald))
    assert (first.recorded_count, first.duplicate_count, first.unknown_count) == (2, 0, 1)
    # The same DSN again (a retried delivery to the receiver) is counted once.
    again = await record_bounces(herald, [dsn], reporter_metadata(herald))
    assert (again.recorded_count, again.duplicate_count, again.unknown_count) == (0, 1, 0)
    # A malformed report changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await record_bounces(
            herald, [report(campaign_id, rows[fay].recipient_id, "", source=DSN)], reporter_metadata(herald)
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # eve unsubscribes through the link of her message (RFC 8058 one-click).
    [message] = [m for m in herald.recorder.messages_to(domain) if m.recipient.lower() == eve.lower()]
    link = re.search(r"<(https?://[^>]+/t/u/[^>]+)>", message.header("List-Unsubscribe"))
    assert link is not None
    async with herald.api.session.post(link.group(1), data={"List-Unsubscribe": "One-Click"}) as response:
        assert response.status == 200

    async def unsubscriptions_counted() -> delivery_pb2.CampaignStatistics | None:
        figures = await statistics(herald, user, campaign_id)
        return figures if figures.total_unsubscriptions == 2 else None

    figures = await eventually(unsubscriptions_counted)
    assert figures is not None, await statistics(herald, user, campaign_id)
    assert (
        figures.total_hard_bounces,
        figures.total_soft_bounces,
        figures.total_policy_rejections,
        figures.total_spam_complaints,
    ) == (2, 0, 1, 1)

    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (6, 4, 2)
    assert {key: campaign[key] for key in campaign if "Bounce" in key or "SPAM" in key or "Unsub" in key} == {
        "TotalHardBounces": 2,
        "TotalSoftBounces": 0,
        "HardBounceRatio": "33.33",
        "SoftBounceRatio": "0.00",
        "TotalSPAMComplaints": 1,
        "TotalUnsubscriptions": 2,
    }

    # Each recipient's log shows its bounces with their codes and text.
    logs = {
        row.email_address: [(b.kind, b.source, b.status_code, b.reply_code, b.diagnostic) for b in row.bounces]
        for row in await queued_recipients(herald.system, user, campaign_id)
    }
    assert logs[ann] == [(HARD, SMTP_REPLY, "5.1.1", 550, "550 5.1.1 user unknown")]
    assert logs[bob] == [(POLICY, SMTP_REPLY, "5.7.1", 550, "550 5.7.1 blocked by policy")]
    assert logs[cid] == [(HARD, DSN, "5.1.1", 550, dsn.diagnostic)]
    assert logs[dan] == [(COMPLAINT, ARF, "", 0, "abuse report: spam")]
    assert logs[eve] == logs[fay] == []

    # Each recorded bounce was announced once, with whom it is about.
    async def announced() -> list[Any]:
        found = await published(herald, events.RECIPIENT_BOUNCED, campaign_id)
        return found if len(found) >= 4 else []

    bounced = {event.email_address: event for event in await eventually(announced)}
    assert {address: (e.kind, e.source) for address, e in bounced.items()} == {
        ann: (HARD, SMTP_REPLY),
        bob: (POLICY, SMTP_REPLY),
        cid: (HARD, DSN),
        dan: (COMPLAINT, ARF),
    }
    assert len(await published(herald, events.RECIPIENT_BOUNCED, campaign_id)) == 4
    assert all(
        (e.owner_user_id, e.list_id, e.recipient_id) == (user.user_id, list_id, rows[a].recipient_id)
        for a, e in bounced.items()
    )


async def test_a_retried_address_that_had_bounced_is_announced_as_delivered(
    herald: DeliveryHerald, user: User
) -> None:
    admin = await herald.new_admin()
    domain, readers, list_id = await audience(herald, user, 3)
    gone, blocked, fine = (person.email for person in readers)
    herald.recorder.answer([gone], "550 5.1.1 user unknown")
    herald.recorder.answer([blocked], "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org")
    campaign_id = await started_campaign(herald, user, [list_id], name="Retried")
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)

    # The relay was wrong: the admin retries, and this time both addresses are accepted.
    herald.recorder.accept([gone, blocked])
    body = await herald.api.call("admin.campaign.retryfailed", admin.api_key, CampaignID=campaign_id)
    assert body["Success"] is True, body
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert_each_received_once(herald.recorder, domain, [gone, blocked, fine])

    # Only the address whose bounce was hard or soft is announced as delivered; a policy rejection set no
    # bounce state to clear.
    async def delivered() -> list[Any]:
        return await published(herald, events.RECIPIENT_DELIVERED, campaign_id)

    [event] = await eventually(delivered)
    assert (event.email_address, event.owner_user_id, event.list_id) == (gone, user.user_id, list_id)
    assert event.HasField("deliver_time")
    # The bounce stays in the campaign's history.
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalSent"], campaign["TotalHardBounces"], campaign["HardBounceRatio"]) == (3, 1, "33.33")
