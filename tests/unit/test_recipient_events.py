"""DeliveryEvents made in Python (bounces, opens, clicks, unsubscriptions): one message per campaign and up to
MAX_EVENTS_PER_MESSAGE events, on the campaign's subject; runs that are not campaigns announce nothing."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import timestamp_pb2
from herald.delivery.v1 import delivery_pb2

from services.common import events
from services.common.natsutil import Subjects
from services.common.outbox import UnitOfWork
from services.delivery import recipient_events, sending


def _event(owner: int, campaign: int, recipient: int) -> delivery_pb2.DeliveryEvent:
    return delivery_pb2.DeliveryEvent(
        kind=delivery_pb2.DELIVERY_EVENT_KIND_OPENED,
        owner_user_id=owner,
        campaign_id=campaign,
        recipient_id=recipient,
        email_address=f"r{recipient}@example.com",
        occur_time=timestamp_pb2.Timestamp(seconds=1_780_000_000),
    )


def test_events_are_published_per_campaign_in_messages_of_at_most_the_limit() -> None:
    work = UnitOfWork(cast(Any, None), Subjects("t1"), with_headers=True)
    limit = recipient_events.MAX_EVENTS_PER_MESSAGE
    happened = [_event(3, 7, n) for n in range(1, 2 * limit + 101)]
    happened += [_event(4, 8, 1), _event(4, 8, 2)]
    happened += [_event(3, sending.opt_in_run_id(5), 1)]
    recipient_events.publish(work, happened, key="k")
    rows = work._messages
    assert [(row["s"], len(events.DELIVERY_EVENTS.decode(cast(bytes, row["p"])).events)) for row in rows] == [
        ("t1.events.delivery.recipients.3.7", limit),
        ("t1.events.delivery.recipients.3.7", limit),
        ("t1.events.delivery.recipients.3.7", 100),
        ("t1.events.delivery.recipients.4.8", 2),
    ]
    assert [row["m"] for row in rows] == [
        "events.delivery.recipients:k:7:0",
        "events.delivery.recipients:k:7:1",
        "events.delivery.recipients:k:7:2",
        "events.delivery.recipients:k:8:0",
    ]
    decoded = [
        e.recipient_id for row in rows[:3] for e in events.DELIVERY_EVENTS.decode(cast(bytes, row["p"])).events
    ]
    assert decoded == list(range(1, 2 * limit + 101))


def test_without_events_nothing_is_published() -> None:
    work = UnitOfWork(cast(Any, None), Subjects("t1"), with_headers=True)
    recipient_events.publish(work, [])
    assert not work.publishes
