"""Entry point of the delivery service: migrates the `delivery` schema, serves DeliveryService and EventWebhookService, runs the send queue (services/delivery/queue.py) and its batch feeder (services/delivery/feeder.py), the opt-in confirmations (services/delivery/opt_in.py) and the email previews (services/delivery/preview.py) on its NATS link, the split-test decider (services/delivery/split_tests.py) and the event webhooks (services/delivery/event_webhook_sender.py)."""

from __future__ import annotations

from pathlib import Path

import grpc
from herald.campaign.v1 import campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc, event_webhooks_pb2, event_webhooks_pb2_grpc

from services.common import db, grpcutil, health
from services.common.config import Settings
from services.common.grpcutil import serve
from services.common.live_nats import LiveNats
from services.common.nats_link import NatsLink
from services.common.natsutil import Subjects
from services.common.outbox import Outbox
from services.delivery import dkim, retries, streams
from services.delivery.api import DeliveryService
from services.delivery.event_webhook_api import EventWebhookService
from services.delivery.event_webhook_sender import DURABLE as EVENT_WEBHOOKS_DURABLE
from services.delivery.event_webhook_sender import EventWebhookSender, SecretSeal
from services.delivery.feeder import BatchFeeder
from services.delivery.opt_in import OptInConfirmations
from services.delivery.preview import EmailPreviews
from services.delivery.queue import DeliveryQueue
from services.delivery.retry_sweeper import RetrySweeper
from services.delivery.split_tests import SplitTestDecider
from services.delivery.store import SCHEMA


async def main(settings: Settings) -> None:
    engine = db.make_engine(settings)
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))
    subjects = Subjects.of(settings)
    outbox = Outbox(
        engine, SCHEMA, subjects, with_headers=True, unordered_prefix=retries.schedules_prefix(subjects)
    )
    feeder = BatchFeeder(outbox)
    queue = DeliveryQueue(engine, settings, outbox, feeder)
    confirmations = OptInConfirmations(settings, outbox)
    previews = EmailPreviews(settings, outbox)
    decider = SplitTestDecider(outbox, settings)
    sweeper = RetrySweeper(outbox, settings)
    key_seal = dkim.KeySeal(settings.effective_token_secret())
    secret_seal = SecretSeal(settings.effective_token_secret())
    event_webhooks = EventWebhookSender(engine, settings, secret_seal)
    nats = NatsLink(
        settings,
        "delivery",
        outbox=outbox,
        consumers=[*queue.consumers(), *confirmations.consumers(), *previews.consumers()],
        streams=streams.STREAMS,
        tasks=[event_webhooks.ingest, feeder.run],
        task_consumers={EVENT_WEBHOOKS_DURABLE: lambda subjects: subjects.events_stream},
    )

    async def close() -> None:
        await queue.close()
        await confirmations.close()
        await previews.close()
        await campaign_channel.close()
        await engine.dispose()

    # StreamDeliveryEvents' consumers, on a connection of their own; the campaign service says whose a campaign is.
    live = LiveNats(settings, "delivery-events")
    campaign_channel = grpcutil.channel(settings.grpc_addr("campaign"))

    def register(server: grpc.aio.Server) -> list[str]:
        delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(
            DeliveryService(
                engine,
                queue,
                outbox,
                key_seal=key_seal,
                live=live,
                campaigns=campaign_pb2_grpc.CampaignServiceStub(campaign_channel),
            ),
            server,
        )
        event_webhooks_pb2_grpc.add_EventWebhookServiceServicer_to_server(
            EventWebhookService(engine, settings, secret_seal), server
        )
        return [
            delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
            event_webhooks_pb2.DESCRIPTOR.services_by_name["EventWebhookService"].full_name,
        ]

    # Readiness and gRPC health (services/common/health.py): this service's PostgreSQL and NATS.
    health.PROCESS.add("postgresql", health.postgres_check(settings, "delivery"))
    health.PROCESS.add("nats", nats.check)

    await serve(
        name="delivery",
        bind=settings.bind,
        port=settings.delivery_grpc_port,
        token_secret=settings.effective_token_secret(),
        register=register,
        background=[nats.run, decider.run, sweeper.run, queue.sample_queue_rows, live.run, event_webhooks.run],
        on_stop=close,
    )
