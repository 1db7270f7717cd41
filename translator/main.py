"""Entry point of the translator: identity store, gRPC stubs, and the aiohttp app on HERALD_HTTP_PORT."""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web
from herald.audience.v1 import audience_pb2_grpc
from herald.campaign.v1 import campaign_pb2_grpc, email_pb2_grpc
from herald.delivery.v1 import delivery_pb2_grpc
from herald.tag.v1 import tag_pb2_grpc

from services.common import health
from services.common.config import SERVICES, Settings
from services.common.grpcutil import channel
from translator.app import make_app
from translator.commands import Stubs
from translator.commands.registry import all_commands
from translator.identity import IdentityStore

log = structlog.get_logger()


async def main(settings: Settings) -> None:
    identity = await IdentityStore.open(settings)
    channels = {
        name: channel(settings.grpc_addr(name), forward_principal=False)
        for name in ("campaign", "tag", "audience", "delivery")
    }
    stubs = Stubs(
        campaign=campaign_pb2_grpc.CampaignServiceStub(channels["campaign"]),
        email=email_pb2_grpc.EmailServiceStub(channels["campaign"]),
        tag=tag_pb2_grpc.TagServiceStub(channels["tag"]),
        audience=audience_pb2_grpc.AudienceServiceStub(channels["audience"]),
        delivery=delivery_pb2_grpc.DeliveryServiceStub(channels["delivery"]),
    )
    # Readiness (/readyz, /healthz; services/common/health.py): the identity database and the services it calls.
    health.PROCESS.add("postgresql", health.postgres_check(settings, "translator"))
    for name in SERVICES:
        health.PROCESS.add(name, health.grpc_check(settings, name))
    app = make_app(identity, stubs, settings.effective_public_url(), all_commands())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.bind, settings.http_port, backlog=1024)
    await site.start()
    log.info("serving", service="translator", address=f"{settings.bind}:{settings.http_port}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await health.PROCESS.runner(settings)(stop)
    log.info("stopping", service="translator")
    await runner.cleanup()
    for ch in channels.values():
        await ch.close()
    await identity.close()
    log.info("stopped", service="translator")
