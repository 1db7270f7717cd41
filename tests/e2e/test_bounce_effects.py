"""What bounces, complaints and deliveries do to subscribers, through the real path: events on NATS, read back over the legacy API.

Each test makes a list and subscribers with legacy commands, publishes delivery's RecipientBouncedEvent
and RecipientDeliveredEvent onto the test NATS exactly as delivery encodes them (EventType.encode),
and reads the outcome with `subscriber.get`, `subscribers.get` and the next campaign's
`campaign.recipients.get`. Where an event must change nothing, a marker event published after it on
the same subject shows it was handled: the audience consumer handles a subject's messages in order.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2
from herald.delivery.v1 import delivery_pb2
from nats.aio.client import Client

from services.common import events
from services.common.events import EventType
from services.common.natsutil import Subjects
from tests.conftest import Api, System, User, eventually
from tests.e2e.test_event_contracts import publish_and_wait_for_terms
from tests.e2e.test_imports import finished_job, import_params, start_import

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Generous: the consumers start in the background and fetch once a second.
WITHIN = 60.0
SUBSCRIBED = {"SubscriptionDate": "2025-01-02", "SubscriptionIP": "203.0.113.5"}
NEXT_YEAR = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
HARD, SOFT = delivery_pb2.BOUNCE_KIND_HARD, delivery_pb2.BOUNCE_KIND_SOFT
POLICY, COMPLAINT = delivery_pb2.BOUNCE_KIND_POLICY, delivery_pb2.BOUNCE_KIND_COMPLAINT

STATUS_CODES = {HARD: "5.1.1", SOFT: "4.2.2", POLICY: "5.7.1"}


def now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


# Campaign and recipient ids of the events: audience acts on them without asking the campaign service.
_ids = itertools.count(9_000_001)


@pytest_asyncio.fixture(loop_scope="session")
async def bus(system: System) -> AsyncIterator[Client]:
    client = await nats.connect(system.env["NATS_URL"])
    try:
        yield client
    finally:
        await client.close()


@dataclass
class Audience:
    """A user's list, its subscribers by address, and the way delivery's events reach the audience service."""

    api: Api
    user: User
    bus: Client
    subjects: Subjects
    list_id: int = 0
    ids: dict[tuple[int, str], int] = field(default_factory=dict)

    async def new_list(self, *addresses: str) -> int:
        body = await self.api.call(
            "list.create", self.user.api_key, SubscriberListName=f"list-{uuid.uuid4().hex[:6]}"
        )
        assert body["Success"] is True, body
        list_id: int = body["ListID"]
        for address in addresses:
            created = await self.api.call(
                "subscriber.create", self.user.api_key, ListID=list_id, EmailAddress=address, **SUBSCRIBED
            )
            assert created["Success"] is True, created
            self.ids[(list_id, address)] = created["SubscriberInformation"]["SubscriberID"]
        self.list_id = self.list_id or list_id
        return list_id

    def subscriber_id(self, list_id: int, address: str) -> int:
        """The id delivery's recipient row would carry: the subscription on that list, else one of the address's."""
        same = [i for (_, a), i in self.ids.items() if a == address.lower()]
        return self.ids.get((list_id, address)) or (same[0] if same else next(_ids))

    async def publish(self, event: EventType[Any], message: Any) -> None:
        await self.bus.jetstream().publish(self.subjects.event(event), event.encode(message))

    async def bounce(
        self,
        address: str,
        kind: delivery_pb2.BounceKind.ValueType,
        *,
        campaign_id: int = 0,
        list_id: int | None = None,
    ) -> delivery_pb2.RecipientBouncedEvent:
        list_id = self.list_id if list_id is None else list_id
        message = delivery_pb2.RecipientBouncedEvent(
            owner_user_id=self.user.user_id,
            campaign_id=campaign_id or next(_ids),
            recipient_id=next(_ids),
            list_id=list_id,
            subscriber_id=self.subscriber_id(list_id, address),
            email_address=address,
            kind=kind,
            source=delivery_pb2.BOUNCE_SOURCE_DSN,
            status_code=STATUS_CODES.get(kind, ""),
            reply_code=550,
            diagnostic="as the test says",
            occur_time=now(),
        )
        await self.publish(events.RECIPIENT_BOUNCED, message)
        return message

    async def delivered(self, address: str) -> None:
        message = delivery_pb2.RecipientDeliveredEvent(
            owner_user_id=self.user.user_id,
            campaign_id=next(_ids),
            recipient_id=next(_ids),
            list_id=self.list_id,
            subscriber_id=self.subscriber_id(self.list_id, address),
            email_address=address,
            deliver_time=now(),
        )
        await self.publish(events.RECIPIENT_DELIVERED, message)

    async def subscriber(self, address: str, list_id: int | None = None) -> dict[str, Any]:
        """subscriber.get's SubscriberInformation, with the answer's Suppressed beside it."""
        body = await self.api.call(
            "subscriber.get", self.user.api_key, ListID=list_id or self.list_id, EmailAddress=address
        )
        assert body["Success"] is True, body
        return {**body["SubscriberInformation"], "Suppressed": body["Suppressed"]}

    async def becomes(self, address: str, *, list_id: int | None = None, **expected: Any) -> dict[str, Any]:
        """The subscriber once every expected field has its value (events are handled asynchronously)."""

        async def check() -> dict[str, Any] | None:
            found = await self.subscriber(address, list_id)
            return found if all(found[k] == v for k, v in expected.items()) else None

        found = await eventually(check, within=WITHIN, interval=0.5)
        assert found is not None, (address, expected, await self.subscriber(address, list_id))
        return found

    async def segment(self, name: str, list_id: int | None = None) -> list[str]:
        body = await self.api.call(
            "subscribers.get",
            self.user.api_key,
            SubscriberListID=list_id or self.list_id,
            SubscriberSegment=name,
            RecordsPerRequest=100,
        )
        assert body["Success"] is True and body["TotalSubscribers"] == len(body["Subscribers"]), body
        return sorted(row["EmailAddress"] for row in body["Subscribers"])

    async def next_campaign_recipients(self, *list_ids: int) -> list[str]:
        """Who a new campaign to the lists would be sent to (campaign.recipients.get on a Draft)."""
        key = self.user.api_key
        email_id = (await self.api.call("email.create", key))["EmailID"]
        campaign_id = (await self.api.call("campaign.create", key, CampaignName="Next"))["CampaignID"]
        body = await self.api.call(
            "campaign.update",
            key,
            CampaignID=campaign_id,
            RelEmailID=email_id,
            ScheduleType="Future",
            SendDate=NEXT_YEAR,
            SendTime="09:00:00",
            RecipientListsAndSegments=",".join(str(i) for i in list_ids or (self.list_id,)),
        )
        assert body["Success"] is True, body
        body = await self.api.call("campaign.recipients.get", key, CampaignID=campaign_id)
        assert body["Success"] is True and body["TotalRecipients"] == len(body["Recipients"]), body
        return sorted(row["EmailAddress"] for row in body["Recipients"])


@pytest_asyncio.fixture(loop_scope="session")
async def audience(api: Api, user: User, bus: Client, system: System) -> Audience:
    return Audience(api, user, bus, Subjects.of(system.settings))


async def test_a_hard_bounce_makes_the_subscriber_hard_suppressed_and_left_out_of_the_next_campaign(
    audience: Audience,
) -> None:
    await audience.new_list("gone@example.com", "fine@example.com")
    other_list = await audience.new_list("gone@example.com")

    await audience.bounce("gone@example.com", HARD)

    found = await audience.becomes("gone@example.com", BounceType="Hard", Suppressed=True)
    assert found["SuppressionReason"] == "Bounce" and found["SubscriptionStatus"] == "Subscribed"
    assert await audience.segment("Hard bounced") == ["gone@example.com"]
    assert await audience.segment("Suppressed") == ["gone@example.com"]
    assert await audience.segment("Soft bounced") == []
    # The address is suppressed for the whole account; the bounce type is the bounced subscription's.
    elsewhere = await audience.subscriber("gone@example.com", other_list)
    assert (elsewhere["BounceType"], elsewhere["Suppressed"]) == ("Not Bounced", True)
    assert await audience.next_campaign_recipients(audience.list_id, other_list) == ["fine@example.com"]


async def test_soft_bounces_on_three_campaigns_make_the_subscriber_hard_and_suppressed(audience: Audience) -> None:
    await audience.new_list("full@example.com", "marker@example.com", "fine@example.com")
    first, second, third = next(_ids), next(_ids), next(_ids)

    await audience.bounce("full@example.com", SOFT, campaign_id=first)
    found = await audience.becomes("full@example.com", BounceType="Soft")
    assert found["Suppressed"] is False
    assert await audience.segment("Soft bounced") == ["full@example.com"]
    assert await audience.next_campaign_recipients() == [
        "fine@example.com",
        "full@example.com",
        "marker@example.com",
    ]

    # The first campaign's bounce reported again counts once: two campaigns so far, still Soft.
    await audience.bounce("full@example.com", SOFT, campaign_id=first)
    await audience.bounce("full@example.com", SOFT, campaign_id=second)
    await audience.bounce("marker@example.com", HARD)
    await audience.becomes("marker@example.com", BounceType="Hard")
    assert (await audience.subscriber("full@example.com"))["BounceType"] == "Soft"

    await audience.bounce("full@example.com", SOFT, campaign_id=third)
    found = await audience.becomes("full@example.com", BounceType="Hard", Suppressed=True)
    assert found["SuppressionReason"] == "Bounce"
    assert await audience.segment("Hard bounced") == ["full@example.com", "marker@example.com"]
    assert await audience.segment("Soft bounced") == []
    assert await audience.next_campaign_recipients() == ["fine@example.com"]


async def test_a_policy_rejection_changes_nothing_for_the_subscriber(audience: Audience) -> None:
    await audience.new_list("blocked@example.com", "marker@example.com")

    await audience.bounce("blocked@example.com", POLICY)
    await audience.bounce("marker@example.com", HARD)
    await audience.becomes("marker@example.com", BounceType="Hard")

    found = await audience.subscriber("blocked@example.com")
    assert (found["BounceType"], found["Suppressed"], found["SubscriptionStatus"]) == (
        "Not Bounced",
        False,
        "Subscribed",
    )
    assert await audience.next_campaign_recipients() == ["blocked@example.com"]


async def test_a_complaint_unsubscribes_from_the_campaigns_list_and_suppresses_the_address(
    audience: Audience,
) -> None:
    await audience.new_list("angry@example.com", "fine@example.com")
    other_list = await audience.new_list("angry@example.com")

    await audience.bounce("angry@example.com", COMPLAINT)

    found = await audience.becomes("angry@example.com", SubscriptionStatus="Unsubscribed", Suppressed=True)
    assert found["UnsubscriptionChannel"] == "complaint" and found["SuppressionReason"] == "Complaint"
    assert found["UnsubscriptionDate"] and found["BounceType"] == "Not Bounced"
    assert await audience.segment("Unsubscribed") == ["angry@example.com"]
    assert await audience.segment("Suppressed") == ["angry@example.com"]
    # Only the campaign's list is unsubscribed from; the suppression keeps every campaign away.
    elsewhere = await audience.subscriber("angry@example.com", other_list)
    assert (elsewhere["SubscriptionStatus"], elsewhere["Suppressed"]) == ("Subscribed", True)
    assert await audience.next_campaign_recipients(audience.list_id, other_list) == ["fine@example.com"]


async def test_a_delivery_clears_the_bounce_state_and_only_the_suppression_a_bounce_caused(
    audience: Audience,
) -> None:
    addresses = ("hard@example.com", "soft@example.com", "manual@example.com", "angry@example.com")
    await audience.new_list(*addresses)
    # The user suppressed manual@ by hand (unsubscribing it with AddToGlobalSuppression) before it bounced.
    body = await audience.api.call(
        "subscriber.unsubscribe",
        audience.user.api_key,
        ListID=audience.list_id,
        EmailAddress="manual@example.com",
        IPAddress="203.0.113.9",
        AddToGlobalSuppression=True,
    )
    assert body["Success"] is True, body
    await audience.bounce("hard@example.com", HARD)
    await audience.bounce("soft@example.com", SOFT)
    await audience.bounce("manual@example.com", HARD)
    await audience.bounce("angry@example.com", HARD)
    await audience.bounce("angry@example.com", COMPLAINT)
    await audience.becomes("angry@example.com", SuppressionReason="Complaint", BounceType="Hard")
    assert (await audience.subscriber("hard@example.com"))["SuppressionReason"] == "Bounce"
    assert (await audience.subscriber("soft@example.com"))["BounceType"] == "Soft"
    manual = await audience.subscriber("manual@example.com")
    assert (manual["BounceType"], manual["SuppressionReason"]) == ("Hard", "Manual")
    assert await audience.next_campaign_recipients() == ["soft@example.com"]

    for address in addresses:
        await audience.delivered(address)

    # The last one handled: every earlier delivered event was too.
    angry = await audience.becomes("angry@example.com", BounceType="Not Bounced")
    assert (angry["Suppressed"], angry["SuppressionReason"], angry["SubscriptionStatus"]) == (
        True,
        "Complaint",
        "Unsubscribed",
    )
    hard = await audience.subscriber("hard@example.com")
    assert (hard["BounceType"], hard["Suppressed"], hard["SuppressionReason"]) == ("Not Bounced", False, "")
    assert (await audience.subscriber("soft@example.com"))["BounceType"] == "Not Bounced"
    manual = await audience.subscriber("manual@example.com")
    assert (manual["BounceType"], manual["Suppressed"], manual["SuppressionReason"]) == (
        "Not Bounced",
        True,
        "Manual",
    )
    assert await audience.segment("Hard bounced") == []
    assert await audience.segment("Soft bounced") == []
    assert await audience.segment("Suppressed") == ["angry@example.com", "manual@example.com"]
    assert await audience.next_campaign_recipients() == ["hard@example.com", "soft@example.com"]


async def test_the_same_event_twice_changes_nothing_more(audience: Audience) -> None:
    await audience.new_list("gone@example.com", "angry@example.com", "full@example.com", "marker@example.com")

    hard = await audience.bounce("gone@example.com", HARD)
    complaint = await audience.bounce("angry@example.com", COMPLAINT)
    soft = await audience.bounce("full@example.com", SOFT)
    await audience.becomes("full@example.com", BounceType="Soft")
    gone, angry = await audience.subscriber("gone@example.com"), await audience.subscriber("angry@example.com")

    # Redelivered as JetStream redelivers them (an ack was lost): the very same messages, twice more.
    for message in (hard, complaint, soft, hard, complaint, soft):
        await audience.publish(events.RECIPIENT_BOUNCED, message)
    # And a soft bounce of one more campaign: the run is two campaigns long, not four.
    await audience.bounce("full@example.com", SOFT)
    await audience.bounce("marker@example.com", HARD)
    await audience.becomes("marker@example.com", BounceType="Hard")

    assert await audience.subscriber("gone@example.com") == gone
    assert await audience.subscriber("angry@example.com") == angry
    full = await audience.subscriber("full@example.com")
    assert (full["BounceType"], full["Suppressed"]) == ("Soft", False)
    assert await audience.segment("Suppressed") == ["angry@example.com", "gone@example.com", "marker@example.com"]


async def test_a_bounce_without_a_list_reaches_the_owners_subscribers_with_the_address(audience: Audience) -> None:
    first = await audience.new_list("gone@example.com", "fine@example.com")
    second = await audience.new_list("gone@example.com")

    await audience.bounce("Gone@Example.com", HARD, list_id=0)

    await audience.becomes("gone@example.com", list_id=second, BounceType="Hard", Suppressed=True)
    assert (await audience.subscriber("gone@example.com", first))["BounceType"] == "Hard"
    assert await audience.next_campaign_recipients(first, second) == ["fine@example.com"]


async def test_a_bounce_event_with_no_kind_is_terminated_by_the_audience_consumer(
    system: System, bus: Client
) -> None:
    message = delivery_pb2.RecipientBouncedEvent(
        owner_user_id=1, campaign_id=2, recipient_id=3, email_address="someone@example.com"
    )
    payload = events.RECIPIENT_BOUNCED.encode(message)
    bounced: Any = events.RECIPIENT_BOUNCED
    await publish_and_wait_for_terms(
        bus, Subjects.of(system.settings), bounced, payload, ["audience-recipient-bounced"]
    )


async def test_an_address_the_user_imports_as_suppressed_after_a_bounce_stays_suppressed_after_a_delivery(
    audience: Audience,
) -> None:
    list_id = await audience.new_list("gone@example.com")
    await audience.bounce("gone@example.com", HARD)
    await audience.becomes("gone@example.com", SuppressionReason="Bounce")

    body = {**import_params(audience.user, list_id, Data="gone@example.com\n"), "AddToSuppressionList": True}
    await finished_job(audience.api, audience.user, list_id, await start_import(audience.api, body))
    await audience.becomes("gone@example.com", SuppressionReason="Manual")
    await audience.delivered("gone@example.com")

    found = await audience.becomes("gone@example.com", BounceType="Not Bounced")
    assert (found["Suppressed"], found["SuppressionReason"]) == (True, "Manual")
    assert await audience.next_campaign_recipients() == []
