"""The campaign.deleted consumer: drops the assignments of campaigns the campaign service has deleted."""

from __future__ import annotations

import asyncio

import structlog
from herald.campaign.v1 import campaign_pb2
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import events, natsutil
from services.common.config import Settings
from services.tag import domain, store

log = structlog.get_logger()

DURABLE = "tag-campaign-deleted"


class CampaignDeletedConsumer:
    """A durable JetStream consumer that runs until `stop`, outliving NATS outages and a NATS that is not up yet."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._subjects = natsutil.Subjects.of(settings)
        self._client: Client | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self._client = await natsutil.connect_unless_stopped(self._settings, "tag", stop)
        if self._client is None:
            return
        log.info("campaign.deleted consumer connected to NATS")
        await events.consume(
            self._client.jetstream(),
            self._subjects,
            durable=DURABLE,
            event=events.CAMPAIGN_DELETED,
            handle=self.handle,
            stop=stop,
            max_deliver=100,
        )

    async def handle(self, event: campaign_pb2.CampaignDeletedEvent) -> None:
        """Deletes the assignments of the deleted campaigns; a redelivered event deletes nothing more."""
        campaign_ids = domain.unique_ids(event.campaign_ids)
        async with self._engine.begin() as conn:
            removed = await store.deleted_campaign_assignment_count(conn, event.owner_user_id, campaign_ids)
        log.info(
            "assignments of deleted campaigns removed",
            owner_user_id=event.owner_user_id,
            campaigns=len(campaign_ids),
            removed=removed,
        )

    async def close(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.close()
