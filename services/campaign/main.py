"""Entry point of the campaign service: migrates its schema, serves CampaignService, EmailService and TemplateService, runs the picker, and links to NATS (outbox relay, campaign_finished consumer)."""

from __future__ import annotations

from pathlib import Path

import grpc
import structlog
from herald.audience.v1 import audience_pb2_grpc
from herald.campaign.v1 import (
    campaign_pb2,
    campaign_pb2_grpc,
    email_pb2,
    email_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
)
from herald.delivery.v1 import delivery_pb2_grpc
from herald.tag.v1 import tag_pb2_grpc

from services.campaign.api import CampaignService
from services.campaign.clock import clock_of
from services.campaign.email_api import EmailService
from services.campaign.picker import Picker
from services.campaign.sending_events import campaign_finished_consumer
from services.campaign.store import SCHEMA
from services.campaign.template_api import TemplateService
from services.common import db, events, grpcutil, health, natsutil
from services.common.config import Settings
from services.common.grpcutil import serve
from services.common.live_nats import LiveNats
from services.common.nats_link import NatsLink
from services.common.outbox import Outbox

log = structlog.get_logger()


async def main(settings: Settings) -> None:
    engine = db.make_engine(settings)
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))
    outbox = Outbox(engine, SCHEMA, natsutil.Subjects.of(settings))
    clock = clock_of(settings)
    picker = Picker(outbox, events.signer_of(events.CAMPAIGN_SEND_REQUESTED, settings), clock)
    # A committed status change may have made a campaign due (Ready + Immediate, a resume).
    outbox.after_publishing(picker.wake)
    # Events wait in the outbox while NATS is away; the API serves meanwhile.
    nats = NatsLink(settings, SCHEMA, outbox=outbox, consumers=[campaign_finished_consumer(outbox, clock)])

    # WatchCampaign's subscriptions, on a connection of their own.
    live = LiveNats(settings, f"{SCHEMA}-watch")

    # One channel per neighbour for the process's life; calls forward the caller's token and deadline.
    tag_channel = grpcutil.channel(settings.grpc_addr("tag"))
    delivery_channel = grpcutil.channel(settings.grpc_addr("delivery"))
    audience_channel = grpcutil.channel(settings.grpc_addr("audience"))
    # A read takes a connection for well under a millisecond: half the main pool's size is plenty.
    reads = db.ReadPool(settings, max(2, settings.db_pool_size // 2), name="campaign-reads")
    await reads.open()
    servicer = CampaignService(
        engine,
        reads,
        outbox,
        tag_pb2_grpc.TagServiceStub(tag_channel),
        delivery_pb2_grpc.DeliveryServiceStub(delivery_channel),
        audience_pb2_grpc.AudienceServiceStub(audience_channel),
        clock,
        live,
        settings.watch_heartbeat_seconds,
    )

    async def close() -> None:
        await tag_channel.close()
        await delivery_channel.close()
        await audience_channel.close()
        await reads.close()
        await engine.dispose()

    def register(server: grpc.aio.Server) -> list[str]:
        campaign_pb2_grpc.add_CampaignServiceServicer_to_server(servicer, server)
        email_pb2_grpc.add_EmailServiceServicer_to_server(
            EmailService(
                engine,
                outbox,
                audience_pb2_grpc.AudienceServiceStub(audience_channel),
                events.signer_of(events.EMAIL_PREVIEW_REQUESTED, settings),
            ),
            server,
        )
        template_pb2_grpc.add_TemplateServiceServicer_to_server(TemplateService(engine), server)
        return [
            campaign_pb2.DESCRIPTOR.services_by_name["CampaignService"].full_name,
            email_pb2.DESCRIPTOR.services_by_name["EmailService"].full_name,
            template_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
        ]

    # Readiness and gRPC health (services/common/health.py): this service's PostgreSQL and NATS.
    health.PROCESS.add("postgresql", health.postgres_check(settings, "campaign"))
    health.PROCESS.add("nats", nats.check)

    await serve(
        name="campaign",
        bind=settings.bind,
        port=settings.campaign_grpc_port,
        token_secret=settings.effective_token_secret(),
        register=register,
        background=[nats.run, picker.run, live.run],
        on_stop=close,
    )
