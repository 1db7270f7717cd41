"""Entry point of the audience service: migrates the `audience` schema and serves AudienceService (imports included)."""

from __future__ import annotations

from pathlib import Path

import grpc
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from services.audience.api import AudienceService
from services.audience.emails import EmailDirectory
from services.audience.imports import ImportHandler
from services.audience.store import SCHEMA
from services.common import db
from services.common.config import Settings
from services.common.grpcutil import serve


async def main(settings: Settings) -> None:
    engine = db.make_engine(settings)
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))
    emails = EmailDirectory(settings.grpc_addr("campaign"))
    imports = ImportHandler(engine, settings)
    servicer = AudienceService(engine, emails, imports)

    def register(server: grpc.aio.Server) -> list[str]:
        audience_pb2_grpc.add_AudienceServiceServicer_to_server(servicer, server)
        return [audience_pb2.DESCRIPTOR.services_by_name["AudienceService"].full_name]

    async def close() -> None:
        await emails.close()
        await engine.dispose()

    await serve(
        name="audience",
        bind=settings.bind,
        port=settings.audience_grpc_port,
        token_secret=settings.effective_token_secret(),
        register=register,
        # Runs stored import jobs (CreateImport) and keeps every running import's heartbeat.
        background=[imports.run],
        on_stop=close,
    )
