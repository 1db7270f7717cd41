"""Consumers on a three-server JetStream cluster (tests/cluster.py) ride out the loss of servers.

While two of three servers are down the events stream and its consumer have no quorum: every fetch is
answered 503 (nats-py raises ServiceUnavailableError). The consumer loop must back off and keep fetching, and
handle every event once the servers are back; a NatsLink loop that fails anyway is started again, the process
never stops consuming.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
import pytest_asyncio
import structlog
from herald.campaign.v1 import campaign_pb2
from nats.js import JetStreamContext

from services.common import events
from services.common.config import Settings
from services.common.embedded import EmbeddedNats
from services.common.events import Consumer
from services.common.nats_link import NatsLink
from services.common.natsutil import ReplicasUnsupported, Subjects
from tests.cluster import NatsCluster, placed_on
from tests.conftest import eventually, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    running = NatsCluster(tmp_path_factory.mktemp("cluster"), free_port)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def settings_for(cluster: NatsCluster) -> Settings:
    return Settings(nats_url=cluster.url, nats_namespace=f"c{uuid.uuid4().hex[:10]}", nats_replicas=3)


@contextlib.asynccontextmanager
async def running_link(link: NatsLink) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def publish(js: JetStreamContext, subjects: Subjects, campaign_id: int) -> None:
    """Publishes a campaign.deleted event, retrying while the stream elects a leader."""
    event = campaign_pb2.CampaignDeletedEvent(owner_user_id=1, campaign_ids=[campaign_id])
    while True:
        try:
            await js.publish(
                subjects.event(events.CAMPAIGN_DELETED),
                events.CAMPAIGN_DELETED.encode(event),
                headers={"Nats-Msg-Id": f"deleted-{campaign_id}"},
                timeout=2,
            )
            return
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_cleanup(cluster: NatsCluster) -> AsyncIterator[None]:
    yield
    # Whatever a test killed runs again for the next one.
    for server in cluster.servers:
        cluster.start_server(server.name)
    await cluster.wait_for_jetstream()


async def test_a_consumer_keeps_consuming_through_503s_while_the_stream_has_no_quorum(
    cluster: NatsCluster, cluster_cleanup: None
) -> None:
    settings = settings_for(cluster)
    subjects = Subjects.of(settings)
    handled: list[int] = []

    async def handle(event: campaign_pb2.CampaignDeletedEvent) -> None:
        handled.extend(event.campaign_ids)

    consumer = Consumer("cluster-test", events.CAMPAIGN_DELETED, handle)
    survivor = cluster.servers[2].name
    client = await nats.connect(cluster.client_url(survivor))
    js = client.jetstream()
    try:
        with structlog.testing.capture_logs() as logged:
            async with running_link(NatsLink(settings, "cluster-test", consumers=[consumer])) as task:

                async def consumer_exists() -> bool:
                    try:
                        info = await js.consumer_info(subjects.events_stream, subjects.durable("cluster-test"))
                    except nats.errors.Error:
                        return False
                    # Replicated as the stream is: a leader and two followers.
                    return len(placed_on(info.cluster)) == 3

                assert await eventually(consumer_exists, within=30)
                for campaign_id in range(1, 11):
                    await publish(js, subjects, campaign_id)
                assert await eventually(lambda: _async(len(handled) >= 10), within=20), handled

                # Two of three down: no quorum, the consumer's fetches are answered 503.
                for server in cluster.servers[:2]:
                    cluster.kill(server.name)

                def saw_503() -> bool:
                    return any(
                        entry["event"] == "event fetch failed; retrying"
                        and "ServiceUnavailableError" in str(entry.get("error"))
                        for entry in logged
                    )

                assert await eventually(lambda: _async(saw_503()), within=30), logged[-5:]
                await asyncio.sleep(2)  # a few more 503s
                assert not task.done()

                for server in cluster.servers[:2]:
                    cluster.start_server(server.name)
                for campaign_id in range(11, 21):
                    await publish(js, subjects, campaign_id)
                assert await eventually(lambda: _async(set(handled) >= set(range(1, 21))), within=60), handled
                assert not task.done()
    finally:
        await client.close()
    assert sorted(set(handled)) == list(range(1, 21))


async def test_a_loop_that_fails_anyway_is_started_again_not_dropped(cluster: NatsCluster) -> None:
    settings = settings_for(cluster)
    runs: list[str] = []
    second_run = asyncio.Event()

    async def flaky(js: JetStreamContext, subjects: Subjects, stop: asyncio.Event) -> None:
        runs.append("run")
        if len(runs) == 1:
            # What a JetStream error no loop expected would do.
            raise nats.js.errors.ServiceUnavailableError(description="JetStream system temporarily unavailable")
        second_run.set()
        await stop.wait()

    async with running_link(NatsLink(settings, "cluster-test", tasks=[flaky])) as task:
        await asyncio.wait_for(second_run.wait(), 30)
        assert not task.done()
    assert runs == ["run", "run"]


async def _async(value: bool) -> bool:
    return value


async def test_more_than_one_replica_on_a_single_server_is_refused_not_retried_forever(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = EmbeddedNats(tmp_path_factory.mktemp("single"), free_port())
    url = await asyncio.to_thread(server.start)
    try:
        settings = Settings(nats_url=url, nats_namespace=f"c{uuid.uuid4().hex[:10]}", nats_replicas=3)
        with pytest.raises(ReplicasUnsupported, match="HERALD_NATS_REPLICAS"):
            await asyncio.wait_for(NatsLink(settings, "single").run(asyncio.Event()), 30)
    finally:
        await asyncio.to_thread(server.stop)
