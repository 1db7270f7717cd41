"""The campaign.deleted consumer: drops the assignments of campaigns the campaign service has deleted."""

from __future__ import annotations

import structlog
from herald.campaign.v1 import campaign_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import events
from services.tag import domain, store

log = structlog.get_logger()

DURABLE = "tag-campaign-deleted"


def campaign_deleted_consumer(engine: AsyncEngine) -> events.Consumer[campaign_pb2.CampaignDeletedEvent]:
    """The durable consumer every tag replica shares (NatsLink runs it)."""
    return events.Consumer(
        DURABLE, events.CAMPAIGN_DELETED, CampaignDeletedHandler(engine).handle, max_deliver=100
    )


class CampaignDeletedHandler:
    """Drops the tag assignments of deleted campaigns."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

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
