"""Split tests end to end: the variations go to TestSize % of the recipients, the winner to the rest TestDuration hours later.

Every test sends to recipients of a domain of its own and checks at the recorder (the SMTP server
Herald sends to) who got which variation, that nobody got two messages and nobody is missing. The
test phase lasts whole hours, so a test moves the run's test start back in the database instead of
waiting; the delivery service's split-test decider then sees the winner due within a second.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import grpc
import psycopg
import pytest
import pytest_asyncio
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from tests.conftest import User, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    Person,
    assert_counts_match_queue,
    assert_each_received_once,
    assert_nobody_twice,
    audience,
    campaign_get,
    create_campaign,
    create_email,
    eventually,
    ok,
    queued_recipients,
    send,
    status_of,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

PIXEL = re.compile(r'<img src="([^"]+/[^"]+\.gif)"')
HELD = delivery_pb2.RECIPIENT_STATE_HELD
SENT = delivery_pb2.RECIPIENT_STATE_SENT
DROPPED = delivery_pb2.RECIPIENT_STATE_DROPPED


@pytest.fixture
def herald(delivery_system: DeliveryHerald) -> DeliveryHerald:
    return delivery_system


@pytest_asyncio.fixture(loop_scope="session")
async def user(herald: DeliveryHerald) -> User:
    return await herald.new_user()


async def split_campaign(
    herald: DeliveryHerald, user: User, count: int, *, test_size: int, winner: str
) -> tuple[str, list[Person], int, int, int]:
    """An A/B campaign (A and B, 50/50) with a split test to `count` subscribers of a domain of their own,
    started: (domain, subscribers, campaign id, A's email id, B's email id)."""
    domain, subscribers, list_id = await audience(herald, user, count)
    first = await create_email(herald.api, user, subject="Variation A", name="A")
    second = await create_email(herald.api, user, subject="Variation B", name="B")
    campaign_id = await create_campaign(
        herald.api, user, first, [list_id], name="Split", variations=[(first, 50), (second, 50)]
    )
    await ok(
        herald.api,
        "splittest.create",
        user.api_key,
        CampaignID=campaign_id,
        TestSize=test_size,
        TestDuration=6,
        Winner=winner,
    )
    await send(herald.api, user, campaign_id)
    return domain, subscribers, campaign_id, first, second


async def end_test_phase(herald: DeliveryHerald, campaign_id: int) -> None:
    """Moves the run's test start back beyond its TestDuration, as if the hours had passed."""
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        cursor = await conn.execute(
            "UPDATE delivery.campaign_runs SET test_started_at = test_started_at - interval '7 hours' "
            "WHERE campaign_id = %s AND split_test IS NOT NULL",
            (campaign_id,),
        )
        assert cursor.rowcount == 1, "the run has no split test"


async def delivery_sees(herald: DeliveryHerald, campaign_id: int, state: str) -> None:
    """Waits until the delivery service learned the campaign's status (campaign.status_changed, over NATS)."""

    async def seen() -> bool:
        async with await psycopg.AsyncConnection.connect(
            herald.system.env["DATABASE_URL"], autocommit=True
        ) as conn:
            cursor = await conn.execute(
                "SELECT state FROM delivery.campaign_runs WHERE campaign_id = %s", (campaign_id,)
            )
            row = await cursor.fetchone()
        return row is not None and row[0] == state

    assert await eventually(seen, within=10), f"delivery never saw the campaign {state}"


async def delivery_statistics(
    herald: DeliveryHerald, user: User, campaign_id: int
) -> delivery_pb2.CampaignStatistics:
    async with grpc.aio.insecure_channel(herald.system.grpc_target("delivery")) as channel:
        response = await delivery_pb2_grpc.DeliveryServiceStub(channel).BatchGetCampaignStatistics(
            delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=[campaign_id]),
            metadata=grpc_metadata(herald.system, user.user_id, service="campaign"),
        )
    return response.statistics[0]


