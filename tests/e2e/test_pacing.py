"""Pacing end to end (services/delivery/pacing.py): a campaign half to a domain limited to 20 messages a second for the
whole fleet (two workers), half to an unlimited domain, interleaved in every batch. The unlimited half is not held
back by the limited one: it has all arrived before the limited domain has got half of its messages. Nobody is
missed or sent twice, and a recipient set aside for want of a token is not counted as an attempt."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from tests.conftest import Backing, User
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    assert_each_received_once,
    campaign_get,
    create_list,
    delivery_herald,
    import_people,
    people,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIMITED = f"limited-{uuid.uuid4().hex[:8]}.example"
GROUPED = f"grouped-{uuid.uuid4().hex[:8]}.example"
RATE = 20


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def herald(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DeliveryHerald]:
    env = {
        "HERALD_DELIVERY_DOMAIN_RATES": f"{LIMITED}+{GROUPED}={RATE}",
        # Windows of 25 (one batch) per lane: each window holds limited and unlimited recipients together.
        "HERALD_DELIVERY_BATCH_SIZE": "50",
        "HERALD_DELIVERY_CONCURRENCY": "50",
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
