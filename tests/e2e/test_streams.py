"""The streaming RPCs end to end on a Herald that really sends: WatchCampaign follows a send to Sent with its
counters, and StreamDeliveryEvents gives each recipient's events from JetStream, resumable from a cursor.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import grpc
import nats
import pytest
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.grpcutil import decode_error
from services.common.natsutil import Subjects
from tests.conftest import User, grpc_metadata
from tests.e2e.delivery_helpers import (
    HTML,
    DeliveryHerald,
    audience,
    create_campaign,
    create_email,
    eventually,
    ok,
    queued_recipients,
    send,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _progress(
    herald: DeliveryHerald, user_id: int, campaign_id: int, deadline: float = 60
) -> AsyncIterator[campaign_pb2.CampaignProgress]:
    async with grpc.aio.insecure_channel(herald.system.grpc_target("campaign")) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        call = stub.WatchCampaign(
            campaign_pb2.WatchCampaignRequest(campaign_id=campaign_id),
            metadata=grpc_metadata(herald.system, user_id),
            timeout=deadline,
        )
        async for message in call:
            yield message


async def _draft(herald: DeliveryHerald, user: User) -> int:
    campaign_id: int = (await ok(herald.api, "campaign.create", user.api_key, CampaignName="Draft"))["CampaignID"]
    return campaign_id


async def test_watch_campaign_follows_a_send_to_sent_with_its_counters_and_ends(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    _, subscribers, list_id = await audience(herald, user, 30)
    email_id = await create_email(herald.api, user)
    campaign_id = await create_campaign(herald.api, user, email_id, [list_id], name="Watched")

    received: list[campaign_pb2.CampaignProgress] = []
    first = asyncio.Event()

    async def watch() -> None:
        async for message in _progress(herald, user.user_id, campaign_id):
            received.append(message)
            first.set()

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(first.wait(), 30)
    assert received[0].status == campaign_pb2.CAMPAIGN_STATUS_DRAFT and not received[0].heartbeat
    await send(herald.api, user, campaign_id)
    await asyncio.wait_for(watcher, 60)  # the stream ends by itself after Sent

    last = received[-1]
    assert last.status == campaign_pb2.CAMPAIGN_STATUS_SENT and not last.heartbeat
    assert last.statistics.total_recipients == len(subscribers)
    assert last.statistics.total_sent == len(subscribers)
    # Ready and Sending may be coalesced away on a fast send: a watcher gets the latest state, not every one.
    # Counters only grow, and every change message differs from the one before it.
    changes = [message for message in received if not message.heartbeat]
    sent = [message.statistics.total_sent for message in changes]
    assert sent == sorted(sent)
    for before, after in itertools.pairwise(changes):
        assert (before.status, before.statistics) != (after.status, after.statistics)
    assert all(message.campaign_id == campaign_id and message.HasField("observe_time") for message in received)


async def test_watch_campaign_sends_heartbeats_while_nothing_changes(delivery_system: DeliveryHerald) -> None:
    herald = delivery_system
    user = await herald.new_user()
    campaign_id = await _draft(herald, user)
    received: list[tuple[float, campaign_pb2.CampaignProgress]] = []
    started = time.monotonic()
    # The tests' Herald sends a heartbeat after 1 s of quiet (tests/conftest.py herald_env).
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in _progress(herald, user.user_id, campaign_id, deadline=3.6):
            received.append((time.monotonic() - started, message))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    first, *beats = [message for _, message in received]
    assert not first.heartbeat and first.status == campaign_pb2.CAMPAIGN_STATUS_DRAFT
    assert 2 <= len(beats) <= 4, received
    assert all(beat.heartbeat and beat.status == first.status for beat in beats)
    assert all(beat.statistics == first.statistics for beat in beats)


async def test_watch_campaign_answers_not_found_for_another_users_or_an_unknown_campaign(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    owner, other = await herald.new_user(), await herald.new_user()
    campaign_id = await _draft(herald, owner)
    for user_id, wanted in ((other.user_id, campaign_id), (owner.user_id, 987_654_321_012)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in _progress(herald, user_id, wanted, deadline=10):
                pass
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert decode_error(caught.value).reason == "CAMPAIGN_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in _progress(herald, owner.user_id, 0, deadline=10):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- StreamDeliveryEvents ------------------------------------------------------------------------------------

QUEUED, SENT = delivery_pb2.DELIVERY_EVENT_KIND_QUEUED, delivery_pb2.DELIVERY_EVENT_KIND_SENT


async def _events(
    herald: DeliveryHerald,
    user_id: int,
    *,
    campaign_id: int = 0,
    cursor: str = "",
    since: datetime | None = None,
    until: Callable[[list[delivery_pb2.StreamDeliveryEventsResponse]], bool] = lambda got: False,
    deadline: float = 60,
) -> list[delivery_pb2.StreamDeliveryEventsResponse]:
    """Streams until `until` says enough (then the client leaves), or the deadline passes (then it fails)."""
    request = delivery_pb2.StreamDeliveryEventsRequest(campaign_id=campaign_id, cursor=cursor)
    if since is not None:
        request.start_time.FromDatetime(since)
    got: list[delivery_pb2.StreamDeliveryEventsResponse] = []
    async with grpc.aio.insecure_channel(herald.system.grpc_target("delivery")) as channel:
        call = delivery_pb2_grpc.DeliveryServiceStub(channel).StreamDeliveryEvents(
            request, metadata=grpc_metadata(herald.system, user_id), timeout=deadline
        )
        async for response in call:
            got.append(response)
            if until(got):
                call.cancel()
                break
    return got


def _kinds(got: list[delivery_pb2.StreamDeliveryEventsResponse]) -> Counter[tuple[str, int]]:
    return Counter((response.event.email_address, response.event.kind) for response in got)


def _has_each(
    addresses: list[str], *kinds: int
) -> Callable[[list[delivery_pb2.StreamDeliveryEventsResponse]], bool]:
    def enough(got: list[delivery_pb2.StreamDeliveryEventsResponse]) -> bool:
        seen = _kinds(got)
        return all(seen[(address, kind)] for address in addresses for kind in kinds)

    return enough


async def test_stream_delivery_events_of_a_campaign_gives_queued_and_sent_for_each_recipient(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    _, subscribers, list_id = await audience(herald, user, 12)
    addresses = [person.email for person in subscribers]
    since = datetime.now(UTC)
    campaign_id = await started_campaign(herald, user, [list_id], name="Streamed")
    got = await _events(
        herald, user.user_id, campaign_id=campaign_id, since=since, until=_has_each(addresses, QUEUED, SENT)
    )
    assert _kinds(got) == Counter({(address, kind): 1 for address in addresses for kind in (QUEUED, SENT)})
    for response in got:
        event = response.event
        assert (event.owner_user_id, event.campaign_id) == (user.user_id, campaign_id)
        assert event.recipient_id > 0 and event.subscriber_id > 0 and event.HasField("occur_time")
    # Each recipient is queued before it is sent, and the cursors are distinct.
    order = [(response.event.email_address, response.event.kind) for response in got]
    assert all(order.index((address, QUEUED)) < order.index((address, SENT)) for address in addresses)
    assert len({response.cursor for response in got}) == len(got)


async def test_stream_delivery_events_resumes_after_a_disconnect_missing_nothing_and_repeating_nothing(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    _, subscribers, list_id = await audience(herald, user, 40)
    addresses = [person.email for person in subscribers]
    since = datetime.now(UTC)
    campaign_id = await started_campaign(herald, user, [list_id], name="Resumed")
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=60)
    everything = await _events(
        herald, user.user_id, campaign_id=campaign_id, since=since, until=_has_each(addresses, QUEUED, SENT)
    )
    assert len(everything) == 2 * len(addresses)
    # Leave mid-message (the first message holds every recipient's queued event) and come back, twice.
    first = await _events(
        herald, user.user_id, campaign_id=campaign_id, since=since, until=lambda got: len(got) == 7
    )
    second = await _events(
        herald, user.user_id, campaign_id=campaign_id, cursor=first[-1].cursor, until=lambda got: len(got) == 30
    )
    rest_count = len(everything) - len(first) - len(second)
    rest = await _events(
        herald,
        user.user_id,
        campaign_id=campaign_id,
        cursor=second[-1].cursor,
        until=lambda got: len(got) == rest_count,
    )
    resumed = first + second + rest
    assert [r.event for r in resumed] == [r.event for r in everything]
    assert [r.cursor for r in resumed] == [r.cursor for r in everything]
    # Nothing more comes after the last one.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _events(herald, user.user_id, campaign_id=campaign_id, cursor=rest[-1].cursor, deadline=2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Every call's consumer is gone once it ended, whether the client left or its deadline passed.
    assert await eventually(lambda: _no_stream_consumers_left(herald), within=10)


async def _no_stream_consumers_left(herald: DeliveryHerald) -> bool:
    subjects = Subjects(herald.system.env["HERALD_NATS_NAMESPACE"])
    client = await nats.connect(herald.nats.url)
    try:
        names = [info.name for info in await client.jetstream().consumers_info(subjects.events_stream)]
    finally:
        await client.close()
    return not [name for name in names if "-delivery-events-" in name]


async def test_stream_delivery_events_of_all_campaigns_sees_each_of_the_users_and_nobody_elses(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user, other = await herald.new_user(), await herald.new_user()
    _, mine, list_id = await audience(herald, user, 5)
    _, theirs, their_list = await audience(herald, other, 5)
    since = datetime.now(UTC)
    first = await started_campaign(herald, user, [list_id], name="One")
    await started_campaign(herald, other, [their_list], name="Theirs")
    second = await started_campaign(herald, user, [list_id], name="Two")

    def both_sent(got: list[delivery_pb2.StreamDeliveryEventsResponse]) -> bool:
        sent = Counter(r.event.campaign_id for r in got if r.event.kind == SENT)
        return sent[first] == len(mine) and sent[second] == len(mine)

    got = await _events(herald, user.user_id, since=since, until=both_sent)
    assert {r.event.campaign_id for r in got} == {first, second}
    assert {r.event.owner_user_id for r in got} == {user.user_id}
    assert not {r.event.email_address for r in got} & {person.email for person in theirs}


async def test_stream_delivery_events_refuses_another_users_campaign_and_a_malformed_cursor(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    owner, other = await herald.new_user(), await herald.new_user()
    _, _, list_id = await audience(herald, owner, 2)
    queued = await started_campaign(herald, owner, [list_id], name="Queued")
    await wait_for_status(herald.api, owner, queued, "Sent", within=30)
    draft = await _draft(herald, owner)
    for campaign_id in (queued, draft, 987_654_321_012):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _events(herald, other.user_id, campaign_id=campaign_id, deadline=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, campaign_id
        assert decode_error(caught.value).reason == "CAMPAIGN_NOT_FOUND"
    for cursor in ("nonsense", "djEuMS4w=", "dj.xLjA", "x" * 100):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _events(herald, owner.user_id, campaign_id=queued, cursor=cursor, deadline=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, cursor
        assert decode_error(caught.value).reason == "CURSOR_INVALID"
    # The owner's own draft streams (nothing yet): the call is accepted.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _events(herald, owner.user_id, campaign_id=draft, deadline=2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_opens_clicks_unsubscriptions_bounces_and_complaints_are_streamed(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    domain, subscribers, list_id = await audience(herald, user, 4)
    ann, bob, cid, dan = (person.email for person in subscribers)
    since = datetime.now(UTC)
    html = HTML.replace("</body>", '<a href="https://example.com/article">Read more</a></body>')
    email_id = await create_email(herald.api, user, html=html)
    campaign_id = await create_campaign(herald.api, user, email_id, [list_id], name="Engaged")
    await send(herald.api, user, campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    messages = {m.recipient.lower(): m for m in herald.recorder.messages_to(domain)}

    text = messages[ann.lower()].text()
    opened = re.search(r'https?://[^"\s]+/t/o/[^"\s]+\.gif', text)
    clicked = re.search(r'https?://[^"\s]+/t/c/[^"\s]+', text)
    assert opened is not None and clicked is not None, text
    for url in (opened.group(0), clicked.group(0).replace("&amp;", "&")):
        async with herald.api.session.get(url, allow_redirects=False) as response:
            assert response.status in (200, 302), url
    unsubscribe = re.search(r"<(https?://[^>]+/t/u/[^>]+)>", messages[bob.lower()].header("List-Unsubscribe"))
    assert unsubscribe is not None
    async with herald.api.session.post(unsubscribe.group(1), data={"List-Unsubscribe": "One-Click"}) as response:
        assert response.status == 200
    rows = {row.email_address: row for row in await queued_recipients(herald.system, user, campaign_id)}
    reports = [
        delivery_pb2.BounceReport(
            campaign_id=campaign_id,
            recipient_id=rows[cid].recipient_id,
            event_key=f"dsn:{campaign_id}:{cid}",
            status_code="5.1.1",
            diagnostic="smtp; 550 5.1.1 user unknown",
            source=delivery_pb2.BOUNCE_SOURCE_DSN,
        ),
        delivery_pb2.BounceReport(
            campaign_id=campaign_id,
            recipient_id=rows[dan].recipient_id,
            event_key=f"arf:{campaign_id}:{dan}",
            kind_hint=delivery_pb2.BOUNCE_KIND_COMPLAINT,
            diagnostic="abuse report: spam",
            source=delivery_pb2.BOUNCE_SOURCE_ARF,
        ),
    ]
    async with grpc.aio.insecure_channel(herald.system.grpc_target("delivery")) as channel:
        recorded = await delivery_pb2_grpc.DeliveryServiceStub(channel).RecordBounces(
            delivery_pb2.RecordBouncesRequest(reports=reports),
            # As the bounce receiver calls: an admin principal marked as a Herald process's.
            metadata=grpc_metadata(herald.system, 0, is_admin=True, service="bounce-receiver"),
        )
    assert recorded.recorded_count == 2

    wanted = {
        (ann, delivery_pb2.DELIVERY_EVENT_KIND_OPENED),
        (ann, delivery_pb2.DELIVERY_EVENT_KIND_CLICKED),
        (bob, delivery_pb2.DELIVERY_EVENT_KIND_UNSUBSCRIBED),
        (cid, delivery_pb2.DELIVERY_EVENT_KIND_BOUNCED),
        (dan, delivery_pb2.DELIVERY_EVENT_KIND_COMPLAINED),
    }
    got = await _events(
        herald,
        user.user_id,
        campaign_id=campaign_id,
        since=since,
        until=lambda got: wanted <= set(_kinds(got)),
    )
    by_kind = {(r.event.email_address, r.event.kind): r.event for r in got}
    assert by_kind[(ann, delivery_pb2.DELIVERY_EVENT_KIND_CLICKED)].detail == "https://example.com/article"
    assert by_kind[(cid, delivery_pb2.DELIVERY_EVENT_KIND_BOUNCED)].detail.startswith("hard")
    assert by_kind[(dan, delivery_pb2.DELIVERY_EVENT_KIND_COMPLAINED)].detail.startswith("complaint")
