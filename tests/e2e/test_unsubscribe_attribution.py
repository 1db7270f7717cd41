"""subscriber.unsubscribe with a CampaignID end to end: a campaign really sent (the SMTP recorder got it), then the
legacy unsubscription naming it, then the campaign's TotalUnsubscriptions in campaign.get and in delivery's gRPC
statistics. It counts once per subscriber and campaign, only for a subscriber of that list the campaign was sent
to; a foreign, unsent or unknown campaign, or an email the subscriber was not sent, changes nothing, and the answer
is the same either way. AutoResponderID (Herald has no autoresponders) unsubscribes and counts nowhere.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.grpcutil import decode_error
from tests.conftest import System, User, grpc_metadata
from tests.e2e.delivery_helpers import (
    SUBSCRIBED_IP,
    DeliveryHerald,
    Person,
    assert_each_received_once,
    audience,
    campaign_get,
    create_campaign,
    create_email,
    import_people,
    ok,
    people,
    queued_recipients,
    send,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUCCESS = (200, {"Success": True, "ErrorCode": 0, "RedirectURL": ""})
UNKNOWN_CAMPAIGN = 987_654_321_012


class Sent:
    """One user's list and a campaign sent to it, with what the recorder received."""

    def __init__(
        self, herald: DeliveryHerald, user: User, domain: str, readers: list[Person], list_id: int, email_id: int
    ) -> None:
        self.herald, self.user, self.domain, self.readers, self.list_id = herald, user, domain, readers, list_id
        self.email_id = email_id
        self.campaign_id = 0

    @classmethod
    async def campaign(
        cls, herald: DeliveryHerald, count: int, *, variations: int = 0, user: User | None = None
    ) -> Sent:
        """A new user's (or `user`'s) list of `count` readers and a campaign sent to all of them (with
        `variations` A/B variations of equal weight instead of one email)."""
        user = user or await herald.new_user()
        domain, readers, list_id = await audience(herald, user, count)
        email_id = await create_email(herald.api, user, name="Attributed")
        emails = [await create_email(herald.api, user, name=f"V{n}") for n in range(variations)]
        campaign_id = await create_campaign(
            herald.api,
            user,
            None if emails else email_id,
            [list_id],
            name="Attributed",
            variations=[(e, 1) for e in emails],
        )
        await send(herald.api, user, campaign_id)
        assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=60) == "Sent"
        assert_each_received_once(herald.recorder, domain, [reader.email for reader in readers])
        sent = cls(herald, user, domain, readers, list_id, email_id)
        sent.campaign_id = campaign_id
        return sent

    async def unsubscribe(self, address: str, *, credentials: bool = False, **extra: Any) -> tuple[int, Any]:
        body: dict[str, Any] = {
            "Command": "subscriber.unsubscribe",
            "ListID": self.list_id,
            "IPAddress": SUBSCRIBED_IP,
            "EmailAddress": address,
            **extra,
        }
        if credentials:
            body["APIKey"] = self.user.api_key
        return await self.herald.api.post(body)

    async def status(self, address: str) -> str:
        body = await ok(
            self.herald.api, "subscriber.get", self.user.api_key, ListID=self.list_id, EmailAddress=address
        )
        status: str = body["SubscriberInformation"]["SubscriptionStatus"]
        return status

    async def resubscribe(self, address: str) -> None:
        """The owner takes an unsubscribed address back (subscriber.create with UpdateIfUnsubscribed)."""
        await ok(
            self.herald.api,
            "subscriber.create",
            self.user.api_key,
            ListID=self.list_id,
            EmailAddress=address,
            SubscriptionDate="2025-01-02",
            SubscriptionIP=SUBSCRIBED_IP,
            UpdateIfUnsubscribed=True,
        )
        assert await self.status(address) == "Subscribed"

    async def unsubscriptions(self, campaign_id: int | None = None) -> tuple[int, int]:
        """The campaign's TotalUnsubscriptions in legacy campaign.get and in delivery's gRPC statistics."""
        campaign_id = campaign_id or self.campaign_id
        legacy = (await campaign_get(self.herald.api, self.user, campaign_id))["Campaign"]["TotalUnsubscriptions"]
        async with grpc.aio.insecure_channel(self.herald.system.grpc_target("delivery")) as channel:
            response = await delivery_pb2_grpc.DeliveryServiceStub(channel).BatchGetCampaignStatistics(
                delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=[campaign_id]),
                metadata=grpc_metadata(self.herald.system, self.user.user_id, service="campaign"),
            )
        [figures] = response.statistics
        return legacy, figures.total_unsubscriptions


