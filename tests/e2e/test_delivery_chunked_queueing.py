"""Queueing in chunks (services/delivery/queue.py): a large audience is queued chunk by chunk, each chunk committed
with its batch messages, and still reaches every address once.

The delivery Herald of these tests queues 100 recipients per chunk (TEST_DELIVERY_ENV), so a few hundred
subscribers make several chunks.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    Person,
    assert_counts_match_queue,
    assert_each_received_once,
    campaign_get,
    create_list,
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
