"""Entry point of the audience service; its data and methods arrive with issue 4, until then every method is UNIMPLEMENTED."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from services.common import db
from services.common.config import Settings
from services.common.grpcutil import serve

SCHEMA = "audience"


class DraftAudienceService(audience_pb2_grpc.AudienceServiceServicer):
    """Answers UNIMPLEMENTED until issue 4 lands: nothing here pretends to work."""

    async def CountRecipients(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "CountRecipients arrives with issue 4")


async def main(settings: Settings) -> None:
    engine = db.make_engine(settings, pool_size=2)
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))

    def register(server: grpc.aio.Server) -> list[str]:
        audience_pb2_grpc.add_AudienceServiceServicer_to_server(DraftAudienceService(), server)
        return [audience_pb2.DESCRIPTOR.services_by_name["AudienceService"].full_name]

    await serve(
        name="audience",
        bind=settings.bind,
        port=settings.audience_grpc_port,
        token_secret=settings.effective_token_secret(),
        register=register,
        on_stop=engine.dispose,
    )
