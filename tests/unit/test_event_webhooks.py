"""Event webhook rules (services/delivery/event_webhooks.py) and the address guard at registration and at delivery, against real sockets and a receiver in this process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from google.protobuf import timestamp_pb2
from herald.campaign.v1 import campaign_pb2
from herald.delivery.v1 import delivery_pb2

from services.common.config import Settings
from services.common.errors import DomainError, Violations
from services.common.urlguard import GuardedResolver
from services.delivery import dkim, event_webhooks
from services.delivery.event_webhook_api import EventWebhookService
from services.delivery.event_webhook_sender import (
    EventWebhookSender,
    SecretSeal,
    outgoing_events,
    recipient_events_owner,
)
from services.delivery.event_webhook_store import ClaimedEvent
from tests.conftest import free_port


def url_problems(url: str, *, allow_http: bool = False, allow_private: bool = False) -> list[str]:
    violations = Violations()
    event_webhooks.check_url(url, violations, allow_http=allow_http, allow_private=allow_private)
    return [item.description for item in violations.items]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.1:8443/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
    ],
)
def test_a_private_or_loopback_address_is_refused_unless_the_operator_allows_it(url: str) -> None:
    assert url_problems(url) and "non-public address" in url_problems(url)[0]
    assert url_problems(url, allow_private=True) == []


def test_plain_http_is_refused_unless_the_operator_allows_it() -> None:
    assert "https" in url_problems("http://hooks.example.com/in")[0]
    assert url_problems("http://hooks.example.com/in", allow_http=True) == []
    assert url_problems("https://hooks.example.com/in") == []


@pytest.mark.parametrize(
    "url", ["", "/relative", "ftp://example.com/", "https://u:p@example.com/", "https://example.com/#x"]
)
def test_a_url_that_is_no_endpoint_is_refused(url: str) -> None:
    assert url_problems(url, allow_http=True, allow_private=True)


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    refused = event_webhooks.refused_resolution("evil.example", ["93.184.216.34", "10.0.0.1"], allow_private=False)
    assert refused is not None and "10.0.0.1" in refused.message
    assert event_webhooks.refused_resolution("ok.example", ["93.184.216.34"], allow_private=False) is None
    assert event_webhooks.refused_resolution("evil.example", ["10.0.0.1"], allow_private=True) is None


async def test_registration_resolves_the_name_and_refuses_loopback() -> None:
    settings = Settings(allow_private_urls=False, event_webhooks_allow_http=False, token_secret="t" * 32)
    service = EventWebhookService(cast(Any, None), settings, SecretSeal("t" * 32))
    with pytest.raises(DomainError) as refused:
        await service._check_resolution("https://localhost/hook")
    assert refused.value.reason == event_webhooks.WEBHOOK_URL_INVALID and "non-public" in refused.value.message


def test_event_kinds_are_at_least_one_and_each_specified() -> None:
    assert event_webhooks.validated_event_types([3, 1, 3]) == ["campaign.status_changed", "recipient.sent"]
    for kinds in ([], [0], [10], [-1]):
        with pytest.raises(DomainError) as refused:
            event_webhooks.validated_event_types(kinds)
        assert refused.value.reason == event_webhooks.WEBHOOK_EVENT_KINDS_INVALID
    assert event_webhooks.kind_numbers(["recipient.unsubscribed", "campaign.status_changed"]) == [9, 1]


def test_the_signature_is_the_hmac_of_id_timestamp_and_body_under_the_decoded_secret() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"id":"evt_1"}'
    expected = hmac.new(b"k" * 32, b"evt_1.1700000000." + body, hashlib.sha256).digest()
    headers = event_webhooks.signed_headers(secret, "evt_1", 1700000000, body)
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert headers["webhook-id"] == "evt_1" and headers["webhook-timestamp"] == "1700000000"
    assert event_webhooks.new_secret() != event_webhooks.new_secret()
    # After a rotation: both signatures, the new secret's first.
    previous = "whsec_" + base64.b64encode(b"p" * 32).decode()
    both = event_webhooks.signed_headers(secret, "evt_1", 1700000000, body, previous)["webhook-signature"].split()
    assert both[0] == headers["webhook-signature"]
    assert both[1] == event_webhooks.signature(previous, "evt_1", 1700000000, body)
    assert len(event_webhooks.secret_key(event_webhooks.new_secret())) == 32


def test_a_sealed_secret_opens_only_for_its_owner_and_token_secret() -> None:
    seal = SecretSeal("a" * 32)
    sealed = seal.seal_secret("whsec_abc", 7)
    assert seal.open_secret(sealed, 7) == "whsec_abc"
    for owner, other_seal in ((8, seal), (7, SecretSeal("b" * 32))):
        with pytest.raises(dkim.KeyUnreadable, match="does not open"):
            other_seal.open_secret(sealed, owner)
    # Its key is not the DKIM keys' one, though both derive from the token secret.
    with pytest.raises(dkim.KeyUnreadable):
        dkim.KeySeal("a" * 32).open(sealed, 7, "event-webhook")


def test_backoff_doubles_up_to_the_longest_delay_and_gives_up_at_the_horizon() -> None:
    schedule = event_webhooks.RetrySchedule(first_seconds=30, max_seconds=3600, horizon_seconds=86400)
    delays = [schedule.delay(n) for n in range(1, 12)]
    for n, delay in enumerate(delays, start=1):
        nominal = min(30 * 2 ** (n - 1), 3600)
        assert nominal * 0.9 <= delay <= nominal
    assert schedule.delay(10_000) <= 3600
    assert not schedule.gives_up(86399) and schedule.gives_up(86400)
    # The default schedule keeps trying for the whole day: attempts every hour once at the longest delay.
    elapsed, attempts = 0.0, 0
    while not schedule.gives_up(elapsed):
        attempts += 1
        elapsed += min(30 * 2 ** (attempts - 1), 3600)
    assert 25 <= attempts <= 40


def test_an_event_id_is_stable_for_its_message_and_place_and_differs_otherwise() -> None:
    one = event_webhooks.event_id("herald", 41, 1_700_000_000_000_000, 0)
    assert one == event_webhooks.event_id("herald", 41, 1_700_000_000_000_000, 0)
    others = {
        event_webhooks.event_id("herald", 41, 1_700_000_000_000_000, 1),
        event_webhooks.event_id("herald", 42, 1_700_000_000_000_000, 0),
        event_webhooks.event_id("other", 41, 1_700_000_000_000_000, 0),
        event_webhooks.event_id("herald", 41, 1_700_000_000_000_001, 0),
    }
    assert one not in others and len(others) == 4


def test_a_status_change_and_recipient_events_become_payloads_in_proto3_json() -> None:
    published = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
    change = campaign_pb2.CampaignStatusChangedEvent(
        campaign_id=5,
        owner_user_id=7,
        status=campaign_pb2.CAMPAIGN_STATUS_PAUSED,
        previous_status=campaign_pb2.CAMPAIGN_STATUS_SENDING,
    )
    from google.protobuf import json_format

    [event] = outgoing_events(
        "herald", "events.campaign.status_changed", json_format.MessageToJson(change).encode(), 9, published
    )
    document = json.loads(event.body)
    assert document["type"] == "campaign.status_changed" and document["id"] == event.event_id
    assert document["timestamp"] == "2026-12-06T20:00:00Z"
    assert document["data"]["status"] == "CAMPAIGN_STATUS_PAUSED" and document["data"]["campaign_id"] == "5"
    assert (event.owner_user_id, event.campaign_id, event.stream_sequence) == (7, 5, 9)

    batch = delivery_pb2.DeliveryEvents(
        events=[
            delivery_pb2.DeliveryEvent(
                kind=delivery_pb2.DELIVERY_EVENT_KIND_SENT,
                owner_user_id=7,
                campaign_id=5,
                recipient_id=1,
                occur_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
            ),
            delivery_pb2.DeliveryEvent(
                kind=delivery_pb2.DELIVERY_EVENT_KIND_CLICKED,
                owner_user_id=7,
                campaign_id=5,
                recipient_id=1,
                detail="https://example.com/",
                occur_time=timestamp_pb2.Timestamp(seconds=1_800_000_001),
            ),
        ]
    )
    found = outgoing_events(
        "herald", "events.delivery.recipients.7.5", json_format.MessageToJson(batch).encode(), 10, published
    )
    assert [e.event_type for e in found] == ["recipient.sent", "recipient.clicked"]
    assert [e.position for e in found] == [0, 1] and len({e.event_id for e in found}) == 2
    assert json.loads(found[1].body)["data"]["detail"] == "https://example.com/"
    # A recipient event's time is when it happened, not when it was published.
    assert json.loads(found[0].body)["timestamp"] == "2027-01-15T08:00:00Z"


def test_only_the_wanted_recipient_events_become_payloads_and_the_subject_names_their_owner() -> None:
    from google.protobuf import json_format

    kinds = (delivery_pb2.DELIVERY_EVENT_KIND_QUEUED, delivery_pb2.DELIVERY_EVENT_KIND_SENT)
    batch = delivery_pb2.DeliveryEvents(
        events=[
            delivery_pb2.DeliveryEvent(
                kind=kind,
                owner_user_id=7,
                campaign_id=5,
                recipient_id=n,
                occur_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
            )
            for n in range(1, 4)
            for kind in kinds
        ]
    )
    data = json_format.MessageToJson(batch).encode()
    published = datetime(2026, 12, 7, tzinfo=UTC)
    found = outgoing_events(
        "herald", "events.delivery.recipients.7.5", data, 3, published, frozenset({"recipient.sent"})
    )
    assert [(e.event_type, e.position) for e in found] == [("recipient.sent", p) for p in (1, 3, 5)]
    # The positions, so the ids, are those of the unfiltered message.
    everything = outgoing_events("herald", "events.delivery.recipients.7.5", data, 3, published)
    assert {e.event_id for e in found} < {e.event_id for e in everything}

    assert recipient_events_owner("events.delivery.recipients.7.5") == 7
    for other in (
        "events.campaign.status_changed",
        "events.delivery.recipients.x.5",
        "events.delivery.recipients",
    ):
        assert recipient_events_owner(other) is None


@pytest_asyncio.fixture
async def local_receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://localhost:{port}/hook", received
    await runner.cleanup()


@pytest.mark.parametrize("allow_private", [False, True])
async def test_delivery_resolves_the_name_again_and_refuses_a_loopback_address(
    local_receiver: tuple[str, list[bytes]], allow_private: bool
) -> None:
    url, received = local_receiver
    settings = Settings(allow_private_urls=allow_private, token_secret="t" * 32)
    seal = SecretSeal("t" * 32)
    sender = EventWebhookSender(cast(Any, None), settings, seal)
    event = ClaimedEvent(1, 7, url, seal.seal_secret(event_webhooks.new_secret(), 7), "evt_x", "t", 5, b"{}", 0)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=allow_private))
    async with aiohttp.ClientSession(connector=connector) as session:
        status, error, latency_ms = await sender._post(session, event)
    if allow_private:
        assert (status, error, received) == (204, "", [b"{}"])
    else:
        assert status == 0 and error.startswith("address refused:") and "localhost" in error
        assert received == []
    assert latency_ms >= 0
