"""JetStream for delivery: the batches work queue, and consumers that keep a message alive while it is handled.

Batches go to `<NS>_DELIVERY_BATCHES` (WorkQueue retention: a message is gone once a worker acked it),
subject `<ns>.delivery.batches`; a message is only ids, `{"campaign_id", "batch_id", "generation"}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from services.common import natsutil
from services.common.natsutil import Subjects

log = structlog.get_logger()

WORKERS_DURABLE = "delivery-workers"


def batches_stream(subjects: Subjects) -> str:
    return f"{subjects.namespace.upper()}_DELIVERY_BATCHES"


def batches_subject(subjects: Subjects) -> str:
    return f"{subjects.namespace}.delivery.batches"


async def ensure_batches_stream(js: JetStreamContext, subjects: Subjects) -> None:
    """Creates (or updates) the batches stream; the Nats-Msg-Id window drops a batch the outbox publishes twice."""
    config = StreamConfig(
        name=batches_stream(subjects),
        subjects=[batches_subject(subjects)],
        retention=RetentionPolicy.WORK_QUEUE,
        duplicate_window=120,
        num_replicas=subjects.replicas,
    )
    try:
        await js.stream_info(config.name or "")
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)


async def consume_durably(
    js: JetStreamContext,
    subjects: Subjects,
    *,
    durable: str,
    event: str,
    handle: Callable[[bytes], Awaitable[None]],
    stop: asyncio.Event,
    ack_wait: float = 30.0,
) -> None:
    """A durable pull consumer of one event type that never gives a message up.

    A message is acked only after `handle` returned; while it runs, the message is kept alive; when it
    raises, the message comes back after a growing delay (forever: a lost send request or status
    change would leave a campaign Sending for good).
    """
    subscription: JetStreamContext.PullSubscription | None = None

    async def setup() -> None:
        nonlocal subscription
        await natsutil.ensure_events_stream(js, subjects)
        subscription = await js.pull_subscribe(
            subjects.event(event),
            durable=subjects.durable(durable),
            stream=subjects.events_stream,
            config=ConsumerConfig(ack_wait=ack_wait, max_deliver=-1, ack_policy=AckPolicy.EXPLICIT),
        )

    if not await natsutil.until_ready(setup, stop, f"{event} consumer"):
        return
    assert subscription is not None
    while not stop.is_set():
        try:
            messages = await subscription.fetch(batch=20, timeout=1)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        except natsutil.NATS_FAILURES as exc:
            log.warning("event fetch failed; retrying", event_type=event, error=str(exc))
            await natsutil.sleep_unless_stopped(stop, 0.5)
            continue
        for message in messages:
            try:
                async with natsutil.kept_alive(message, ack_wait / 3):
                    await handle(message.data)
            except Exception:
                log.exception("event handling failed; it will come back", event_type=event)
                try:
                    await message.nak(delay=natsutil.redelivery_delay(message))
                except natsutil.NATS_FAILURES as exc:
                    # Unacknowledged, it comes back after the ack wait anyway.
                    log.warning("event nak failed", event_type=event, error=str(exc))
                continue
            try:
                await message.ack()
            except natsutil.NATS_FAILURES as exc:
                # The event comes back and is handled again, which every handler is safe against.
                log.warning("event ack failed", event_type=event, error=str(exc))
