"""Herald's messages on NATS: one subject per message type from the protos, proto3 JSON on the wire, one strict decoder each."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf.message import Message
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import campaign_pb2
from herald.delivery.v1 import delivery_pb2

from services.common import events
from services.common.event_signing import EventSigner
from services.common.events import EventType, UndecodableEvent
from services.common.natsutil import Subjects

SIGNER = EventSigner("s" * 48, events.CAMPAIGN_SEND_REQUESTED.subject, "herald")

SEND_REQUEST = campaign_pb2.CampaignSendRequestedEvent(
    campaign_id=7,
    owner_user_id=3,
    name="Grüße",
    email_id=11,
    variations=[campaign_pb2.Variation(email_id=21, weight=60), campaign_pb2.Variation(email_id=22, weight=40)],
    targeting=campaign_pb2.Targeting(included=[campaign_pb2.RecipientSource(list_id=5)]),
    occurrence=1,
    split_test=campaign_pb2.SplitTest(
        test_size_percent=20, test_duration_hours=6, winner=campaign_pb2.WINNER_HIGHEST_OPEN_RATE
    ),
)
SEND_REQUEST.targeting.rules_bundle.update({"operator": "and", "criteria": [{"list_id": 5, "rules": []}]})

# One valid message of each type.
VALID: list[tuple[EventType[Any], Message]] = [
    (
        events.CAMPAIGN_STATUS_CHANGED,
        campaign_pb2.CampaignStatusChangedEvent(
            campaign_id=7,
            owner_user_id=3,
            status=campaign_pb2.CAMPAIGN_STATUS_PAUSED,
            previous_status=campaign_pb2.CAMPAIGN_STATUS_SENDING,
        ),
    ),
    (events.CAMPAIGN_DELETED, campaign_pb2.CampaignDeletedEvent(owner_user_id=3, campaign_ids=[5, 6])),
    (events.CAMPAIGN_SEND_REQUESTED, SEND_REQUEST),
    (
        events.CAMPAIGN_FINISHED,
        delivery_pb2.CampaignFinishedEvent(
            campaign_id=7,
            owner_user_id=3,
            outcome=delivery_pb2.SEND_OUTCOME_FAILED,
            reason="nobody to send to",
            finish_time={"seconds": 1_780_000_000, "nanos": 123_456_000},
            occurrence=2,
        ),
    ),
    (events.DELIVERY_BATCH, delivery_pb2.DeliveryBatch(campaign_id=7, batch_id=2, generation=1)),
    (
        events.RECIPIENT_BOUNCED,
        delivery_pb2.RecipientBouncedEvent(
            owner_user_id=3,
            campaign_id=7,
            recipient_id=11,
            list_id=5,
            subscriber_id=42,
            email_address="ann@example.com",
            kind=delivery_pb2.BOUNCE_KIND_HARD,
            source=delivery_pb2.BOUNCE_SOURCE_SMTP_REPLY,
            status_code="5.1.1",
            reply_code=550,
            diagnostic="550 5.1.1 user unknown",
            occur_time={"seconds": 1_780_000_000},
        ),
    ),
    (
        events.RECIPIENT_DELIVERED,
        delivery_pb2.RecipientDeliveredEvent(
            owner_user_id=3,
            campaign_id=7,
            recipient_id=11,
            subscriber_id=42,
            email_address="ann@example.com",
            deliver_time={"seconds": 1_780_000_000},
        ),
    ),
    (
        events.OPT_IN_CONFIRMATIONS_REQUESTED,
        audience_pb2.OptInConfirmationsRequestedEvent(
            owner_user_id=3,
            list_id=5,
            email_id=21,
            import_id=9,
            request_time={"seconds": 1_780_000_000},
            recipients=[
                audience_pb2.OptInConfirmationsRequestedEvent.Recipient(
                    subscriber_id=42, email_address="ann@example.com", first_name="Ann"
                ),
                audience_pb2.OptInConfirmationsRequestedEvent.Recipient(
                    subscriber_id=43, email_address="bo@example.com"
                ),
            ],
        ),
    ),
    (
        events.DELIVERY_EVENTS,
        delivery_pb2.DeliveryEvents(
            events=[
                delivery_pb2.DeliveryEvent(
                    kind=delivery_pb2.DELIVERY_EVENT_KIND_SENT,
                    owner_user_id=3,
                    campaign_id=7,
                    recipient_id=11,
                    subscriber_id=42,
                    email_address="ann@example.com",
                    occur_time={"seconds": 1_780_000_000, "nanos": 5_000},
                ),
                delivery_pb2.DeliveryEvent(
                    kind=delivery_pb2.DELIVERY_EVENT_KIND_CLICKED,
                    owner_user_id=3,
                    campaign_id=7,
                    recipient_id=12,
                    email_address="bo@example.com",
                    occur_time={"seconds": 1_780_000_001},
                    detail="https://example.com/a",
                ),
            ]
        ),
    ),
]
IDS = [event.subject for event, _ in VALID]


def encoded(event: EventType[Any], message: Message) -> bytes:
    return event.encode(message, SIGNER if event.signed else None)


def document(event: EventType[Any], message: Message) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(encoded(event, message))
    return body


def decode(event: EventType[Any], body: dict[str, Any]) -> Message:
    """The message `body` encodes (signed again after a change, when its type is signed), without its signature."""
    payload = json.dumps(body).encode()
    if event.signed:
        payload = SIGNER.signed(payload)
    return unsigned(event.decode(payload, SIGNER if event.signed else None))


def unsigned(message: Message) -> Message:
    if "signature" in message.DESCRIPTOR.fields_by_name:
        message.ClearField("signature")
    return message


def test_every_message_type_names_its_own_subject_in_the_protos() -> None:
    subjects = [event.subject for event, _ in VALID]
    assert subjects == [
        "events.campaign.status_changed",
        "events.campaign.deleted",
        "events.campaign.send_requested",
        "events.delivery.campaign_finished",
        "delivery.batches",
        "events.delivery.recipient_bounced",
        "events.delivery.recipient_delivered",
        "events.audience.opt_in_confirmations_requested",
        "events.delivery.recipients",
    ]
    assert Subjects("herald").event(events.CAMPAIGN_DELETED) == "herald.events.campaign.deleted"
    assert Subjects("t1").event(events.DELIVERY_BATCH) == "t1.delivery.batches"


@pytest.mark.parametrize(("event", "message"), VALID, ids=IDS)
def test_what_a_producer_encodes_its_consumers_decode_unchanged(event: EventType[Any], message: Message) -> None:
    assert unsigned(event.decode(encoded(event, message), SIGNER if event.signed else None)) == message


def test_the_wire_is_proto3_json_with_the_protos_field_names() -> None:
    body = document(events.CAMPAIGN_STATUS_CHANGED, VALID[0][1])
    assert body == {
        "campaign_id": "7",
        "owner_user_id": "3",
        "status": "CAMPAIGN_STATUS_PAUSED",
        "previous_status": "CAMPAIGN_STATUS_SENDING",
    }
    finished = document(events.CAMPAIGN_FINISHED, VALID[3][1])
    assert (
        finished["finish_time"] == "2026-05-28T20:26:40.123456Z" and finished["outcome"] == "SEND_OUTCOME_FAILED"
    )


@pytest.mark.parametrize(
    ("campaign_ids", "accepted"),
    [
        ([5, 6], True),
        # proto3 JSON writes 64-bit integers as strings and reads either form.
        (["5", "6"], True),
        ([True], False),
        (["5x"], False),
        ([5.5], False),
        ("5,6", False),
        ([], False),
        ([0], False),
        ([-5], False),
    ],
)
def test_campaign_deleted_has_one_reading_for_every_consumer(campaign_ids: object, accepted: bool) -> None:
    payload = json.dumps({"owner_user_id": 3, "campaign_ids": campaign_ids}).encode()
    if accepted:
        assert list(events.CAMPAIGN_DELETED.decode(payload).campaign_ids) == [5, 6]
    else:
        with pytest.raises(UndecodableEvent):
            events.CAMPAIGN_DELETED.decode(payload)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe\x00", b"[" * 100_000])
@pytest.mark.parametrize(("event", "message"), VALID, ids=IDS)
def test_what_is_not_a_json_object_does_not_decode(
    event: EventType[Any], message: Message, payload: bytes
) -> None:
    with pytest.raises(UndecodableEvent):
        event.decode(payload, SIGNER if event.signed else None)


# Changes that make a valid message of each type invalid: wrong JSON types, missing or out-of-range
# values, enum names the protos do not have.
BROKEN: list[tuple[EventType[Any], dict[str, Any]]] = [
    (events.CAMPAIGN_STATUS_CHANGED, {"campaign_id": True}),
    (events.CAMPAIGN_STATUS_CHANGED, {"campaign_id": None}),
    (events.CAMPAIGN_STATUS_CHANGED, {"owner_user_id": 0}),
    (events.CAMPAIGN_STATUS_CHANGED, {"status": "Paused"}),
    (events.CAMPAIGN_STATUS_CHANGED, {"status": "CAMPAIGN_STATUS_UNSPECIFIED"}),
    (events.CAMPAIGN_STATUS_CHANGED, {"previous_status": 99}),
    (events.CAMPAIGN_DELETED, {"owner_user_id": "three"}),
    (events.CAMPAIGN_SEND_REQUESTED, {"occurrence": 0}),
    (events.CAMPAIGN_SEND_REQUESTED, {"occurrence": 1.5}),
    (events.CAMPAIGN_SEND_REQUESTED, {"email_id": -1}),
    (events.CAMPAIGN_SEND_REQUESTED, {"resume": "yes"}),
    (events.CAMPAIGN_SEND_REQUESTED, {"variations": [{"email_id": 21, "weight": 0}]}),
    (events.CAMPAIGN_SEND_REQUESTED, {"targeting": {"included": [{"list_id": True}]}}),
    (events.CAMPAIGN_SEND_REQUESTED, {"targeting": "list 5"}),
    (
        events.CAMPAIGN_SEND_REQUESTED,
        {"split_test": {"test_size_percent": 0, "winner": "WINNER_HIGHEST_OPEN_RATE"}},
    ),
    (
        events.CAMPAIGN_SEND_REQUESTED,
        {"split_test": {"test_size_percent": 101, "winner": "WINNER_HIGHEST_OPEN_RATE"}},
    ),
    (events.CAMPAIGN_SEND_REQUESTED, {"split_test": {"test_size_percent": 20, "winner": "highest_open_rate"}}),
    (events.CAMPAIGN_SEND_REQUESTED, {"split_test": "20%"}),
    (events.CAMPAIGN_SEND_REQUESTED, {"non_openers_of_campaign_id": -4}),
    (events.CAMPAIGN_SEND_REQUESTED, {"non_openers_of_campaign_id": "7"}),
    (events.CAMPAIGN_SEND_REQUESTED, {"non_openers_of_campaign_id": "x"}),
    (events.CAMPAIGN_FINISHED, {"outcome": "Sent"}),
    (events.CAMPAIGN_FINISHED, {"finish_time": None}),
    (events.CAMPAIGN_FINISHED, {"finish_time": "yesterday"}),
    (events.CAMPAIGN_FINISHED, {"occurrence": 0}),
    (events.DELIVERY_BATCH, {"generation": 0}),
    (events.DELIVERY_BATCH, {"batch_id": "1.5"}),
    (events.RECIPIENT_BOUNCED, {"kind": "BOUNCE_KIND_UNSPECIFIED"}),
    (events.RECIPIENT_BOUNCED, {"kind": "hard"}),
    (events.RECIPIENT_BOUNCED, {"source": "BOUNCE_SOURCE_UNSPECIFIED"}),
    (events.RECIPIENT_BOUNCED, {"subscriber_id": -1}),
    (events.RECIPIENT_BOUNCED, {"email_address": "  "}),
    (events.RECIPIENT_BOUNCED, {"list_id": -1}),
    (events.RECIPIENT_BOUNCED, {"email_address": ""}),
    (events.RECIPIENT_BOUNCED, {"reply_code": 700}),
    (events.RECIPIENT_BOUNCED, {"occur_time": None}),
    (events.RECIPIENT_BOUNCED, {"recipient_id": True}),
    (events.RECIPIENT_DELIVERED, {"owner_user_id": 0}),
    (events.RECIPIENT_DELIVERED, {"deliver_time": None}),
    (events.RECIPIENT_DELIVERED, {"email_address": None}),
    (events.OPT_IN_CONFIRMATIONS_REQUESTED, {"recipients": []}),
    (events.OPT_IN_CONFIRMATIONS_REQUESTED, {"recipients": [{"subscriber_id": 0, "email_address": "a@x.io"}]}),
    (events.OPT_IN_CONFIRMATIONS_REQUESTED, {"recipients": [{"subscriber_id": 4, "email_address": " "}]}),
    (events.OPT_IN_CONFIRMATIONS_REQUESTED, {"email_id": 0}),
    (events.OPT_IN_CONFIRMATIONS_REQUESTED, {"request_time": None}),
    (events.DELIVERY_EVENTS, {"events": []}),
    (events.DELIVERY_EVENTS, {"events": [{"kind": "DELIVERY_EVENT_KIND_SENT", "owner_user_id": "3"}]}),
    (
        events.DELIVERY_EVENTS,
        {
            "events": [
                {
                    "kind": "DELIVERY_EVENT_KIND_UNSPECIFIED",
                    "owner_user_id": "3",
                    "campaign_id": "7",
                    "recipient_id": "1",
                    "occur_time": "2026-12-06T20:00:00Z",
                }
            ]
        },
    ),
    (
        events.DELIVERY_EVENTS,
        {
            "events": [
                {
                    "kind": "DELIVERY_EVENT_KIND_SENT",
                    "owner_user_id": "3",
                    "campaign_id": "7",
                    "recipient_id": "1",
                    "occur_time": "2026-12-06T20:00:00Z",
                },
                {
                    "kind": "DELIVERY_EVENT_KIND_SENT",
                    "owner_user_id": "3",
                    "campaign_id": "8",
                    "recipient_id": "2",
                    "occur_time": "2026-12-06T20:00:00Z",
                },
            ]
        },
    ),
]


@pytest.mark.parametrize(("event", "change"), BROKEN, ids=[f"{e.subject} {c}" for e, c in BROKEN])
def test_a_message_that_breaks_its_rules_does_not_decode(event: EventType[Any], change: dict[str, Any]) -> None:
    message = next(message for kind, message in VALID if kind is event)
    body = {**document(event, message), **change}
    with pytest.raises(UndecodableEvent):
        decode(event, body)


@pytest.mark.parametrize(("event", "message"), VALID, ids=IDS)
def test_a_field_added_by_a_newer_producer_is_ignored(event: EventType[Any], message: Message) -> None:
    body = {**document(event, message), "added_later": {"x": 1}}
    assert decode(event, body) == message


def test_the_batch_message_delivery_writes_in_sql_decodes() -> None:
    # services/delivery/queue_store.py builds these with json_build_object: ids as JSON numbers.
    batch = events.DELIVERY_BATCH.decode(b'{"campaign_id": 7, "batch_id": 2, "generation": 1}')
    assert (batch.campaign_id, batch.batch_id, batch.generation) == (7, 2, 1)


# --- the signed send request ----------------------------------------------------------------------------------


def test_a_send_request_is_encoded_and_decoded_only_with_its_signer() -> None:
    with pytest.raises(ValueError, match="signed"):
        events.CAMPAIGN_SEND_REQUESTED.encode(SEND_REQUEST)
    payload = events.CAMPAIGN_SEND_REQUESTED.encode(SEND_REQUEST, SIGNER)
    with pytest.raises(ValueError, match="signed"):
        events.CAMPAIGN_SEND_REQUESTED.decode(payload)
    assert json.loads(payload)["signature"]


@pytest.mark.parametrize(
    "change",
    [
        {"campaign_id": "8"},
        {"targeting": {"included": [{"list_id": "6"}]}},
        {"occurrence": 2},
        {"added_later": 1},
        # Turning a send to the lists into a resend to another campaign's non-openers, or back.
        {"non_openers_of_campaign_id": "6"},
    ],
)
def test_a_send_request_changed_after_signing_does_not_decode(change: dict[str, Any]) -> None:
    body = {**json.loads(events.CAMPAIGN_SEND_REQUESTED.encode(SEND_REQUEST, SIGNER)), **change}
    with pytest.raises(UndecodableEvent, match="not signed"):
        events.CAMPAIGN_SEND_REQUESTED.decode(json.dumps(body).encode(), SIGNER)


def test_an_unsigned_or_foreign_send_request_does_not_decode() -> None:
    unsigned = json.dumps(
        json.loads(events.CAMPAIGN_SEND_REQUESTED.encode(SEND_REQUEST, SIGNER)) | {"signature": ""}
    )
    other = EventSigner("t" * 48, events.CAMPAIGN_SEND_REQUESTED.subject, "herald")
    for payload in (unsigned.encode(), events.CAMPAIGN_SEND_REQUESTED.encode(SEND_REQUEST, other)):
        with pytest.raises(UndecodableEvent, match="not signed"):
            events.CAMPAIGN_SEND_REQUESTED.decode(payload, SIGNER)


def test_a_consumer_of_send_requests_cannot_be_made_without_the_signer() -> None:
    async def handle(event: campaign_pb2.CampaignSendRequestedEvent) -> None:
        return None

    with pytest.raises(ValueError, match="signer"):
        events.Consumer("delivery-send-requested", events.CAMPAIGN_SEND_REQUESTED, handle)
    events.Consumer("delivery-send-requested", events.CAMPAIGN_SEND_REQUESTED, handle, signer=SIGNER)
