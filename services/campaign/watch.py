"""WatchCampaign's stream: a campaign's status and counters at once, again whenever NATS says they may have
changed (at most every MIN_INTERVAL_SECONDS), a heartbeat when nothing changed, the end after a terminal status.

What wakes a watch is an event on NATS, read with plain (core) subscriptions: the campaign's
`status_changed` events and its per-recipient `DeliveryEvents` subject. The state itself is always read
afresh (the campaign's row, delivery's counters), never computed from the events, so a message that a
subscription missed (NATS reconnecting) costs a delay, not a wrong figure: every heartbeat reads the state
too, and sends it as a change when it differs from the last one sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import structlog
from herald.campaign.v1 import campaign_pb2
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.common import events, natsutil
from services.common.events import UndecodableEvent
from services.common.live_nats import LiveNats

log = structlog.get_logger()

# Coalescing: after a message, the next one waits at least this long, so a fast send shows its progress a
# few times a second instead of once per window of every worker.
MIN_INTERVAL_SECONDS = 0.25

TERMINAL_STATUSES = frozenset(
    {
        campaign_pb2.CAMPAIGN_STATUS_SENT,
        campaign_pb2.CAMPAIGN_STATUS_FAILED,
        campaign_pb2.CAMPAIGN_STATUS_CANCELLED,
    }
)


@dataclass(frozen=True)
class Progress:
    """What a watcher is told: the status and the totals, compared as they are (the read time aside)."""

    status: campaign_pb2.CampaignStatus.ValueType
    statistics: campaign_pb2.CampaignStatistics

    def same_as(self, other: Progress | None) -> bool:
        return other is not None and self.status == other.status and self.statistics == other.statistics


ReadProgress = Callable[[], Awaitable[Progress]]


async def watch(
    live: LiveNats,
    campaign_id: int,
    owner_user_id: int,
    read: ReadProgress,
    heartbeat_seconds: float,
) -> AsyncIterator[tuple[Progress, bool]]:
    """Yields (progress, heartbeat) until a terminal status was yielded; the caller leaving ends it too (the
    subscriptions are removed either way)."""
    changed = asyncio.Event()

    async def on_status_changed(message: Msg) -> None:
        try:
            event = events.CAMPAIGN_STATUS_CHANGED.decode(message.data)
        except UndecodableEvent:
            return  # the durable consumers log and terminate it; a watcher only wants its campaign's
        if event.campaign_id == campaign_id:
            changed.set()

    async def on_delivery_events(message: Msg) -> None:
        changed.set()

    client = await live.client()
    subscriptions: list[Subscription] = []
    try:
        # Subscribed before the first read, so that no change between the read and the subscription is lost.
        subscriptions.append(
            await client.subscribe(live.subjects.event(events.CAMPAIGN_STATUS_CHANGED), cb=on_status_changed)
        )
        subscriptions.append(
            await client.subscribe(
                events.delivery_events_subject(live.subjects, owner_user_id, campaign_id), cb=on_delivery_events
            )
        )
        last = await read()
        yield last, False
        last_sent = time.monotonic()
        while last.status not in TERMINAL_STATUSES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(heartbeat_seconds - (time.monotonic() - last_sent), 0))
            woken = changed.is_set()
            changed.clear()
            progress = await read()
            if not progress.same_as(last):
                yield progress, False
                last, last_sent = progress, time.monotonic()
            elif not woken or time.monotonic() - last_sent >= heartbeat_seconds:
                yield progress, True
                last_sent = time.monotonic()
            # Else woken by something that moved none of these figures (a deferral): nothing to tell.
            await asyncio.sleep(MIN_INTERVAL_SECONDS)
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(*natsutil.NATS_FAILURES):
                await subscription.unsubscribe()
