"""Entry point of the campaign service: migrates its schema, serves CampaignService and EmailService, and relays its outbox to NATS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import structlog
from herald.audience.v1 import audience_pb2_grpc
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc, email_pb2, email_pb2_grpc
from herald.delivery.v1 import delivery_pb2_grpc
from herald.tag.v1 import tag_pb2_grpc
from nats.js import JetStreamContext

from services.campaign.api import CampaignService
from services.campaign.email_api import EmailService
from services.campaign.picker import Picker
from services.campaign.sending_events import CampaignFinishedConsumer
from services.campaign.store import SCHEMA
from services.common import db, events, grpcutil, natsutil
from services.common.config import Settings
from services.common.grpcutil import serve
from services.common.outbox import Outbox

log = structlog.get_logger()


class EventPublisher:
    """Connects to NATS in the background, retrying until it can, then runs the outbox relay.

    The service answers calls meanwhile: events wait in the outbox table until NATS is reachable.
    """

    def __init__(self, settings: Settings, outbox: Outbox) -> None:
        self._settings = settings
        self._outbox = outbox
        self._subjects = natsutil.Subjects.of(settings)

    async def run(self, stop: asyncio.Event) -> None:
        client = await natsutil.connect_unless_stopped(self._settings, SCHEMA, stop)
        if client is None:
            return
        try:
            js = client.jetstream()
            if not await self._ensure_stream(js, stop):
                return
            log.info("outbox relay started", schema=SCHEMA)
            await self._outbox.relay(js, stop)
        finally:
            await client.close()

    async def _ensure_stream(self, js: JetStreamContext, stop: asyncio.Event) -> bool:
        """Creates or updates the events stream, retrying while JetStream is unavailable; False when stopped first."""
        delay = 0.5
        while not stop.is_set():
            try:
                await natsutil.ensure_events_stream(js, self._subjects)
                return True
            except natsutil.NATS_FAILURES as exc:
                log.warning("cannot set up the events stream yet; retrying", error=str(exc), retry_in=delay)
            await natsutil.sleep_unless_stopped(stop, delay)
            delay = min(delay * 2, 10.0)
        return False


async def main(settings: Settings) -> None:
    engine = db.make_engine(settings)
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))
    outbox = Outbox(engine, SCHEMA, natsutil.Subjects.of(settings))
    publisher = EventPublisher(settings, outbox)
    picker = Picker(outbox, events.signer_of(events.CAMPAIGN_SEND_REQUESTED, settings))
    # A committed status change may have made a campaign due (Ready + Immediate, a resume).
    outbox.after_publishing(picker.wake)
    finished = CampaignFinishedConsumer(outbox, settings)

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
    )

    async def close() -> None:
        await tag_channel.close()
        await delivery_channel.close()
        await audience_channel.close()
        await reads.close()
        await engine.dispose()

    def register(server: grpc.aio.Server) -> list[str]:
        campaign_pb2_grpc.add_CampaignServiceServicer_to_server(servicer, server)
        email_pb2_grpc.add_EmailServiceServicer_to_server(EmailService(engine), server)
        return [
            campaign_pb2.DESCRIPTOR.services_by_name["CampaignService"].full_name,
            email_pb2.DESCRIPTOR.services_by_name["EmailService"].full_name,
        ]

    await serve(
        name="campaign",
        bind=settings.bind,
        port=settings.campaign_grpc_port,
        token_secret=settings.effective_token_secret(),
        register=register,
        background=[publisher.run, picker.run, finished.run],
        on_stop=close,
    )
