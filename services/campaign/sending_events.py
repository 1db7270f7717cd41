"""The delivery.campaign_finished consumer: a Sending campaign whose recipients were all handled becomes Sent or Failed.

A Recursive campaign becomes Ready again, due at its next occurrence, until its last one (sending.after_finish).
The change is made under the campaign's row lock and only from Sending, so a redelivered or late event
changes nothing.

A campaign with AutoResendEnabled that becomes Sent gets its auto-resend in the same transaction
(sending.auto_resend_after, store.inserted_auto_resend_id): a Ready campaign due AutoResendWaitDays later,
which the picker starts like any other and delivery sends to the original's non-openers only. The UNIQUE
column auto_resend_of makes a second creation a no-op, whichever replica handles the event and however
often.
"""

from __future__ import annotations

import structlog
from herald.delivery.v1 import delivery_pb2

from services.campaign import events, sending, store
from services.campaign.clock import Clock
from services.common import events as herald_events
from services.common.outbox import Outbox

log = structlog.get_logger()

DURABLE = "campaign-campaign-finished"


def campaign_finished_consumer(
    outbox: Outbox, clock: Clock
) -> herald_events.Consumer[delivery_pb2.CampaignFinishedEvent]:
    """The durable consumer of delivery.campaign_finished (NatsLink runs it)."""
    return herald_events.Consumer(
        DURABLE, herald_events.CAMPAIGN_FINISHED, CampaignFinishedHandler(outbox, clock).handle, max_deliver=100
    )


class CampaignFinishedHandler:
    """Moves the campaign an occurrence finished for to its status after sending."""

    def __init__(self, outbox: Outbox, clock: Clock) -> None:
        self._outbox = outbox
        self._clock = clock

    async def handle(self, event: delivery_pb2.CampaignFinishedEvent) -> None:
        finished = events.campaign_finished(event)
        async with self._outbox.unit_of_work() as work:
            found = await store.sending_campaign_for_update(work.conn, finished.campaign_id, None)
            if found is None:
                log.info("campaign_finished for a deleted campaign", campaign_id=finished.campaign_id)
                return
            campaign, progress = found
            outcome = sending.after_finish(campaign, progress, finished, self._clock.now())
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
            plan = sending.auto_resend_after(after, finished)
            resend_id = await store.inserted_auto_resend_id(work.conn, plan) if plan is not None else None
        log.info(
            "campaign finished sending",
            campaign_id=campaign.campaign_id,
            status=after.status.value,
            reason=finished.reason,
        )
        if plan is not None:
            log.info(
                "auto-resend created" if resend_id is not None else "auto-resend exists already",
                campaign_id=campaign.campaign_id,
                auto_resend_campaign_id=resend_id,
                due_at=plan.due_at.isoformat(),
            )
