"""The public tracking endpoints end to end: signed tokens in, opens/clicks in delivery's statistics, unsubscribes in audience.

The send pipeline does not exist yet, so each test writes the queue row of its recipient into
`delivery.recipients` with SQL (through the system's DATABASE_URL), as a worker will once it sent
the message; the tokens are signed with the system's secret exactly as the worker will sign them.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import psycopg
import pytest
import pytest_asyncio
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.grpcutil import decode_error
from services.common.tracking import TrackedRecipient, TrackingLinks, sign_tracking, tracking_key
from tests.conftest import Api, System, User, eventually, grpc_metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")

GIF_MAGIC = b"GIF89a"
TARGET = "https://example.com/spring/%C3%A9t%C3%A9?utm_source=herald&next=%2Fhome#top"


@pytest_asyncio.fixture(loop_scope="session")
async def sql(system: System) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        yield conn


@pytest_asyncio.fixture(loop_scope="session")
async def delivery(system: System) -> AsyncIterator[delivery_pb2_grpc.DeliveryServiceStub]:
    async with grpc.aio.insecure_channel(system.grpc_target("delivery")) as channel:
        yield delivery_pb2_grpc.DeliveryServiceStub(channel)


@pytest_asyncio.fixture(loop_scope="session")
async def audience(system: System) -> AsyncIterator[audience_pb2_grpc.AudienceServiceStub]:
    async with grpc.aio.insecure_channel(system.grpc_target("audience")) as channel:
        yield audience_pb2_grpc.AudienceServiceStub(channel)


@dataclass
class Sent:
    """One recipient of one campaign, as a worker would leave it after sending: queue row and links."""

    user: User
    recipient: TrackedRecipient
    links: TrackingLinks


@pytest_asyncio.fixture(loop_scope="session")
async def sent(
    system: System,
    user: User,
    sql: psycopg.AsyncConnection[tuple[object, ...]],
    audience: audience_pb2_grpc.AudienceServiceStub,
) -> Sent:
    metadata = grpc_metadata(system, user.user_id)
    mailing_list = await audience.CreateList(audience_pb2.CreateListRequest(name="Tracked"), metadata=metadata)
    subscriber = await audience.CreateSubscriber(
        audience_pb2.CreateSubscriberRequest(
            subscriber=audience_pb2.Subscriber(
                list_id=mailing_list.list_id,
                email_address="ada@example.com",
                status=audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED,
            )
        ),
        metadata=metadata,
    )
    # Ids far above anything the campaign service hands out keep this campaign apart from others.
    campaign_id = 10**12 + secrets.randbelow(10**12)
    # What a worker writes once the message went out (the pipeline arrives with issue 5's workers).
    cursor = await sql.execute(
        "INSERT INTO delivery.recipients (campaign_id, owner_user_id, subscriber_id, email_address, domain, "
        "status, sent_at) VALUES (%s, %s, %s, 'ada@example.com', 'example.com', 'Sent', now()) RETURNING recipient_id",
        (campaign_id, user.user_id, subscriber.subscriber_id),
    )
    row = await cursor.fetchone()
    assert row is not None
    recipient = TrackedRecipient(
        campaign_id=campaign_id,
        recipient_id=int(str(row[0])),
        list_id=mailing_list.list_id,
        subscriber_id=subscriber.subscriber_id,
    )
    return Sent(user, recipient, TrackingLinks(system.base_url, system.env["HERALD_TOKEN_SECRET"]))


async def statistics(
    system: System, delivery: delivery_pb2_grpc.DeliveryServiceStub, sent: Sent
) -> delivery_pb2.CampaignStatistics:
    response = await delivery.BatchGetCampaignStatistics(
        delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=[sent.recipient.campaign_id]),
        metadata=grpc_metadata(system, sent.user.user_id, service="campaign"),
    )
    return response.statistics[0]


def path_of(url: str, system: System) -> str:
    assert url.startswith(system.base_url)
    return url[len(system.base_url) :]


async def test_the_open_pixel_is_a_gif_and_counts_opens(
    system: System, api: Api, delivery: delivery_pb2_grpc.DeliveryServiceStub, sent: Sent
) -> None:
    pixel = sent.links.open_pixel(sent.recipient)
    for _ in range(2):
        async with api.session.get(pixel) as response:
            assert response.status == 200
            assert response.content_type == "image/gif"
            assert "no-store" in response.headers["Cache-Control"]
            assert (await response.read()).startswith(GIF_MAGIC)

    async def counted() -> bool:
        figures = await statistics(system, delivery, sent)
        return (figures.total_opens, figures.unique_opens) == (2, 1)

    assert await eventually(counted)


async def test_a_click_redirects_to_the_signed_url_only_and_counts(
    system: System, api: Api, delivery: delivery_pb2_grpc.DeliveryServiceStub, sent: Sent
) -> None:
    link = sent.links.click(sent.recipient, TARGET)
    async with api.session.get(link, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == TARGET

    token = path_of(link, system).split("/")[3].split("?")[0]
    # Not an open redirect: another URL, no URL, or an open token in a click link answer 404.
    open_token = path_of(sent.links.open_pixel(sent.recipient), system).split("/")[3].removesuffix(".gif")
    for path in (
        f"/t/c/{token}?u=https%3A%2F%2Fevil.example%2F",
        f"/t/c/{token}",
        f"/t/c/{open_token}?u=https%3A%2F%2Fexample.com%2F",
        "/t/c/garbage?u=https%3A%2F%2Fexample.com%2F",
    ):
        async with api.session.get(system.base_url + path, allow_redirects=False) as response:
            assert response.status == 404, path
            assert "Location" not in response.headers

    # A signed URL that would split the Location header is refused; an IRI is percent-encoded.
    key = tracking_key(system.env["HERALD_TOKEN_SECRET"])
    ids = (
        sent.recipient.campaign_id,
        sent.recipient.recipient_id,
        sent.recipient.list_id,
        sent.recipient.subscriber_id,
    )
    injected = "https://example.com/\r\nSet-Cookie: a=b"
    token = sign_tracking("click", *ids, injected, key=key)
    async with api.session.get(
        f"{system.base_url}/t/c/{token}", params={"u": injected}, allow_redirects=False
    ) as response:
        assert response.status == 404
        assert "Set-Cookie" not in response.headers
    iri = "https://example.com/été"
    async with api.session.get(
        f"{system.base_url}/t/c/{sign_tracking('click', *ids, iri, key=key)}",
        params={"u": iri},
        allow_redirects=False,
    ) as response:
        assert response.status == 302
        assert response.headers["Location"] == "https://example.com/%C3%A9t%C3%A9"

    # A link checker's HEAD follows the redirect without counting as a click.
    async with api.session.head(link, allow_redirects=False) as response:
        assert response.status == 302

    async def counted() -> delivery_pb2.CampaignStatistics | None:
        figures = await statistics(system, delivery, sent)
        return figures if figures.total_clicks >= 2 else None

    figures = await eventually(counted)
    assert figures is not None
    assert (figures.total_clicks, figures.unique_clicks) == (2, 1)


async def test_a_forged_pixel_still_shows_but_records_nothing(
    system: System, api: Api, delivery: delivery_pb2_grpc.DeliveryServiceStub, sent: Sent
) -> None:
    forged = sign_tracking(
        "open",
        sent.recipient.campaign_id,
        sent.recipient.recipient_id,
        sent.recipient.list_id,
        sent.recipient.subscriber_id,
        key=tracking_key("not-the-system-secret"),
    )
    async with api.session.get(f"{system.base_url}/t/o/{forged}.gif") as response:
        assert response.status == 200
        assert (await response.read()).startswith(GIF_MAGIC)
    # A real open sent afterwards is recorded; by then the forged one would have been too.
    async with api.session.get(sent.links.open_pixel(sent.recipient)) as response:
        assert response.status == 200

    async def counted() -> delivery_pb2.CampaignStatistics | None:
        figures = await statistics(system, delivery, sent)
        return figures if figures.total_opens else None

    figures = await eventually(counted)
    assert figures is not None and figures.total_opens == 1


async def test_unsubscribe_asks_first_then_one_click_post_unsubscribes(
    system: System,
    api: Api,
    sql: psycopg.AsyncConnection[tuple[object, ...]],
    audience: audience_pb2_grpc.AudienceServiceStub,
    sent: Sent,
) -> None:
    link = sent.links.unsubscribe(sent.recipient)

    async def status() -> int:
        subscriber = await audience.GetSubscriber(
            audience_pb2.GetSubscriberRequest(
                list_id=sent.recipient.list_id, subscriber_id=sent.recipient.subscriber_id
            ),
            metadata=grpc_metadata(system, sent.user.user_id),
        )
        return int(subscriber.status)

    # GET (what a mail scanner does) only asks.
    async with api.session.get(link) as response:
        assert response.status == 200
        page = await response.text()
    assert '<form method="post">' in page
    assert await status() == audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED

    # RFC 8058 one-click, as a mail client sends it; a second time changes nothing and still confirms.
    for _ in range(2):
        async with api.session.post(link, data={"List-Unsubscribe": "One-Click"}) as response:
            assert response.status == 200
            assert "You are unsubscribed" in await response.text()
    assert await status() == audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED

    async def recorded() -> list[tuple[object, ...]]:
        cursor = await sql.execute(
            "SELECT kind FROM delivery.events WHERE campaign_id = %s AND kind = 'unsubscribe'",
            (sent.recipient.campaign_id,),
        )
        return await cursor.fetchall()

    assert await eventually(recorded) == [("unsubscribe",)]


async def test_invalid_unsubscribe_links_are_404(system: System, api: Api, sent: Sent) -> None:
    open_token = path_of(sent.links.open_pixel(sent.recipient), system).split("/")[3].removesuffix(".gif")
    for token in ("garbage", open_token):
        for method in ("GET", "POST"):
            async with api.session.request(method, f"{system.base_url}/t/u/{token}") as response:
                assert response.status == 404, (method, token)


async def test_record_tracking_events_dedupes_keys_and_scopes_to_the_owner(
    system: System, delivery: delivery_pb2_grpc.DeliveryServiceStub, sent: Sent, make_user: object
) -> None:
    event = delivery_pb2.TrackingEvent(
        campaign_id=sent.recipient.campaign_id,
        recipient_id=sent.recipient.recipient_id,
        kind=delivery_pb2.TRACKING_EVENT_KIND_CLICK,
        url="https://example.com/a",
        event_key="retried-report-1",
    )
    request = delivery_pb2.RecordTrackingEventsRequest(events=[event, event])
    # RecordTrackingEvents is internal: these tokens are marked as the translator's, scoped to one user.
    owner = grpc_metadata(system, sent.user.user_id, service="translator")
    assert (await delivery.RecordTrackingEvents(request, metadata=owner)).recorded_count == 1
    assert (await delivery.RecordTrackingEvents(request, metadata=owner)).recorded_count == 0
    # Another user's token records nothing on this campaign; an unknown recipient is skipped.
    stranger = grpc_metadata(system, sent.user.user_id + 10**9, service="translator")
    other = delivery_pb2.TrackingEvent(
        campaign_id=sent.recipient.campaign_id,
        recipient_id=sent.recipient.recipient_id,
        kind=delivery_pb2.TRACKING_EVENT_KIND_OPEN,
    )
    assert (
        await delivery.RecordTrackingEvents(
            delivery_pb2.RecordTrackingEventsRequest(events=[other]), metadata=stranger
        )
    ).recorded_count == 0
    unknown = delivery_pb2.TrackingEvent(
        campaign_id=sent.recipient.campaign_id, recipient_id=10**15, kind=delivery_pb2.TRACKING_EVENT_KIND_OPEN
    )
    assert (
        await delivery.RecordTrackingEvents(
            delivery_pb2.RecordTrackingEventsRequest(events=[unknown]), metadata=owner
        )
    ).recorded_count == 0


async def test_record_tracking_events_names_every_bad_field(
    system: System, delivery: delivery_pb2_grpc.DeliveryServiceStub
) -> None:
    bad = delivery_pb2.RecordTrackingEventsRequest(
        events=[
            delivery_pb2.TrackingEvent(campaign_id=0, recipient_id=1, kind=delivery_pb2.TRACKING_EVENT_KIND_OPEN),
            delivery_pb2.TrackingEvent(campaign_id=1, recipient_id=1),
            delivery_pb2.TrackingEvent(campaign_id=1, recipient_id=1, kind=delivery_pb2.TRACKING_EVENT_KIND_CLICK),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await delivery.RecordTrackingEvents(bad, metadata=grpc_metadata(system, 0, is_admin=True))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert decode_error(caught.value).field_reasons() == [
        ("events[0].campaign_id", "INVALID_CAMPAIGN_ID"),
        ("events[1].kind", "INVALID_EVENT_KIND"),
        ("events[2].url", "INVALID_URL"),
    ]
