"""The picker: starts due campaigns (Ready, and Immediate or past their Future/Recursive instant) and asks delivery to send them.

Each pass claims due campaigns with `SELECT … FOR UPDATE SKIP LOCKED`, so any number of campaign-service
replicas run it side by side and a campaign is started by exactly one. In the same transaction the
campaign becomes Sending and the outbox gets `campaign.status_changed` and `campaign.send_requested`,
so a send request exists exactly when the status says Sending. The send request is signed
(services/common/event_signing.py): delivery queues mail only for requests the picker made.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError

from services.campaign import events, sending, store
from services.campaign.clock import Clock
from services.common import events as herald_events
from services.common import tracing
from services.common.event_signing import EventSigner
from services.common.logging import RepeatingFailure
from services.common.outbox import Outbox

log = structlog.get_logger()

# Campaigns started per transaction; a pass that fills it runs again at once.
PICK_LIMIT = 50
POLL_SECONDS = 0.5

PASSES_TOTAL = Counter("herald_campaign_picker_passes_total", "Pick passes, by outcome: ok or failed", ["outcome"])
STARTED_TOTAL = Counter("herald_campaign_picker_started_total", "Campaign occurrences the picker started sending")


class Picker:
    """Runs pick passes every POLL_SECONDS, or at once after `wake()` (a status change may have made one due)."""

    def __init__(self, outbox: Outbox, signer: EventSigner, clock: Clock) -> None:
        self._outbox = outbox
        self._signer = signer
        self._clock = clock
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def pick_due_campaigns(self) -> int:
        """Starts the campaigns that are due now (at most PICK_LIMIT); returns how many."""
        now = self._clock.now()
        async with self._outbox.unit_of_work() as work:
            due = await store.due_campaigns_for_update(work.conn, PICK_LIMIT, now)
            # The traces of the requests that made them Ready go on here (services/common/tracing.py).
            traces = (
                await store.taken_trace_contexts(work.conn, [campaign.campaign_id for campaign, _ in due])
                if due and tracing.enabled()
                else {}
            )
            for campaign, progress in due:
                with tracing.span(
                    "campaign.start_sending",
                    parent=traces.get(campaign.campaign_id),
                    attributes={"herald.campaign_id": campaign.campaign_id},
                ):
                    start = sending.start_sending(campaign, progress, now)
                    await store.save_sending(work.conn, start.campaign, start.progress)
                    events.record_status_change(work, campaign, start.campaign)
                    work.publish(
                        herald_events.CAMPAIGN_SEND_REQUESTED,
                        events.send_requested(start),
                        key=events.send_request_key(start),
                        signer=self._signer,
                    )
                    log.info(
                        "campaign started sending",
                        campaign_id=campaign.campaign_id,
                        occurrence=start.progress.occurrences_started,
                        resume=start.resume,
                    )
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        failing = RepeatingFailure("pick pass failed; retrying")
        while not stop.is_set():
            self._wakeup.clear()
            try:
                picked = await self.pick_due_campaigns()
            except (DBAPIError, OSError) as exc:
                # PostgreSQL restarting: due campaigns wait for the next pass, nothing is lost.
                failing.failed(exc)
                PASSES_TOTAL.labels("failed").inc()
                picked = 0
            else:
                failing.recovered()
                PASSES_TOTAL.labels("ok").inc()
                STARTED_TOTAL.inc(picked)
            if picked >= PICK_LIMIT:
                continue
            waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
