"""Entry point of the audience service: migrates the `audience` schema, serves AudienceService (imports included) consumes bounce events and relays its outbox."""

from __future__ import annotations

from pathlib import Path

import grpc
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from services.audience.api import AudienceService
from services.audience.emails import EmailDirectory
from services.audience.events import bounce_consumers
from services.audience.imports import ImportHandler
from services.audience.store import SCHEMA
from services.common import db, events, health
from services.common.config import Settings
from services.common.grpcutil import serve
from services.common.nats_link import NatsLink
from services.common.natsutil import Subjects
from services.common.outbox import Outbox


async def main(settings: Settings) -> None:
    engine = db.make_engine(settings)
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))
    emails = EmailDirectory(settings.grpc_addr("campaign"))
    # Opt-in confirmation requests go out through the outbox, with the change that made a subscriber pending.
    outbox = Outbox(engine, SCHEMA, Subjects.of(settings))
    imports = ImportHandler(engine, settings, outbox)
    signer = events.signer_of(events.OPT_IN_CONFIRMATION_REQUESTED, settings)
    servicer = AudienceService(engine, emails, imports, outbox, signer)
    # The bounce consumers connect to NATS in the background, so the API serves even while NATS is down.
    nats = NatsLink(
        settings, "audience", outbox=outbox, consumers=bounce_consumers(engine, settings.soft_bounce_limit)
    )

    def register(server: grpc.aio.Server) -> list[str]:
        audience_pb2_grpc.add_AudienceServiceServicer_to_server(servicer, server)
        return [audience_pb2.DESCRIPTOR.services_by_name["AudienceService"].full_name]

    async def close() -> None:
        await emails.close()
        await engine.dispose()

    # Readiness and gRPC health (services/common/health.py): this service's PostgreSQL and NATS.
    health.PROCESS.add("postgresql", health.postgres_check(settings, "audience"))
    health.PROCESS.add("nats", nats.check)

    await serve(
        name="audience",
        bind=settings.bind,
        port=settings.audience_grpc_port,
        token_secret=settings.effective_token_secret(),
        register=register,
        # Runs stored import jobs (CreateImport) and keeps every running import's heartbeat; applies
        # delivery's bounce and delivery events (services/audience/events.py).
        background=[imports.run, nats.run],
        on_stop=close,
    )
