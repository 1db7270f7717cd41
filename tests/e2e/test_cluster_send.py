"""A send on a three-server JetStream cluster (tests/cluster.py) whose batch-stream leader is killed mid-send.

Herald runs with HERALD_NATS_REPLICAS=3 against three nats-servers; every stream and durable consumer it
creates has a leader and two followers. Mid-send the server leading `<NS>_DELIVERY_BATCHES` gets SIGKILL. The
campaign must still end Sent with every recipient delivered exactly once at the SMTP recorder; ambiguous rows
(claimed, not confirmed) are allowed only within the bound of docs/operations.md ("A JetStream cluster under
faults"), each Failed with an "ambiguous" reason. The pause (the longest time without a delivered message
after the kill) is printed, not asserted: timings belong in bench/cluster.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
import pytest_asyncio
from herald.delivery.v1 import delivery_pb2

from tests.cluster import NatsCluster, placed_on
from tests.conftest import Backing, free_port
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    audience,
    campaign_get,
    delivery_herald,
    queued_recipients,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

RECIPIENTS = 5_000
# Two workers, each with CONCURRENCY SMTP sessions and PARALLEL batch lanes.
WORKERS, CONCURRENCY, PARALLEL = 2, 8, 2
CLUSTER_ENV = {
    "HERALD_NATS_REPLICAS": "3",
    "HERALD_DELIVERY_WORKERS": str(WORKERS),
    "HERALD_DELIVERY_BATCH_SIZE": "100",
    "HERALD_DELIVERY_CONCURRENCY": str(CONCURRENCY),
    "HERALD_DELIVERY_PARALLEL_BATCHES": str(PARALLEL),
    # Longer than a leader election (a few seconds): a batch being worked on is not handed to another
    # worker only because its heartbeats went nowhere while the stream moved.
    "HERALD_DELIVERY_ACK_WAIT_SECONDS": "15",
}


def ambiguous_bound(workers: int, concurrency: int, parallel: int) -> int:
    """Rows that may end ambiguous after one fault: what every worker may have claimed and not yet confirmed
    (a window per batch lane and one of due retries, as bench/chaos.py counts for a killed worker)."""
    return workers * (concurrency + -(-concurrency // parallel))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    running = NatsCluster(tmp_path_factory.mktemp("cluster"), free_port)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def herald(
    backing: Backing, cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DeliveryHerald]:
    tmp = tmp_path_factory.mktemp("cluster-herald")
    async with delivery_herald(backing, tmp, CLUSTER_ENV, nats_url=cluster.url) as running:
        yield running


async def herald_streams(cluster: NatsCluster, namespace: str) -> dict[str, set[str]]:
    """Every stream and durable consumer of the install, by name, with the servers it is placed on."""
    client = await nats.connect(cluster.client_url())
    try:
        js = client.jetstream()
        placed: dict[str, set[str]] = {}
        for stream in await js.streams_info():
            if not stream.config.name or not stream.config.name.startswith(f"{namespace.upper()}_"):
                continue
            placed[stream.config.name] = placed_on(stream.cluster)
            for consumer in await js.consumers_info(stream.config.name):
                placed[f"{stream.config.name}/{consumer.name}"] = placed_on(consumer.cluster)
        return placed
    finally:
        await client.close()


async def test_killing_the_batch_stream_leader_mid_send_loses_and_duplicates_nobody(
    herald: DeliveryHerald, cluster: NatsCluster
) -> None:
    namespace = herald.system.env["HERALD_NATS_NAMESPACE"]
    user = await herald.new_user()
    domain, subscribers, list_id = await audience(herald, user, RECIPIENTS)
    campaign_id = await started_campaign(herald, user, [list_id], name="Cluster")

    assert await herald.recorder.wait_for(domain, RECIPIENTS // 5, within=60) >= RECIPIENTS // 5
    leader = await cluster.stream_leader(f"{namespace.upper()}_DELIVERY_BATCHES")
    killed_at = asyncio.get_running_loop().time()
    cluster.kill(leader)
    delivered_at_kill = len(herald.recorder.messages_to(domain))

    await wait_for_status(herald.api, user, campaign_id, "Sent", within=120)

    received = herald.recorder.counts(domain)
    rows = await queued_recipients(herald.system, user, campaign_id)
    states = Counter(row.state for row in rows)
    ambiguous = {
        row.email_address.lower()
        for row in rows
        if row.state == delivery_pb2.RECIPIENT_STATE_FAILED and "ambiguous" in row.last_error
    }
    addresses = [person.email.lower() for person in subscribers]
    lost = [address for address in addresses if received[address] == 0 and address not in ambiguous]
    duplicated = [address for address in addresses if received[address] > 1]
    bound = ambiguous_bound(WORKERS, CONCURRENCY, PARALLEL)

    times = sorted(message.accepted_at for message in herald.recorder.messages_to(domain))
    after = [t for t in times if t >= killed_at]
    before = [t for t in times if t < killed_at]
    pause = max(
        (later - earlier for earlier, later in zip([before[-1], *after], after, strict=False)), default=0.0
    )
    print(
        f"\ncluster send: {RECIPIENTS:,} recipients, leader {leader} of the batch stream killed after "
        f"{delivered_at_kill:,} deliveries; pause {pause:.2f} s; lost {len(lost)}, duplicated {len(duplicated)}, "
        f"ambiguous {len(ambiguous)} (at most {bound})"
    )

    assert not duplicated, f"{len(duplicated)} recipients got two messages: {duplicated[:10]}"
    assert not lost, f"{len(lost)} recipients got nothing: {lost[:10]}"
    assert len(ambiguous) <= bound, len(ambiguous)
    assert len(rows) == RECIPIENTS
    assert set(states) <= {delivery_pb2.RECIPIENT_STATE_SENT, delivery_pb2.RECIPIENT_STATE_FAILED}, states
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert campaign["TotalSent"] + campaign["TotalFailed"] == RECIPIENTS, campaign
    assert campaign["TotalFailed"] == len(ambiguous), campaign

    # Every stream and durable consumer Herald created is replicated on the three servers.
    placed = await herald_streams(cluster, namespace)
    expected = {f"{namespace.upper()}_{name}" for name in ("EVENTS", "DELIVERY_BATCHES", "DELIVERY_RETRIES")}
    assert expected <= set(placed), placed
    assert any("/" in name for name in placed), placed
    servers = {server.name for server in cluster.servers}
    assert {name: on for name, on in placed.items() if on != servers} == {}
