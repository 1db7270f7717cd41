"""JetStream for delivery: the batches work queue (and the retries stream of services/delivery/retries.py).

Batches go to `<NS>_DELIVERY_BATCHES` (WorkQueue retention: a message is gone once a worker acked it),
on the subject of DeliveryBatch (protos/herald/delivery/v1/delivery.proto), `<ns>.delivery.batches`; a
message is only ids.
"""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from services.common import events, natsutil
from services.common.natsutil import Subjects
from services.delivery import retries

log = structlog.get_logger()

WORKERS_DURABLE = "delivery-workers"


def batches_stream(subjects: Subjects) -> str:
    return f"{subjects.namespace.upper()}_DELIVERY_BATCHES"


def batches_subject(subjects: Subjects) -> str:
    return subjects.event(events.DELIVERY_BATCH)


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


# The streams delivery's processes use: the domain events, the batches and the deferred recipients' retries.
STREAMS = (natsutil.ensure_events_stream, ensure_batches_stream, retries.ensure_retries_stream)