async def test_an_unsubscription_naming_the_campaign_counts_in_its_statistics_once_per_subscriber(
    delivery_system: DeliveryHerald,
) -> None:
    sent = await Sent.campaign(delivery_system, 4)
    first, second, third, fourth = (reader.email for reader in sent.readers)
    assert await sent.unsubscriptions() == (0, 0)

    # The unsubscribe form of an old email: no credentials, the campaign it came from.
    assert await sent.unsubscribe(first, CampaignID=sent.campaign_id) == SUCCESS
    assert await sent.status(first) == "Unsubscribed"
    assert await sent.unsubscriptions() == (1, 1)

    # Again, already unsubscribed: the same answer, still one.
    assert await sent.unsubscribe(first, CampaignID=sent.campaign_id) == SUCCESS
    # Taken back by the owner and unsubscribed again through the same campaign: one per subscriber and campaign.
    await sent.resubscribe(first)
    assert await sent.unsubscribe(first.upper(), CampaignID=sent.campaign_id) == SUCCESS
    assert await sent.status(first) == "Unsubscribed"
    assert await sent.unsubscriptions() == (1, 1)

    # With the owner's credentials, by SubscriberID, naming the email the campaign sent.
    subscriber_id = (
        await ok(sent.herald.api, "subscriber.get", sent.user.api_key, ListID=sent.list_id, EmailAddress=second)
    )["SubscriberInformation"]["SubscriberID"]
    status, body = await sent.herald.api.post(
        {
            "Command": "subscriber.unsubscribe",
            "APIKey": sent.user.api_key,
            "ListID": sent.list_id,
            "IPAddress": SUBSCRIBED_IP,
            "SubscriberID": subscriber_id,
            "CampaignID": sent.campaign_id,
            "EmailID": sent.email_id,
        }
    )
    assert (status, body) == SUCCESS
    assert await sent.unsubscriptions() == (2, 2)

    # An AutoResponderID beside the CampaignID: the campaign counts it, no autoresponder could.
    assert await sent.unsubscribe(third, CampaignID=sent.campaign_id, AutoResponderID=77) == SUCCESS
    assert await sent.unsubscriptions() == (3, 3)
    # An AutoResponderID alone (an autoresponder's form): unsubscribed, counted nowhere.
    assert await sent.unsubscribe(fourth, AutoResponderID=77, EmailID=sent.email_id) == SUCCESS
    assert await sent.status(fourth) == "Unsubscribed"
    assert await sent.unsubscriptions() == (3, 3)

    # The link still counts its own, once: a subscriber counted through the API is not counted again by it.
    message = next(m for m in sent.herald.recorder.messages_to(sent.domain) if m.recipient == first)
    link = message.header("List-Unsubscribe").split("<", 1)[1].split(">", 1)[0]
    async with sent.herald.api.session.post(link, data={"List-Unsubscribe": "One-Click"}) as response:
        assert response.status == 200
    assert await sent.unsubscriptions() == (3, 3)


