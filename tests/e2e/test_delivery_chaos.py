"""Delivery under failure: a worker killed with SIGKILL mid-batch, NATS restarted mid-send; checked at the SMTP server.

Nobody may get two messages. After a kill, the rows the killed worker had claimed but not
confirmed are resolved visibly (Failed, with an "ambiguous" reason, in ListQueuedRecipients and
the statistics) instead of being resent blindly; everybody else is delivered, and the supervisor
starts a new worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

import pytest
import pytest_asyncio
from herald.delivery.v1 import delivery_pb2

from tests.conftest import User
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    assert_counts_match_queue,
    assert_each_received_once,
    assert_nobody_twice,
    audience,
    campaign_get,
    eventually,
    queued_recipients,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def herald(delivery_system: DeliveryHerald) -> DeliveryHerald:
    return delivery_system


@pytest_asyncio.fixture(loop_scope="session")
async def user(herald: DeliveryHerald) -> User:
    return await herald.new_user()


def setting(herald: DeliveryHerald, name: str) -> int:
    return int(float(herald.system.env[f"HERALD_DELIVERY_{name}"]))


async def slow_campaign(
    herald: DeliveryHerald, user: User, count: int, seconds_per_message: float
) -> tuple[str, list[str], int]:
    """A started campaign to `count` recipients whose server answers slowly: (domain, addresses, campaign id)."""
    domain, subscribers, list_id = await audience(herald, user, count)
    herald.recorder.slow_down(domain, seconds_per_message)
    campaign_id = await started_campaign(herald, user, [list_id], name="Chaos")
    return domain, [p.email for p in subscribers], campaign_id


async def test_a_worker_killed_mid_batch_loses_nobody_and_sends_nobody_twice(
    herald: DeliveryHerald, user: User
) -> None:
    workers = herald.worker_processes()
    assert len(workers) == 2, workers
    domain, addresses, campaign_id = await slow_campaign(herald, user, 300, 0.03)

    assert await herald.recorder.wait_for(domain, 40, within=20) >= 40
    victim = workers[0]
    os.kill(victim.pid, signal.SIGKILL)

    # The batch comes back after the ack wait, the rest goes on; the campaign ends.
    await wait_for_status(
        herald.api, user, campaign_id, "Sent", within=30 + 2 * setting(herald, "ACK_WAIT_SECONDS")
    )
    assert_nobody_twice(herald.recorder, domain)
    received = herald.recorder.counts(domain)

    rows = await queued_recipients(herald.system, user, campaign_id)
    assert len(rows) == len(addresses)
    states = Counter(row.state for row in rows)
    assert set(states) <= {delivery_pb2.RECIPIENT_STATE_SENT, delivery_pb2.RECIPIENT_STATE_FAILED}, states
    ambiguous = [row for row in rows if row.state == delivery_pb2.RECIPIENT_STATE_FAILED]
    for row in rows:
        if row.state == delivery_pb2.RECIPIENT_STATE_SENT:
            assert received[row.email_address.lower()] == 1, row
        else:
            # Resolved visibly: the reason says the worker stopped mid-send; it may or may not have arrived.
            assert "ambiguous" in row.last_error, row
    # Only the killed worker's in-flight sends can be ambiguous: at most its send concurrency.
    assert len(ambiguous) <= setting(herald, "CONCURRENCY"), len(ambiguous)
    # The stale claims resolved as Failed moved the kept counts exactly as they moved the queue rows.
    assert await assert_counts_match_queue(herald.system, campaign_id) == (
        300,
        states[delivery_pb2.RECIPIENT_STATE_SENT],
        len(ambiguous),
    )
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (
        300,
        states[delivery_pb2.RECIPIENT_STATE_SENT],
        len(ambiguous),
    )

    # The supervisor replaced the killed worker.
    async def replaced() -> bool:
        pids = {process.pid for process in herald.worker_processes()}
        return len(pids) == 2 and victim.pid not in pids

    assert await eventually(replaced, within=10), [p.pid for p in herald.worker_processes()]


async def test_nats_restarting_mid_send_delays_the_campaign_but_loses_and_duplicates_nothing(
    herald: DeliveryHerald, user: User
) -> None:
    domain, addresses, campaign_id = await slow_campaign(herald, user, 300, 0.02)

    assert await herald.recorder.wait_for(domain, 40, within=20) >= 40
    await asyncio.to_thread(herald.nats.stop)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(herald.nats.start)

    await wait_for_status(herald.api, user, campaign_id, "Sent", within=45)
    assert_each_received_once(herald.recorder, domain, addresses)
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (300, 300, 0)
