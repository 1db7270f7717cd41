"""Two large campaigns at once share the workers (services/delivery/feeder.py).

The Herald of this module queues 1,000 recipients per chunk: when a chunk's batch messages went into the stream as
it committed, two chunks of the first campaign's audience of 3,000 were in the stream before the second's first
batch, and the second waited for nearly all of them. The feeder keeps about two seconds of batches
waiting in the stream and publishes the Sending campaigns' batches in turn, so the second starts within those
seconds and from then on both go out together. A campaign paused while the feeder still holds some of its batches
back reaches everybody once when resumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from tests.conftest import Backing
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    assert_counts_match_queue,
    assert_each_received_once,
    audience,
    create_list,
    delivery_herald,
    import_people,
    new_domain,
    ok,
    people,
    started_campaign,
    status_of,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIRST, SECOND = 3000, 600
# The sink's messages in order are looked at in blocks of this many: each must hold both campaigns.
BLOCK = 150


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def herald(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DeliveryHerald]:
    env = {"HERALD_DELIVERY_QUEUE_CHUNK": "1000", "HERALD_DELIVERY_CONCURRENCY": "8"}
    async with delivery_herald(backing, tmp_path_factory.mktemp("fair-share"), env) as running:
        yield running


async def test_a_second_large_campaign_starts_within_seconds_and_then_both_share_the_workers(
    herald: DeliveryHerald,
) -> None:
    user = await herald.new_user()
    first_domain, second_domain = new_domain(), new_domain()
    first_people, second_people = people(FIRST, first_domain), people(SECOND, second_domain)
    first_list = await create_list(herald.api, user, "First")
    second_list = await create_list(herald.api, user, "Second")
    await import_people(herald.api, user, first_list, first_people, within=120)
    await import_people(herald.api, user, second_list, second_people, within=120)
    # At most 16 messages at a time (8 per worker) of 50 ms each: at most 320 a second, however fast the machine, so
    # the two seconds of batches the feeder keeps ahead are at most 640 messages.
    herald.recorder.slow_down(first_domain, 0.05)
    herald.recorder.slow_down(second_domain, 0.05)

    first = await started_campaign(herald, user, [first_list], name="First")
    assert await herald.recorder.wait_for(first_domain, 100, within=60) >= 100
    second = await started_campaign(herald, user, [second_list], name="Second")
    second_ready = len(herald.recorder.messages_to(first_domain))
    assert await wait_for_status(herald.api, user, second, "Sent", within=120) == "Sent"
    assert await wait_for_status(herald.api, user, first, "Sent", within=120) == "Sent"
    assert_each_received_once(herald.recorder, first_domain, [person.email for person in first_people])
    assert_each_received_once(herald.recorder, second_domain, [person.email for person in second_people])

    arrivals = sorted(
        [(m.accepted_at, 1) for m in herald.recorder.messages_to(first_domain)]
        + [(m.accepted_at, 2) for m in herald.recorder.messages_to(second_domain)]
    )
    order = [campaign for _, campaign in arrivals]
    second_first = order.index(2)
    # The second's first message did not wait for the first campaign's queue: only for the batches waiting in the
    # stream when it was set Ready (about two seconds of sending; the first had 2,900 still to send).
    before = order[:second_first].count(1) - second_ready
    assert before < FIRST // 2, before
    # From then on, until one of them has sent everything, every block of the sink's messages holds both.
    both = order[second_first : min(len(order) - order[::-1].index(c) for c in (1, 2))]
    blocks = [both[n : n + BLOCK] for n in range(0, len(both) - BLOCK + 1, BLOCK)]
    assert len(blocks) >= 4, len(both)
    shares = [block.count(2) / BLOCK for block in blocks]
    assert all(0.15 <= share <= 0.85 for share in shares), shares


async def test_a_campaign_paused_with_batches_not_yet_fed_is_resumed_and_reaches_everybody_once(
    herald: DeliveryHerald,
) -> None:
    user = await herald.new_user()
    domain, subscribers, list_id = await audience(herald, user, 400)
    # At most 16 messages at a time of 0.2 s each, some 80 a second: the feeder keeps about two seconds of batches of
    # 25 ahead, so at the pause about half of the 16 batches are not published yet.
    herald.recorder.slow_down(domain, 0.2)
    campaign_id = await started_campaign(herald, user, [list_id], name="Paused while fed")
    assert await herald.recorder.wait_for(domain, 25, within=60) >= 25
    await ok(herald.api, "campaign.pause", user.api_key, CampaignID=campaign_id)
    assert await status_of(herald.api, user, campaign_id) == "Paused"
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT published_batches, batches FROM delivery.campaign_runs WHERE campaign_id = %(c)s",
                {"c": campaign_id},
            )
        ).fetchone()
    assert row is not None and row[0] < row[1], row  # the resume meets batches the feeder has not published
    await asyncio.sleep(1.5)
    assert len(herald.recorder.messages_to(domain)) < len(subscribers)

    # The resume publishes again what had been published; the feeder publishes the rest under the new generation.
    await ok(herald.api, "campaign.resume", user.api_key, CampaignID=campaign_id)
    assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=60) == "Sent"
    assert_each_received_once(herald.recorder, domain, [person.email for person in subscribers])
    assert await assert_counts_match_queue(herald.system, campaign_id) == (400, 400, 0)
