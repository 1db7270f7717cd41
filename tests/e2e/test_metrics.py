"""Every process of `herald run` serves Prometheus metrics on its own port, and a real send moves them.

A Herald of its own (its own database and NATS, mail to the SMTP recorder in this process, gauges sampled every
half second) sends a campaign in which one recipient is refused (550) and one deferred once (451); a DSN for
another comes back to the bounce receiver, and a tag is created. Then each process's endpoint is scraped, and
the gRPC request counts (server and client side) and Herald's own metrics must have moved in the processes
that did the work. Every metric the Grafana dashboard (deploy/grafana/herald.json) plots must be among those
scraped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests import dashboard
from tests.conftest import Backing
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    audience,
    delivery_herald,
    eventually,
    ok,
    started_campaign,
    wait_for_status,
)
from tests.e2e.test_bounce_receiver import deliver, dsn_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROCESSES = (
    "translator",
    "campaign",
    "tag",
    "audience",
    "delivery",
    "bounce-receiver",
    "delivery-worker-1",
    "delivery-worker-2",
)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


class Scrape:
    """What each process's /metrics answered, by process name."""

    def __init__(self, samples: dict[str, list[Sample]], families: dict[str, set[str]]) -> None:
        self.samples = samples
        self.families = families

    def total(self, name: str, processes: tuple[str, ...] | None = None, **labels: str) -> float:
        """The sum of sample `name` over `processes` (all when None), for the samples that have `labels`."""
        return sum(
            sample.value
            for process, samples in self.samples.items()
            if processes is None or process in processes
            for sample in samples
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
        )

    def names(self) -> set[str]:
        """Every sample name and family name any process exported."""
        found: set[str] = set()
        for process in self.samples:
            found |= {sample.name for sample in self.samples[process]} | self.families[process]
        return found


async def scrape(session: aiohttp.ClientSession, urls: Mapping[str, str]) -> Scrape:
    samples: dict[str, list[Sample]] = {}
    families: dict[str, set[str]] = {}
    for process, url in urls.items():
        async with session.get(url) as response:
            assert response.status == 200, (process, url, response.status)
            assert response.content_type == "text/plain", (process, response.content_type)
            text = await response.text()
        parsed = list(text_string_to_metric_families(text))
        families[process] = {family.name for family in parsed}
        samples[process] = [
            Sample(sample.name, dict(sample.labels), sample.value)
            for family in parsed
            for sample in family.samples
        ]
    return Scrape(samples, families)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def herald(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DeliveryHerald]:
    env = {"HERALD_DELIVERY_WORKERS": "2", "HERALD_METRICS_SAMPLE_SECONDS": "0.5"}
    async with delivery_herald(backing, tmp_path_factory.mktemp("metrics"), env) as running:
        yield running


