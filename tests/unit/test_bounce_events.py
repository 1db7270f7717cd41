"""Delivery's bounce and delivered events as the audience service reads them: one strict decoder each, every kind handled."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from herald.delivery.v1 import delivery_pb2

from services.audience import domain
from services.audience.events import KINDS
from services.common import events
from services.common.events import EventType, UndecodableEvent

BOUNCED = delivery_pb2.RecipientBouncedEvent(
    owner_user_id=3,
    campaign_id=7,
    recipient_id=11,
    list_id=5,
    subscriber_id=13,
    email_address="gone@example.com",
    kind=delivery_pb2.BOUNCE_KIND_HARD,
    source=delivery_pb2.BOUNCE_SOURCE_DSN,
    status_code="5.1.1",
    reply_code=550,
    diagnostic="smtp; 550 5.1.1 user unknown",
    occur_time=timestamp_pb2.Timestamp(seconds=1_780_000_000),
)
DELIVERED = delivery_pb2.RecipientDeliveredEvent(
    owner_user_id=3,
    campaign_id=8,
    recipient_id=12,
    list_id=5,
    subscriber_id=13,
    email_address="gone@example.com",
    deliver_time=timestamp_pb2.Timestamp(seconds=1_780_000_100),
)
VALID: list[tuple[EventType[Any], Message]] = [
    (events.RECIPIENT_BOUNCED, BOUNCED),
    (events.RECIPIENT_DELIVERED, DELIVERED),
]


def test_each_event_names_the_subject_of_its_proto() -> None:
    assert events.RECIPIENT_BOUNCED.subject == "events.delivery.recipient_bounced"
    assert events.RECIPIENT_DELIVERED.subject == "events.delivery.recipient_delivered"


@pytest.mark.parametrize(("event", "message"), VALID, ids=["bounced", "delivered"])
def test_what_delivery_encodes_audience_decodes_unchanged(event: EventType[Any], message: Message) -> None:
    assert event.decode(event.encode(message)) == message


@pytest.mark.parametrize(("event", "message"), VALID, ids=["bounced", "delivered"])
def test_a_recipient_from_no_list_is_still_an_event(event: EventType[Any], message: Message) -> None:
    body = {**json.loads(event.encode(message)), "list_id": "0"}
    decoded: Any = event.decode(json.dumps(body).encode())
    assert decoded.list_id == 0


BROKEN: list[tuple[EventType[Any], dict[str, Any]]] = [
    (events.RECIPIENT_BOUNCED, {"owner_user_id": 0}),
    (events.RECIPIENT_BOUNCED, {"campaign_id": True}),
    (events.RECIPIENT_BOUNCED, {"recipient_id": -1}),
    (events.RECIPIENT_BOUNCED, {"list_id": -5}),
    (events.RECIPIENT_BOUNCED, {"email_address": ""}),
    (events.RECIPIENT_BOUNCED, {"kind": "BOUNCE_KIND_UNSPECIFIED"}),
    (events.RECIPIENT_BOUNCED, {"kind": "hard"}),
    (events.RECIPIENT_BOUNCED, {"kind": None}),
    (events.RECIPIENT_DELIVERED, {"owner_user_id": "three"}),
    (events.RECIPIENT_DELIVERED, {"subscriber_id": -1}),
    (events.RECIPIENT_DELIVERED, {"email_address": None}),
    (events.RECIPIENT_DELIVERED, {"campaign_id": 1.5}),
]


@pytest.mark.parametrize(("event", "change"), BROKEN, ids=[f"{e.subject} {c}" for e, c in BROKEN])
def test_a_message_that_breaks_its_rules_does_not_decode(event: EventType[Any], change: dict[str, Any]) -> None:
    message = BOUNCED if event is events.RECIPIENT_BOUNCED else DELIVERED
    body = {**json.loads(event.encode(message)), **change}
    with pytest.raises(UndecodableEvent):
        event.decode(json.dumps(body).encode())


def test_every_bounce_kind_the_protos_have_has_an_effect() -> None:
    kinds = set(delivery_pb2.BounceKind.values()) - {delivery_pb2.BOUNCE_KIND_UNSPECIFIED}
    assert set(KINDS) == kinds
    assert set(KINDS.values()) == set(domain.BounceKind)


def test_a_bounce_target_compares_addresses_case_insensitively() -> None:
    assert domain.BounceTarget.of(3, " Gone@Example.COM ", 5) == domain.BounceTarget(3, "gone@example.com", 5)
    assert domain.BounceTarget.of(3, "gone@example.com", -1).list_id == 0


@pytest.mark.parametrize(("configured", "limit"), [(3, 3), (1, 1), (0, 1), (-2, 1)])
def test_the_soft_bounce_limit_is_at_least_one_campaign(configured: int, limit: int) -> None:
    assert domain.soft_bounce_limit(configured) == limit
