"""The campaign.deleted consumer: drops the assignments of campaigns the campaign service has deleted."""

from __future__ import annotations

import asyncio

import structlog
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import natsutil
from services.common.config import Settings
from services.tag import domain, store

log = structlog.get_logger()

EVENT = "campaign.deleted"
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
        await natsutil.consume_events(
            self._client.jetstream(), self._subjects, durable=DURABLE, event=EVENT, handle=self.handle, stop=stop
        )

    async def handle(self, payload: bytes) -> None:
        """Deletes the assignments of the deleted campaigns; a redelivered event deletes nothing more."""
        try:
            event = domain.parse_campaigns_deleted(payload)
        except ValueError as exc:
            # Redelivery cannot repair a malformed event, so it is logged and acknowledged.
            log.error(
                "malformed campaign.deleted event dropped",
                error=str(exc),
                payload=payload[:200].decode(errors="replace"),
            )
            return
        if not event.campaign_ids:
            return
        async with self._engine.begin() as conn:
            removed = await store.deleted_campaign_assignment_count(conn, event.owner_user_id, event.campaign_ids)
        log.info(
            "assignments of deleted campaigns removed",
            owner_user_id=event.owner_user_id,
            campaigns=len(event.campaign_ids),
            removed=removed,
        )

    async def close(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.close()