async def test_every_process_serves_metrics_and_a_send_moves_the_grpc_counts_and_heralds_own(
    herald: DeliveryHerald,
) -> None:
    urls = herald.system.metrics_urls()
    assert set(urls) == set(PROCESSES)
    # Each process on a port of its own (the translator on its HTTP port).
    assert len({url.rsplit("/", 1)[0] for url in urls.values()}) == len(urls)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def serving() -> bool:
            # The fixture waits for the translator only; the other processes may still be starting.
            try:
                for url in urls.values():
                    async with session.get(url) as response:
                        if response.status != 200:
                            return False
            except aiohttp.ClientError:
                return False
            return True

        assert await eventually(serving, within=60), "not every process serves its metrics"
        before = await scrape(session, urls)
        api = herald.api
        user = await herald.new_user()
        await ok(api, "tag.create", user.api_key, Tag="metrics")
        domain, subscribers, list_id = await audience(herald, user, 6)
        refused, deferred = subscribers[0].email, subscribers[1].email
        herald.recorder.answer([refused], "550 5.1.1 No such user")
        herald.recorder.answer([deferred], "451 4.3.0 Try again later", attempts=1)
        campaign_id = await started_campaign(herald, user, [list_id], name="Metrics")
        assert await wait_for_status(api, user, campaign_id, "Sent", within=60) == "Sent"
        assert await herald.recorder.wait_for(domain, 5, within=60) == 5
        bounced = next(m for m in herald.recorder.messages_to(domain) if m.recipient == subscribers[2].email)
        code, _ = await deliver(herald, dsn_for(bounced), bounced.sender)
        assert code == 250

        async def moved() -> Scrape | None:
            after = await scrape(session, urls)
            workers = ("delivery-worker-1", "delivery-worker-2")
            sent = after.total("herald_delivery_sent_total", workers) - before.total("herald_delivery_sent_total")
            queue_sent = after.total("herald_delivery_queue_rows", ("delivery",), status="Sent")
            bounces = after.total("herald_delivery_bounces_total") - before.total("herald_delivery_bounces_total")
            return after if sent == 5 and queue_sent >= 5 and bounces >= 2 else None

        after = await eventually(moved, within=30, interval=0.5)
    assert after is not None, "the send's counts did not show in the workers' and delivery's metrics"

    def grew(name: str, processes: tuple[str, ...], **labels: str) -> float:
        return after.total(name, processes, **labels) - before.total(name, processes, **labels)

    workers = ("delivery-worker-1", "delivery-worker-2")
    # gRPC, server side: the methods this send called, in the processes that serve them.
    served = "rpc_server_duration_seconds_count"
    assert grew(served, ("campaign",), rpc_method="UpdateCampaign", rpc_grpc_status_code="OK") >= 1
    assert grew(served, ("tag",), rpc_method="CreateTag", rpc_grpc_status_code="OK") == 1
    assert grew(served, ("audience",), rpc_method="StreamRecipients", rpc_grpc_status_code="OK") == 1
    assert grew(served, ("delivery",), rpc_grpc_status_code="OK") >= 1
    # ... and client side: the translator's calls, delivery's stream from audience, the bounce receiver's report.
    called = "rpc_client_duration_seconds_count"
    assert grew(called, ("translator",), rpc_method="UpdateCampaign", rpc_grpc_status_code="OK") >= 1
    assert grew(called, ("translator",), rpc_method="CreateTag", rpc_grpc_status_code="OK") == 1
    assert grew(called, ("delivery",), rpc_method="StreamRecipients", rpc_grpc_status_code="OK") == 1
    assert grew(called, ("bounce-receiver",), rpc_grpc_status_code="OK") >= 1
    # The histograms' buckets and sums come with the counts.
    assert after.total("rpc_server_duration_seconds_sum", ("campaign",), rpc_method="UpdateCampaign") > 0

    # Herald's own: outcomes at the workers, SMTP reply classes, bounces, the picker.
    assert grew("herald_delivery_failed_total", workers, kind="permanent") == 1
    assert grew("herald_delivery_deferred_total", workers, how="reply") >= 1
    assert grew("herald_delivery_smtp_replies_total", workers, **{"class": "2xx"}) == 5
    assert grew("herald_delivery_smtp_replies_total", workers, **{"class": "5xx"}) == 1
    assert grew("herald_delivery_smtp_replies_total", workers, **{"class": "4xx"}) >= 1
    assert grew("herald_bounce_receiver_messages_total", ("bounce-receiver",), outcome="recorded") == 1
    assert grew("herald_campaign_picker_started_total", ("campaign",)) >= 1
    assert grew("herald_campaign_picker_passes_total", ("campaign",), outcome="ok") >= 1
    assert grew("herald_translator_requests_total", ("translator",), command="campaign.update") >= 1
    # Gauges sampled from PostgreSQL and JetStream, by schema and by durable consumer: present, and drained.
    for process, schema in (("campaign", "campaign"), ("audience", "audience"), ("delivery", "delivery")):
        assert any(
            s.name == "herald_outbox_pending_rows" and s.labels == {"schema": schema}
            for s in after.samples[process]
        ), (process, schema)
        assert after.total("herald_outbox_lag_seconds", (process,), schema=schema) >= 0
    assert after.total("herald_delivery_queue_rows", ("delivery",), status="Failed") >= 1
    for process, durable in (
        ("delivery", "delivery-send-requested"),
        ("campaign", "campaign-campaign-finished"),
        ("tag", "tag-campaign-deleted"),
        ("audience", "audience-recipient-bounced"),
        ("delivery-worker-1", "delivery-workers"),
        ("delivery-worker-2", "delivery-retries"),
    ):
        assert any(
            s.name == "herald_jetstream_consumer_pending" and s.labels.get("durable") == durable
            for s in after.samples[process]
        ), (process, durable, sorted({s.labels.get("durable", "") for s in after.samples[process]}))
    for process, durable in (("delivery-worker-1", "delivery-workers"), ("delivery", "delivery-send-requested")):
        assert any(
            s.name == "herald_jetstream_redeliveries_total" and s.labels == {"durable": durable}
            for s in after.samples[process]
        ), (process, durable)
    # No label names a recipient or a campaign.
    for process, samples in after.samples.items():
        for sample in samples:
            assert not {"campaign", "campaign_id", "recipient", "email", "address"} & set(sample.labels), (
                process,
                sample,
            )

    # The dashboard plots only what Herald exports.
    plotted = dashboard.metric_names()
    assert plotted and plotted <= after.names(), sorted(plotted - after.names())
