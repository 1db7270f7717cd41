"""The streaming RPCs end to end on a Herald that really sends: WatchCampaign follows a send to Sent with its
counters, and StreamDeliveryEvents gives each recipient's events from JetStream, resumable from a cursor.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc

from services.common.grpcutil import decode_error
from tests.conftest import User, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    audience,
    create_campaign,
    create_email,
    ok,
    send,
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
