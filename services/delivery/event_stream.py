"""StreamDeliveryEvents' source: a campaign's (or all of an owner's campaigns') DeliveryEvents read from JetStream.

Each call reads with an ephemeral pull consumer of its own on the events stream, filtered to the owner's
subject (`…recipients.<owner>.<campaign>`, or `…recipients.<owner>.*`), in memory, acknowledging nothing
(it only reads), replicated as the stream is, and deleted when the call ends; should the process die first, JetStream removes it after
INACTIVE_SECONDS without a fetch. Like an ordered consumer, it checks that the consumer sequence has no gap
(a fetch's answer lost while NATS reconnected): on a gap, or when the consumer is gone (NATS restarted), it
makes a new one from the message after the last one read, so the events come once each and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime

import nats.errors
import nats.js.errors
import structlog
from herald.delivery.v1 import delivery_pb2
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.common import events, natsutil
from services.common.events import UndecodableEvent
from services.common.live_nats import LiveNats
from services.delivery.cursor import Cursor

log = structlog.get_logger()

# Messages asked for at a time, and how long a fetch waits for the first one.
FETCH_BATCH = 256
FETCH_WAIT_SECONDS = 5.0
# JetStream deletes a consumer nobody fetched from for this long (a process that died mid-call).
INACTIVE_SECONDS = 60.0


class _Gap(Exception):
    """The consumer skipped a message (or vanished): it is replaced from the last message read."""


async def delivery_events(
    live: LiveNats,
    owner_user_id: int,
    campaign_id: int,
    after: Cursor | None,
    start_time: datetime | None,
    started: Callable[[], Awaitable[None]],
) -> AsyncGenerator[tuple[delivery_pb2.DeliveryEvent, Cursor]]:
    """Yields the owner's events of `campaign_id` (0: of every campaign) with their cursors, endlessly: those
    after `after`, else those from `start_time`, else those from now on. `started` is awaited once the first
    consumer exists: from then on, "now on" includes every event published."""
    client = await live.client()
    js = client.jetstream()
    stream = live.subjects.events_stream
    subject = events.delivery_events_subject(live.subjects, owner_user_id, campaign_id or "*")
    # Where the next consumer starts: a stream sequence once known, else the start time.
    next_sequence: int | None = after.sequence if after is not None else None
    if next_sequence is None and start_time is None:
        next_sequence = await _next_sequence(js, stream)
    announced_start = False
    while True:
        name = f"{live.subjects.namespace}-delivery-events-{uuid.uuid4().hex}"
        config = ConsumerConfig(
            name=name,
            filter_subject=subject,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=INACTIVE_SECONDS,
            mem_storage=True,
            # As many as the stream (HERALD_NATS_REPLICAS): a server lost mid-call takes no reader's consumer.
            num_replicas=live.subjects.replicas,
            **(
                {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": next_sequence}
                if next_sequence is not None
                else {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": start_time}
            ),
        )
        try:
            await js.add_consumer(stream, config)
            if not announced_start:
                announced_start = True
                await started()
            try:
                subscription = await js.pull_subscribe_bind(consumer=name, stream=stream)
                async with contextlib.aclosing(_messages(subscription)) as messages:
                    async for sequence, message in messages:
                        for index, event in enumerate(message.events):
                            if after is None or not after.covers(sequence, index):
                                yield event, Cursor(sequence, index)
                        next_sequence = sequence + 1
            finally:
                with contextlib.suppress(*natsutil.NATS_FAILURES, nats.js.errors.NotFoundError):
                    await js.delete_consumer(stream, name)
        except (_Gap, *natsutil.NATS_FAILURES) as exc:
            log.info("delivery events consumer replaced", reason=str(exc) or type(exc).__name__)
            await asyncio.sleep(0.2)


async def _next_sequence(js: JetStreamContext, stream: str) -> int:
    """The sequence the stream's next message will have; asked again while JetStream cannot answer (a 503 while
    the stream elects a leader), as the consumers below are made again."""
    while True:
        try:
            return (await js.stream_info(stream)).state.last_seq + 1
        except natsutil.NATS_FAILURES as exc:
            log.info("events stream not answering yet; asking again", error=str(exc))
            await asyncio.sleep(0.2)


async def _messages(
    subscription: JetStreamContext.PullSubscription,
) -> AsyncGenerator[tuple[int, delivery_pb2.DeliveryEvents]]:
    """The consumer's messages as (stream sequence, message), until a gap in its sequence (raises _Gap)."""
    expected = 1
    try:
        while True:
            try:
                fetched = await subscription.fetch(batch=FETCH_BATCH, timeout=FETCH_WAIT_SECONDS)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for message in fetched:
                metadata = message.metadata
                if metadata.sequence.consumer != expected:
                    raise _Gap(f"consumer sequence {metadata.sequence.consumer}, expected {expected}")
                expected += 1
                try:
                    decoded = events.DELIVERY_EVENTS.decode(message.data)
                except UndecodableEvent as exc:
                    log.error("undecodable delivery events skipped", subject=message.subject, error=str(exc))
                    continue
                yield metadata.sequence.stream, decoded
    finally:
        with contextlib.suppress(*natsutil.NATS_FAILURES):
            await subscription.unsubscribe()
