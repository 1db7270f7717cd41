"""Queueing in chunks (services/delivery/queue.py): a large audience is queued chunk by chunk, each chunk committed
on its own (the feeder publishes its batches, services/delivery/feeder.py), and still reaches every address once.

The delivery Herald of these tests queues 100 recipients per chunk (TEST_DELIVERY_ENV), so a few hundred
subscribers make several chunks.
"""

from __future__ import annotations

import os
import signal

import psutil
import psycopg
import pytest

from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    Person,
    assert_counts_match_queue,
    assert_each_received_once,
    audience,
    campaign_get,
    create_list,
    eventually,
    import_people,
    new_domain,
    people,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_audience_of_several_chunks_with_addresses_on_two_lists_reaches_each_address_once(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    domain = new_domain()
    first = people(250, domain)
    # The second list repeats 100 addresses of the first (some in capitals), which later chunks must leave out.
    second = [
        Person(person.email.upper() if n % 2 else person.email, person.first_name)
        for n, person in enumerate(people(100, domain, start=150))
    ] + people(150, domain, start=250)
    first_list = await create_list(herald.api, user, "First")
    second_list = await create_list(herald.api, user, "Second")
    await import_people(herald.api, user, first_list, first)
    await import_people(herald.api, user, second_list, second)

    campaign_id = await started_campaign(herald, user, [first_list, second_list], name="Chunked")
    assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=60) == "Sent"

    addresses = [person.email for person in people(400, domain)]
    assert_each_received_once(herald.recorder, domain, addresses)
    rows, sent, failed = await assert_counts_match_queue(herald.system, campaign_id)
    assert (rows, sent, failed) == (400, 400, 0)
    statistics = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert statistics["TotalRecipients"] == 400
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(DISTINCT queued_at) FROM delivery.recipients WHERE campaign_id = %(c)s",
            {"c": campaign_id},
        )
        row = await cursor.fetchone()
        assert row is not None
        # Each chunk is a transaction of its own (queued_at is its start): 500 streamed rows make 5 chunks.
        assert row[0] >= 4
        run = await (
            await conn.execute(
                "SELECT queueing_after, queueing_rows FROM delivery.campaign_runs WHERE campaign_id = %(c)s",
                {"c": campaign_id},
            )
        ).fetchone()
        assert run == (None, 0)
        # The repeated addresses were queued from the first list, whose subscribers come first.
        repeated = await (
            await conn.execute(
                "SELECT DISTINCT list_id FROM delivery.recipients WHERE campaign_id = %(c)s "
                "AND lower(email_address) = ANY(%(a)s)",
                {"c": campaign_id, "a": [f"r{n}@{domain}" for n in range(150, 250)]},
            )
        ).fetchall()
        assert repeated == [(first_list,)]


async def test_a_campaign_started_while_another_large_one_sends_is_not_held_back_until_that_one_ends(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    first_domain, second_domain = new_domain(), new_domain()
    first_people, second_people = people(2000, first_domain), people(300, second_domain)
    first_list = await create_list(herald.api, user, "Large")
    second_list = await create_list(herald.api, user, "Small")
    await import_people(herald.api, user, first_list, first_people, within=120)
    await import_people(herald.api, user, second_list, second_people)
    # Slow enough that the large campaign takes a while: its queueing keeps only two chunks ahead of its sending.
    herald.recorder.slow_down(first_domain, 0.05)
    herald.recorder.slow_down(second_domain, 0.05)

    first = await started_campaign(herald, user, [first_list], name="Large")
    assert await herald.recorder.wait_for(first_domain, 1, within=60) >= 1
    second = await started_campaign(herald, user, [second_list], name="Small")
    assert await wait_for_status(herald.api, user, second, "Sent", within=120) == "Sent"
    assert await wait_for_status(herald.api, user, first, "Sent", within=180) == "Sent"

    assert_each_received_once(herald.recorder, first_domain, [person.email for person in first_people])
    assert_each_received_once(herald.recorder, second_domain, [person.email for person in second_people])
    # The small campaign's first message came while most of the large one was still to send (had its whole queue
    # gone into the stream first, its first message would have waited for nearly all 2,000).
    second_first = min(received.accepted_at for received in herald.recorder.messages_to(second_domain))
    first_before = sum(
        1 for received in herald.recorder.messages_to(first_domain) if received.accepted_at < second_first
    )
    assert first_before < 1500, first_before


async def test_a_delivery_service_killed_while_queueing_resumes_after_the_last_chunk_and_queues_nobody_twice(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    domain, subscribers, list_id = await audience(herald, user, 600)
    # Slow sending keeps the queueing waiting for room (two chunks of 100 ahead at most): it is midway for a while.
    herald.recorder.slow_down(domain, 0.05)
    campaign_id = await started_campaign(herald, user, [list_id], name="Killed while queueing")
    assert await herald.recorder.wait_for(domain, 20, within=60) >= 20
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT queueing_after FROM delivery.campaign_runs WHERE campaign_id = %(c)s", {"c": campaign_id}
            )
        ).fetchone()
    assert row is not None and row[0] is not None, "the campaign was queued before the service could be killed"
    service = next(
        child
        for child in psutil.Process(herald.system.process.pid).children(recursive=True)
        if " ".join(child.cmdline()).endswith("serve delivery")
    )
    os.kill(service.pid, signal.SIGKILL)

    # The supervisor starts it again; the send request comes back and the stream goes on after the cursor.
    # (campaign.get answers "component unavailable" until the service is back.)
    async def sent() -> bool:
        status, body = await herald.api.post(
            {"Command": "campaign.get", "APIKey": user.api_key, "CampaignID": campaign_id}
        )
        return status == 200 and body["Campaign"]["CampaignStatus"] == "Sent"

    assert await eventually(sent, within=180)
    assert_each_received_once(herald.recorder, domain, [person.email for person in subscribers])
    assert await assert_counts_match_queue(herald.system, campaign_id) == (600, 600, 0)