async def test_a_campaign_not_sent_to_the_subscriber_gets_nothing_and_the_answer_is_the_same(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    mine = await Sent.campaign(herald, 6)
    theirs = await Sent.campaign(herald, 3)
    # A campaign of the same owner to the same list that was never sent (still a Draft).
    draft = await create_campaign(herald.api, mine.user, mine.email_id, [mine.list_id], name="Draft")
    # A subscriber who joined the list after the send.
    late = people(1, mine.domain, start=100)
    await import_people(herald.api, mine.user, mine.list_id, late)
    readers = [reader.email for reader in mine.readers]

    cases: list[tuple[Sent, str, bool, dict[str, Any]]] = [
        (mine, readers[0], False, {"CampaignID": theirs.campaign_id}),  # another user's sent campaign
        (mine, readers[1], False, {"CampaignID": draft}),  # the owner's, never sent
        (mine, readers[2], False, {"CampaignID": UNKNOWN_CAMPAIGN}),  # no such campaign
        (mine, late[0].email, False, {"CampaignID": mine.campaign_id}),  # not a recipient of it
        (mine, readers[3], False, {"CampaignID": mine.campaign_id, "EmailID": theirs.email_id}),  # not that email
        (theirs, theirs.readers[0].email, False, {"CampaignID": mine.campaign_id}),  # the other way round
        (theirs, theirs.readers[1].email, True, {"CampaignID": mine.campaign_id}),  # ... with the owner's key
    ]
    for owner, address, credentials, extra in cases:
        assert await owner.unsubscribe(address, credentials=credentials, **extra) == SUCCESS, (address, extra)
        # The unsubscription itself happened as it would have without the CampaignID.
        assert await owner.status(address) == "Unsubscribed", (address, extra)

    assert await mine.unsubscriptions() == (0, 0)
    assert await theirs.unsubscriptions() == (0, 0)
    assert await mine.unsubscriptions(draft) == (0, 0)
    # The same call that names the campaign it was sent in does count: the cases above could have counted.
    assert await mine.unsubscribe(readers[4], CampaignID=mine.campaign_id) == SUCCESS
    assert await mine.unsubscriptions() == (1, 1)


async def test_an_email_id_counts_only_for_the_variation_the_subscriber_was_sent(
    delivery_system: DeliveryHerald,
) -> None:
    sent = await Sent.campaign(delivery_system, 6, variations=2)
    rows = await queued_recipients(sent.herald.system, sent.user, sent.campaign_id)
    variation = {row.email_address: row.email_id for row in rows}
    emails = sorted(set(variation.values()))
    assert len(emails) == 2 and 0 not in emails, variation
    by_email = {email: sorted(a for a, e in variation.items() if e == email) for email in emails}
    assert all(len(addresses) >= 2 for addresses in by_email.values()), by_email
    first, other = emails

    # A reader of the first variation, naming the second (and the campaign's own email, which no variation is).
    assert await sent.unsubscribe(by_email[first][0], CampaignID=sent.campaign_id, EmailID=other) == SUCCESS
    assert (
        await sent.unsubscribe(by_email[first][1], CampaignID=sent.campaign_id, EmailID=sent.email_id) == SUCCESS
    )
    assert await sent.unsubscriptions() == (0, 0)
    # Naming the variation each was sent.
    assert await sent.unsubscribe(by_email[other][0], CampaignID=sent.campaign_id, EmailID=other) == SUCCESS
    assert await sent.unsubscriptions() == (1, 1)


async def test_record_unsubscriptions_counts_only_in_the_callers_campaigns_and_names_every_bad_field(
    delivery_system: DeliveryHerald,
) -> None:
    sent = await Sent.campaign(delivery_system, 2)
    stranger = await delivery_system.new_user()
    reader = sent.readers[0].email
    subscriber_id = (
        await ok(sent.herald.api, "subscriber.get", sent.user.api_key, ListID=sent.list_id, EmailAddress=reader)
    )["SubscriberInformation"]["SubscriberID"]
    request = delivery_pb2.RecordUnsubscriptionsRequest(
        campaign_id=sent.campaign_id,
        list_id=sent.list_id,
        subscribers=[delivery_pb2.UnsubscribedSubscriber(subscriber_id=subscriber_id, email_address=reader)],
    )
    system = sent.herald.system
    async with grpc.aio.insecure_channel(system.grpc_target("delivery")) as channel:
        delivery = delivery_pb2_grpc.DeliveryServiceStub(channel)
        # Another user's process token (internal RPCs accept it) sees none of this campaign's rows.
        as_stranger = grpc_metadata(system, stranger.user_id, permissions=(), service="translator")
        assert (await delivery.RecordUnsubscriptions(request, metadata=as_stranger)).recorded_count == 0
        assert await sent.unsubscriptions() == (0, 0)
        # The owner's counts, once.
        as_owner = grpc_metadata(system, sent.user.user_id, permissions=(), service="translator")
        assert (await delivery.RecordUnsubscriptions(request, metadata=as_owner)).recorded_count == 1
        assert (await delivery.RecordUnsubscriptions(request, metadata=as_owner)).recorded_count == 0
        assert await sent.unsubscriptions() == (1, 1)

        bad = delivery_pb2.RecordUnsubscriptionsRequest(
            campaign_id=0,
            list_id=-1,
            email_id=-5,
            subscribers=[delivery_pb2.UnsubscribedSubscriber(subscriber_id=0, email_address="a@b.example")],
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await delivery.RecordUnsubscriptions(bad, metadata=as_owner)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert decode_error(caught.value).field_reasons() == [
        ("campaign_id", "INVALID_CAMPAIGN_ID"),
        ("list_id", "INVALID_LIST_ID"),
        ("subscribers", "INVALID_SUBSCRIBERS"),
        ("email_id", "INVALID_EMAIL_ID"),
    ]


async def test_unsubscribe_subscribers_names_whom_it_unsubscribed_only_when_asked(
    system: System, user: User
) -> None:
    metadata = grpc_metadata(system, user.user_id)
    async with grpc.aio.insecure_channel(system.grpc_target("audience")) as channel:
        stub = audience_pb2_grpc.AudienceServiceStub(channel)
        list_id = (await stub.CreateList(audience_pb2.CreateListRequest(name="Named"), metadata=metadata)).list_id
        ids = {}
        for address in ("Ada@Example.com", "bob@example.com"):
            created = await stub.CreateSubscriber(
                audience_pb2.CreateSubscriberRequest(
                    subscriber=audience_pb2.Subscriber(
                        list_id=list_id, email_address=address, status=audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED
                    )
                ),
                metadata=metadata,
            )
            ids[address] = created.subscriber_id

        def unsubscribe(address: str, **extra: Any) -> audience_pb2.UnsubscribeSubscribersRequest:
            return audience_pb2.UnsubscribeSubscribersRequest(
                list_id=list_id, email_address=address, ip_address=SUBSCRIBED_IP, **extra
            )

        plain = await stub.UnsubscribeSubscribers(unsubscribe("bob@example.com"), metadata=metadata)
        assert (plain.unsubscribed_count, list(plain.unsubscribed)) == (1, [])
        named = await stub.UnsubscribeSubscribers(
            unsubscribe("ada@example.com", include_unsubscribed=True), metadata=metadata
        )
        assert named.unsubscribed_count == 1
        assert [(s.subscriber_id, s.email_address) for s in named.unsubscribed] == [
            (ids["Ada@Example.com"], "ada@example.com")
        ]
