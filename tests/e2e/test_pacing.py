"""Pacing end to end (services/delivery/pacing.py): a campaign half to a domain limited to 20 messages a second for the
whole fleet (two workers), half to an unlimited domain, interleaved in every batch. The unlimited half is not held
back by the limited one: it has all arrived before the limited domain has got half of its messages. Nobody is
missed or sent twice, and a recipient set aside for want of a token is not counted as an attempt.

A sending domain warming up (HERALD_DELIVERY_WARMUP) sends its day's volume, 5 messages, and no more: the rest of its
campaign waits, Pending with no attempt counted, while another sender's campaign goes out whole."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
import pytest_asyncio

from tests.conftest import Backing, User
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    assert_each_received_once,
    audience,
    campaign_get,
    create_list,
    delivery_herald,
    eventually,
    import_people,
    new_domain,
    people,
    started_campaign,
    status_of,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIMITED = f"limited-{uuid.uuid4().hex[:8]}.example"
GROUPED = f"grouped-{uuid.uuid4().hex[:8]}.example"
RATE = 20
WARMING = f"warming-{uuid.uuid4().hex[:8]}.example"
DAILY = 5


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def herald(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DeliveryHerald]:
    env = {
        "HERALD_DELIVERY_DOMAIN_RATES": f"{LIMITED}+{GROUPED}={RATE}",
        # Windows of 25 (one batch) per lane: each window holds limited and unlimited recipients together.
        "HERALD_DELIVERY_BATCH_SIZE": "50",
        "HERALD_DELIVERY_CONCURRENCY": "50",
        # Today's volume for the warming domain is DAILY messages; from tomorrow on, no cap.
        "HERALD_DELIVERY_WARMUP": f"{WARMING}:{datetime.now(UTC).date().isoformat()}:{DAILY}",
    }
    async with delivery_herald(backing, tmp_path_factory.mktemp("pacing"), env) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def user(herald: DeliveryHerald) -> User:
    return await herald.new_user()


async def test_a_limited_domain_does_not_hold_back_the_others(herald: DeliveryHerald, user: User) -> None:
    free = f"free-{uuid.uuid4().hex[:8]}.example"
    limited, unlimited = people(100, LIMITED), people(100, free)
    list_id = await create_list(herald.api, user)
    # Interleaved: every batch and every window holds both domains.
    await import_people(
        herald.api, user, list_id, [p for pair in zip(limited, unlimited, strict=True) for p in pair]
    )
    campaign_id = await started_campaign(herald, user, [list_id], name="Half limited")

    assert await herald.recorder.wait_for(LIMITED, 100, within=60) == 100
    assert_each_received_once(herald.recorder, LIMITED, [p.email for p in limited])
    assert_each_received_once(herald.recorder, free, [p.email for p in unlimited])
    # The unlimited domain's last message came before the limited domain's 50th.
    last_free = max(m.accepted_at for m in herald.recorder.messages_to(free))
    limited_times = sorted(m.accepted_at for m in herald.recorder.messages_to(LIMITED))
    assert last_free < limited_times[49], (last_free - limited_times[0], limited_times[49] - limited_times[0])
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=20)
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalSent"], campaign["TotalFailed"]) == (200, 0)
    # Set aside and sent later, yet one attempt each: waiting for a token is no attempt.
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"]) as conn:
        cursor = await conn.execute(
            "SELECT attempts, count(*) FROM delivery.recipients WHERE campaign_id = %s GROUP BY attempts",
            (campaign_id,),
        )
        assert dict(await cursor.fetchall()) == {1: 200}
        cursor = await conn.execute(
            "SELECT rate, ceiling FROM delivery.pacing_buckets WHERE key = %s", (f"domain:{LIMITED}+{GROUPED}",)
        )
        assert await cursor.fetchone() == (RATE, RATE)


async def test_a_warming_up_sending_domain_sends_the_days_volume_and_holds_the_rest(
    herald: DeliveryHerald, user: User
) -> None:
    domain = new_domain()
    readers = people(12, domain)
    list_id = await create_list(herald.api, user)
    await import_people(herald.api, user, list_id, readers)
    campaign_id = await started_campaign(herald, user, [list_id], name="Warming up", sender=f"news@{WARMING}")
    assert await herald.recorder.wait_for(domain, DAILY, within=30) == DAILY

    # Another sender is not held back: its whole campaign arrives meanwhile.
    other_domain, others, other_list = await audience(herald, user, 10)
    await started_campaign(herald, user, [other_list], name="Not warming up")
    assert await herald.recorder.wait_for(other_domain, 10, within=30) == 10
    assert_each_received_once(herald.recorder, other_domain, [p.email for p in others])

    async def held() -> Counter[tuple[str, int, bool]]:
        async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"]) as conn:
            cursor = await conn.execute(
                "SELECT status, attempts, claimed_by IS NULL, count(*) FROM delivery.recipients "
                "WHERE campaign_id = %s GROUP BY 1, 2, 3",
                (campaign_id,),
            )
            return Counter({(status, attempts, free): n for status, attempts, free, n in await cursor.fetchall()})

    # The day's volume went out; the rest wait in the queue, untried and unclaimed, for the next day.
    expected = Counter({("Sent", 1, False): DAILY, ("Pending", 0, True): 12 - DAILY})

    async def settled() -> bool:
        return await held() == expected

    assert await eventually(settled, within=20), await held()
    assert len(herald.recorder.messages_to(domain)) == DAILY
    assert_each_received_once(herald.recorder, domain, [m.recipient for m in herald.recorder.messages_to(domain)])
    assert await status_of(herald.api, user, campaign_id) == "Sending"
