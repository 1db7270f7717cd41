"""Entry point of the delivery service; its queue, workers and statistics arrive with issue 5, until then every method is UNIMPLEMENTED."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common import db
from services.common.config import Settings
from services.common.grpcutil import serve

SCHEMA = "delivery"


class DraftDeliveryService(delivery_pb2_grpc.DeliveryServiceServicer):
    """Answers UNIMPLEMENTED until issue 5 lands: nothing here pretends to work."""

    async def BatchGetCampaignStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "BatchGetCampaignStatistics arrives with issue 5")


async def main(settings: Settings) -> None:
    engine = db.make_engine(settings, pool_size=2)
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))

    def register(server: grpc.aio.Server) -> list[str]:
        delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(DraftDeliveryService(), server)
        return [delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"].full_name]

    await serve(
        name="delivery",
        bind=settings.bind,
        port=settings.delivery_grpc_port,
        token_secret=settings.effective_token_secret(),
        register=register,
        on_stop=engine.dispose,
    )
