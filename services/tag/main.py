"""Entry point of the tag service: migrates the `tag` schema, serves TagService and consumes campaign.deleted."""

from __future__ import annotations

from pathlib import Path

import grpc
from herald.tag.v1 import tag_pb2, tag_pb2_grpc

from services.common import db, health
from services.common.config import Settings
from services.common.grpcutil import serve
from services.common.nats_link import NatsLink
from services.tag.api import TagService
from services.tag.campaigns import CampaignDirectory
from services.tag.events import campaign_deleted_consumer
from services.tag.store import SCHEMA


async def main(settings: Settings) -> None:
    engine = db.make_engine(settings)
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))
    campaigns = CampaignDirectory(settings.grpc_addr("campaign"))
    # The consumer connects to NATS in the background, so the API serves even while NATS is down.
    nats = NatsLink(settings, "tag", consumers=[campaign_deleted_consumer(engine)])

    def register(server: grpc.aio.Server) -> list[str]:
        tag_pb2_grpc.add_TagServiceServicer_to_server(TagService(engine, campaigns), server)
        return [tag_pb2.DESCRIPTOR.services_by_name["TagService"].full_name]

    async def close() -> None:
        await campaigns.close()
        await engine.dispose()

    # Readiness and gRPC health (services/common/health.py): this service's PostgreSQL and NATS.
    health.PROCESS.add("postgresql", health.postgres_check(settings, "tag"))
    health.PROCESS.add("nats", nats.check)

    await serve(
        name="tag",
        bind=settings.bind,
        port=settings.tag_grpc_port,
        token_secret=settings.effective_token_secret(),
        register=register,
        background=[nats.run],
        on_stop=close,
    )