async def test_the_test_group_gets_the_variations_and_the_rest_gets_the_winner_once(
    herald: DeliveryHerald, user: User
) -> None:
    domain, subscribers, campaign_id, first, second = await split_campaign(
        herald, user, 50, test_size=20, winner="highest_open_rate"
    )

    # The test phase: 20 % of 50 get a variation, nobody else anything, and the campaign stays Sending.
    assert await herald.recorder.wait_for(domain, 10, within=20) >= 10
    await asyncio.sleep(1.5)
    test_group = herald.recorder.messages_to(domain)
    assert len(test_group) == 10, [m.recipient for m in test_group]
    assert_nobody_twice(herald.recorder, domain)
    subjects = Counter(message.header("Subject") for message in test_group)
    assert subjects == {"Variation A": 5, "Variation B": 5}
    # Drawn over the whole list, not the first ten subscribers.
    received = {message.recipient for message in test_group}
    assert received != {p.email for p in subscribers[:10]}
    rows = await queued_recipients(herald.system, user, campaign_id)
    states = Counter(row.state for row in rows)
    assert states == {SENT: 10, HELD: 40}
    assert all(row.email_id == 0 and row.batch_id == 0 for row in rows if row.state == HELD)
    assert await status_of(herald.api, user, campaign_id) == "Sending"
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (50, 10, 0)
    assert await assert_counts_match_queue(herald.system, campaign_id) == (50, 10, 0)
    standing = (await delivery_statistics(herald, user, campaign_id)).split_test
    assert (standing.test_recipients, standing.held_recipients, standing.winner_email_id) == (10, 40, 0)
    assert not standing.HasField("decide_time")

    # Three of B's five test recipients open it (one of them twice); A, listed first, wins ties only.
    opened = [m for m in test_group if m.header("Subject") == "Variation B"][:3]
    for message in [*opened, opened[0]]:
        match = PIXEL.search(message.text())
        assert match is not None, message.text()
        async with herald.api.session.get(match.group(1)) as response:
            assert response.status == 200

    async def opens_recorded() -> bool:
        return (await delivery_statistics(herald, user, campaign_id)).unique_opens == 3

    assert await eventually(opens_recorded, within=10)
    # Hours have not passed: the decider leaves the test alone.
    await asyncio.sleep(1.5)
    assert len(herald.recorder.messages_to(domain)) == 10

    await end_test_phase(herald, campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert_each_received_once(herald.recorder, domain, [p.email for p in subscribers])
    everyone = herald.recorder.messages_to(domain)
    rest = [m for m in everyone if m.recipient not in received]
    assert len(rest) == 40 and {m.header("Subject") for m in rest} == {"Variation B"}
    rows = await queued_recipients(herald.system, user, campaign_id)
    assert Counter(row.state for row in rows) == {SENT: 50}
    assert Counter(row.email_id for row in rows) == {first: 5, second: 45}

    body = await campaign_get(herald.api, user, campaign_id, SplitABTestStatistics=True)
    campaign = body["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (50, 50, 0)
    assert campaign["UniqueOpens"] == 3 and campaign["TotalOpens"] == 4
    by_email = {entry["EmailID"]: entry for entry in campaign["SplitABTestStatistics"]}
    assert (by_email[first]["TotalRecipients"], by_email[first]["TotalSent"], by_email[first]["UniqueOpens"]) == (
        5,
        5,
        0,
    )
    assert (
        by_email[second]["TotalRecipients"],
        by_email[second]["TotalSent"],
        by_email[second]["UniqueOpens"],
    ) == (45, 45, 3)
    assert (by_email[first]["Winner"], by_email[second]["Winner"]) == (False, True)
    standing = (await delivery_statistics(herald, user, campaign_id)).split_test
    assert (standing.test_recipients, standing.held_recipients, standing.winner_email_id) == (10, 0, second)
    assert standing.HasField("decide_time")
    assert await assert_counts_match_queue(herald.system, campaign_id) == (50, 50, 0)


async def test_without_opens_the_variation_listed_first_wins(herald: DeliveryHerald, user: User) -> None:
    domain, subscribers, campaign_id, first, _ = await split_campaign(
        herald, user, 20, test_size=30, winner="most_unique_clicks"
    )
    assert await herald.recorder.wait_for(domain, 6, within=20) >= 6
    test_group = {m.recipient for m in herald.recorder.messages_to(domain)}
    await end_test_phase(herald, campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert_each_received_once(herald.recorder, domain, [p.email for p in subscribers])
    rest = [m for m in herald.recorder.messages_to(domain) if m.recipient not in test_group]
    assert len(rest) == 14 and {m.header("Subject") for m in rest} == {"Variation A"}
    assert (await delivery_statistics(herald, user, campaign_id)).split_test.winner_email_id == first


async def queue_states(herald: DeliveryHerald, user: User, campaign_id: int) -> Counter[int]:
    return Counter(row.state for row in await queued_recipients(herald.system, user, campaign_id))


async def rest_held_after_test_group(herald: DeliveryHerald, user: User, campaign_id: int) -> bool:
    """Whether the 6 of a 30-recipient, 20 % campaign were sent and the other 24 wait."""

    async def settled() -> bool:
        return await queue_states(herald, user, campaign_id) == {SENT: 6, HELD: 24}

    return bool(await eventually(settled, within=10))


async def test_pause_keeps_the_held_recipients_and_cancel_drops_them(herald: DeliveryHerald, user: User) -> None:
    domain, _, campaign_id, _, _ = await split_campaign(herald, user, 30, test_size=20, winner="highest_open_rate")
    assert await herald.recorder.wait_for(domain, 6, within=20) >= 6
    assert await rest_held_after_test_group(herald, user, campaign_id)
    await ok(herald.api, "campaign.pause", user.api_key, CampaignID=campaign_id)
    assert await status_of(herald.api, user, campaign_id) == "Paused"
    # A paused campaign's winner waits, even once the test phase is over (the decider goes by the
    # status delivery was told, so the test phase ends only once delivery knows of the pause).
    await delivery_sees(herald, campaign_id, "Paused")
    await end_test_phase(herald, campaign_id)
    await asyncio.sleep(2.0)
    assert len(herald.recorder.messages_to(domain)) == 6
    assert await queue_states(herald, user, campaign_id) == {SENT: 6, HELD: 24}

    # Resumed after the test phase: the winner goes out now, then the campaign is Sent.
    await ok(herald.api, "campaign.resume", user.api_key, CampaignID=campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert len(herald.recorder.messages_to(domain)) == 30
    assert_nobody_twice(herald.recorder, domain)

    # Another campaign is cancelled during the wait: its held recipients are dropped and never sent.
    domain, _, campaign_id, _, _ = await split_campaign(herald, user, 30, test_size=20, winner="highest_open_rate")
    assert await herald.recorder.wait_for(domain, 6, within=20) >= 6
    assert await rest_held_after_test_group(herald, user, campaign_id)
    await ok(herald.api, "campaign.cancel", user.api_key, CampaignID=campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Cancelled", within=10)

    async def held_dropped() -> bool:
        return await queue_states(herald, user, campaign_id) == {SENT: 6, DROPPED: 24}

    assert await eventually(held_dropped, within=10)
    await end_test_phase(herald, campaign_id)
    await asyncio.sleep(2.0)
    assert len(herald.recorder.messages_to(domain)) == 6
    assert_nobody_twice(herald.recorder, domain)
    standing = (await delivery_statistics(herald, user, campaign_id)).split_test
    assert (standing.held_recipients, standing.winner_email_id) == (0, 0)
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (30, 6, 0)
