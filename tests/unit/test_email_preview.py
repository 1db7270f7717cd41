"""Email previews: the request's checks, and the queue row that carries the sample subscriber."""

from __future__ import annotations

import pytest
from herald.campaign.v1 import email_pb2

from services.campaign import email_domain
from services.common import events
from services.common.errors import DomainError
from services.common.event_signing import EventSigner
from services.common.personalization import HashedIds
from services.delivery import sending
from services.delivery.preview import sample_recipient


def test_a_preview_request_needs_an_email_and_a_valid_address() -> None:
    assert email_domain.check_preview_request(3, "  me@example.com ", 0) == "me@example.com"
    with pytest.raises(DomainError) as caught:
        email_domain.check_preview_request(0, "", -1)
    assert [v.reason for v in caught.value.violations] == [
        "EMAIL_ID_REQUIRED",
        "EMAIL_ADDRESS_REQUIRED",
        "LIST_ID_INVALID",
    ]
    with pytest.raises(DomainError) as caught:
        email_domain.check_preview_request(3, "not an address", 0)
    assert caught.value.reason == "EMAIL_ADDRESS_INVALID"


def test_the_preview_row_names_no_subscriber_but_carries_the_first_subscribers_values() -> None:
    event = email_pb2.EmailPreviewRequestedEvent(
        owner_user_id=7,
        email_id=3,
        email_address="me@example.com",
        list_id=4,
        subscriber_id=11,
        subscriber_email_address="ada@example.com",
        first_name="Ada",
        custom_fields={"2": "Lovelace"},
        subscriber_status="Subscribed",
        subscription_ip="192.0.2.1",
    )
    event.subscription_time.FromSeconds(1_735_689_600)  # 2025-01-01 00:00:00 UTC
    hashed = HashedIds("secret")
    row = sample_recipient(event, hashed)
    assert (row["subscriber_id"], row["list_id"], row["email_address"], row["first_name"]) == (
        0,
        0,
        "me@example.com",
        "Ada",
    )
    assert row["custom_fields"] == {
        "2": "Lovelace",
        "EmailAddress": "ada@example.com",
        "SubscriberID": "11",
        "Status": "Subscribed",
        "SubscriptionDate": "2025-01-01 00:00:00",
        "SubscriptionIP": "192.0.2.1",
        "OptInDate": "",
        "HashedSubscriberID": hashed.subscriber(11),
    }
    sample = sample_recipient(
        email_pb2.EmailPreviewRequestedEvent(owner_user_id=7, email_id=3, email_address="me@x.org"), hashed
    )
    assert (sample["first_name"], sample["custom_fields"]) == ("Sample", {})


def test_preview_runs_are_runs_of_single_messages_apart_from_opt_in_runs() -> None:
    run = sending.preview_run_id(7)
    assert sending.is_opt_in_run(run) and run != sending.opt_in_run_id(7)
    with pytest.raises(ValueError):
        sending.preview_run_id(0)


def test_a_preview_request_decodes_only_with_its_signature() -> None:
    event = email_pb2.EmailPreviewRequestedEvent(
        owner_user_id=7, email_id=3, email_address="me@x.org", request_id="r1"
    )
    event.request_time.GetCurrentTime()
    signer = EventSigner("secret", events.EMAIL_PREVIEW_REQUESTED.subject, "herald")
    encoded = events.EMAIL_PREVIEW_REQUESTED.encode(event, signer)
    assert events.EMAIL_PREVIEW_REQUESTED.decode(encoded, signer) == event
    other = EventSigner("another secret", events.EMAIL_PREVIEW_REQUESTED.subject, "herald")
    with pytest.raises(events.UndecodableEvent):
        events.EMAIL_PREVIEW_REQUESTED.decode(encoded, other)
