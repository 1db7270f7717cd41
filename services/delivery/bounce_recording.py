"""Recording bounces and complaints, and announcing them: RecordBounces' reports and the workers' send-time refusals.

Every bounce is classified by services/common/bounces.py, recorded once per event key, and announced
to the audience service with delivery.recipient_bounced in the same transaction (the outbox's unit of
work), so a bounce is announced exactly when it was recorded. A row Sent whose address had bounced
before is announced with delivery.recipient_delivered, in the transaction that records the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from herald.delivery.v1 import delivery_pb2
from prometheus_client import Counter

from services.common import events
from services.common.bounces import BounceKind
from services.common.outbox import Outbox, UnitOfWork
from services.delivery import bounce_store, domain, recipient_events, sending
from services.delivery import events as delivery_events
from services.delivery.bounce_store import QueuedAddress, Recording
from services.delivery.domain import RecipientStatus
from services.delivery.sending import BatchMessage, Outcome

log = structlog.get_logger()

BOUNCES_TOTAL = Counter(
    "herald_delivery_bounces_total", "Bounces and complaints recorded (each event key once)", ["kind", "source"]
)
DELIVERED_AFTER_BOUNCE_TOTAL = Counter(
    "herald_delivery_delivered_after_bounce_total", "Recipients sent to whose address had bounced before"
)


@dataclass(frozen=True)
class Tally:
    """What a RecordBounces request did: reports recorded now, seen before (by event key), naming no queue row."""

    recorded: int
    duplicates: int
    unknown: int


async def record(outbox: Outbox, reports: Sequence[domain.BounceReport], owner: int | None) -> Tally:
    """Classifies and records validated reports in one unit of work, announcing each recorded one."""
    distinct = domain.distinct_reports(reports)
    classified = [domain.classified_bounce(report) for report in distinct]
    async with outbox.unit_of_work() as work:
        recordings = await bounce_store.recorded_bounces(work.conn, classified, owner)
        announce_bounces(work, recordings)
        # A send-time refusal is the worker's Failed event already; these came back after sending.
        recipient_events.publish(
            work, (bounce_event(recording) for recording in recordings if recording.bounce_id)
        )
    recorded = sum(1 for recording in recordings if recording.bounce_id is not None)
    tally = Tally(
        recorded=recorded,
        duplicates=len(recordings) - recorded + len(reports) - len(distinct),
        unknown=len(distinct) - len(recordings),
    )
    log.info(
        "bounce reports recorded", recorded=tally.recorded, duplicates=tally.duplicates, unknown=tally.unknown
    )
    return tally


def bounce_event(recording: Recording) -> delivery_pb2.DeliveryEvent:
    """A recorded bounce as the recipient's DeliveryEvent: complained for a complaint, else bounced; the detail
    is the bounce's kind (hard, soft, policy, complaint) and diagnostic."""
    bounce, recipient = recording.bounce, recording.recipient
    return delivery_pb2.DeliveryEvent(
        kind=(
            delivery_pb2.DELIVERY_EVENT_KIND_COMPLAINED
            if bounce.kind == BounceKind.COMPLAINT
            else delivery_pb2.DELIVERY_EVENT_KIND_BOUNCED
        ),
        owner_user_id=recipient.owner_user_id,
        campaign_id=recipient.campaign_id,
        recipient_id=recipient.recipient_id,
        subscriber_id=recipient.subscriber_id,
        email_address=recipient.email_address,
        occur_time=recipient_events.timestamp(bounce.occurred_at),
        detail=f"{bounce.kind}: {bounce.diagnostic}" if bounce.diagnostic else str(bounce.kind),
    )


def announce_bounces(work: UnitOfWork, recordings: Sequence[Recording]) -> None:
    """Publishes delivery.recipient_bounced for each bounce recorded now (not for a repeated event key)."""
    for recording in recordings:
        if recording.bounce_id is None:
            continue
        work.publish(
            events.RECIPIENT_BOUNCED,
            delivery_events.bounced_event(recording),
            key=delivery_events.bounced_key(recording),
        )
        BOUNCES_TOTAL.labels(recording.bounce.kind, recording.bounce.source).inc()


def announce_deliveries(
    work: UnitOfWork, deliveries: Sequence[tuple[QueuedAddress, datetime]], generation: int
) -> None:
    """Publishes delivery.recipient_delivered for each (row, send time) Sent whose address had bounced before."""
    for recipient, delivered_at in deliveries:
        work.publish(
            events.RECIPIENT_DELIVERED,
            delivery_events.delivered_event(recipient, delivered_at),
            key=delivery_events.delivered_key(recipient, generation),
        )
    DELIVERED_AFTER_BOUNCE_TOTAL.inc(len(deliveries))


async def announce_window(
    work: UnitOfWork, batch: BatchMessage, outcomes: Sequence[Outcome], bounced_before: frozenset[int]
) -> None:
    """Records a worker's window of refusals as bounces and announces them, and the rows Sent whose address had
    bounced (see sending.announced_outcomes).

    Runs after the window's outcomes were written in the same unit of work: a delivery is announced only for a row
    that is now Sent, and a handling that comes again after a crash records no bounce twice (the event
    key names the row and generation).
    """
    now = datetime.now(UTC)
    refused = [
        sending.send_time_bounce(batch.campaign_id, o.recipient_id, batch.generation, o.refusal, now)
        for o in outcomes
        if o.status == RecipientStatus.FAILED and o.refusal is not None
    ]
    if refused:
        recordings = await bounce_store.recorded_bounces(work.conn, refused, owner=None)
        announce_bounces(work, recordings)
    sent_at = {
        o.recipient_id: o.sent_at or now
        for o in outcomes
        if o.status == RecipientStatus.SENT and o.recipient_id in bounced_before
    }
    if sent_at:
        delivered = await bounce_store.delivered_after_bounce(work.conn, batch.campaign_id, list(sent_at))
        announce_deliveries(work, [(row, sent_at[row.recipient_id]) for row in delivered], batch.generation)
