"""The delivery.campaign_finished consumer: a Sending campaign whose recipients were all handled becomes Sent or Failed.

A Recursive campaign becomes Ready again, due at its next occurrence, until its last one (sending.after_finish).
The change is made under the campaign's row lock and only from Sending, so a redelivered or late event
changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from herald.delivery.v1 import delivery_pb2

from services.campaign import events, sending, store
from services.common import events as herald_events
from services.common.outbox import Outbox

log = structlog.get_logger()

DURABLE = "campaign-campaign-finished"


def campaign_finished_consumer(outbox: Outbox) -> herald_events.Consumer[delivery_pb2.CampaignFinishedEvent]:
    """The durable consumer of delivery.campaign_finished (NatsLink runs it)."""
    return herald_events.Consumer(
        DURABLE, herald_events.CAMPAIGN_FINISHED, CampaignFinishedHandler(outbox).handle, max_deliver=100
    )


class CampaignFinishedHandler:
    """Moves the campaign an occurrence finished for to its status after sending."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def handle(self, event: delivery_pb2.CampaignFinishedEvent) -> None:
        finished = events.campaign_finished(event)
        async with self._outbox.unit_of_work() as work:
            found = await store.sending_campaign_for_update(work.conn, finished.campaign_id, None)
            if found is None:
                log.info("campaign_finished for a deleted campaign", campaign_id=finished.campaign_id)
                return
            campaign, progress = found
            outcome = sending.after_finish(campaign, progress, finished, datetime.now(UTC))
            if outcome is None:
                log.info(
                    "stale campaign_finished ignored",
                    campaign_id=campaign.campaign_id,
                    status=campaign.status.value,
                    occurrence=finished.occurrence,
                )
                return
            after, closed = outcome
            await store.save_sending(work.conn, after, closed)
            events.record_status_change(work, campaign, after)
        log.info(
            "campaign finished sending",
            campaign_id=campaign.campaign_id,
            status=after.status.value,
            reason=finished.reason,
        )
