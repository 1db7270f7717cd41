"""A process's link to NATS: connects in the background, sets up the streams, then runs the outbox relay and the consumers.

Every Herald process that uses NATS makes one: the campaign service (relay and the campaign_finished
consumer), the tag service (the campaign.deleted consumer), the audience service (the bounce and
delivered consumers), the delivery service (relay and its
three consumers) and each delivery worker (relay and its batch lanes). The process serves meanwhile:
while NATS is away, `run` waits, and events wait in the outbox table.

It also keeps the gauges of what it runs (docs/operations.md, "Metrics"): its outbox's waiting rows and
their age, sampled whether NATS is there or not, and its durable consumers' pending and redelivered
messages, read from JetStream every HERALD_METRICS_SAMPLE_SECONDS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import Gauge

from services.common import metrics, natsutil
from services.common.config import Settings
from services.common.events import Consumer
from services.common.health import Unreachable
from services.common.natsutil import Subjects
from services.common.outbox import Outbox

log = structlog.get_logger()

# Sets up (creates or updates) one stream.
StreamSetup = Callable[[JetStreamContext, Subjects], Awaitable[None]]
# Anything else that runs on the connection until `stop` (a delivery worker's lanes).
Task = Callable[[JetStreamContext, Subjects, asyncio.Event], Awaitable[None]]
# The stream of a durable consumer that a task runs, in this install.
StreamOf = Callable[[Subjects], str]

# By the consumer's durable name without the install's namespace: the same few names in every install.
CONSUMER_PENDING = Gauge(
    "herald_jetstream_consumer_pending", "Messages on the stream not yet delivered to the consumer", ["durable"]
)
CONSUMER_ACK_PENDING = Gauge(
    "herald_jetstream_consumer_ack_pending",
    "Messages delivered to the consumer, not yet acknowledged",
    ["durable"],
)
CONSUMER_REDELIVERED = Gauge(
    "herald_jetstream_consumer_redelivered",
    "Messages delivered to the consumer more than once and not yet acknowledged",
    ["durable"],
)


class NatsLink:
    """One connection to NATS for a process, and what runs on it."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        outbox: Outbox | None = None,
        consumers: Sequence[Consumer[Any]] = (),
        tasks: Sequence[Task] = (),
        streams: Sequence[StreamSetup] = (natsutil.ensure_events_stream,),
        task_consumers: Mapping[str, StreamOf] | None = None,
    ) -> None:
        """`task_consumers` names the durable consumers that `tasks` run (durable name: its stream), whose
        gauges are kept besides those of `consumers`."""
        self._settings = settings
        self._name = name
        self._subjects = Subjects.of(settings)
        self._outbox = outbox
        self._consumers = consumers
        self._tasks = tasks
        self._streams = streams
        self._watched = {consumer.durable: _events_stream for consumer in consumers} | dict(task_consumers or {})
        self._js: JetStreamContext | None = None
        self._client: Client | None = None

    async def check(self) -> None:
        """The health check of this link (services/common/health.py): connected, and JetStream answers."""
        client = self._client
        if client is None:
            raise Unreachable("not connected yet")
        if not client.is_connected:
            raise Unreachable("disconnected; reconnecting")
        await client.jetstream(timeout=self._settings.health_probe_timeout_seconds).account_info()

    async def run(self, stop: asyncio.Event) -> None:
        """Connects (waiting for NATS as long as it takes), sets up the streams, then runs everything until `stop`."""
        every = self._settings.metrics_sample_seconds
        samplers = [asyncio.ensure_future(metrics.sample_every(every, self._sample_consumers, stop))]
        if self._outbox is not None:
            samplers.append(asyncio.ensure_future(metrics.sample_every(every, self._outbox.sample, stop)))
        try:
            await self._run(stop)
        finally:
            for sampler in samplers:
                sampler.cancel()

    async def _sample_consumers(self) -> None:
        """Sets the gauges of each durable consumer this process runs, once connected and the consumer exists."""
        if self._js is None:
            return
        for durable, stream_of in self._watched.items():
            try:
                info = await self._js.consumer_info(stream_of(self._subjects), self._subjects.durable(durable))
            except nats.js.errors.NotFoundError:
                continue  # not created yet: its task is still setting up
            CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)
            CONSUMER_REDELIVERED.labels(durable).set(info.num_redelivered or 0)

    async def _run(self, stop: asyncio.Event) -> None:
        client = await natsutil.connect_unless_stopped(self._settings, self._name, stop)
        if client is None:
            return
        self._client = client
        try:
            js = client.jetstream()

            async def setup() -> None:
                for ensure in self._streams:
                    await ensure(js, self._subjects)

            if not await natsutil.until_ready(setup, stop, "streams"):
                return
            self._js = js
            runs: list[Awaitable[None]] = [
                kept_running(f"{consumer.durable} consumer", partial(consumer.run, js, self._subjects), stop)
                for consumer in self._consumers
            ]
            runs += [
                kept_running(getattr(task, "__qualname__", "task"), partial(task, js, self._subjects), stop)
                for task in self._tasks
            ]
            if self._outbox is not None:
                runs.append(kept_running("outbox relay", partial(self._outbox.relay, js), stop))
            log.info(
                "connected to NATS",
                name=self._name,
                outbox=self._outbox is not None,
                consumers=len(self._consumers),
            )
            await asyncio.gather(*runs)
        finally:
            self._js = None
            self._client = None
            await client.close()


async def kept_running(what: str, run: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> None:
    """Runs `run(stop)` until `stop`, starting it again (after a growing pause, at most 10 s) whenever it raised or
    returned early.

    Consumers, lanes and relays ride out a JetStream failover themselves (a 503, no responders, a timeout or an
    API error while a stream or consumer elects a leader is retried where it happens); this is the last line:
    whatever escapes them, the process keeps consuming instead of dropping the loop or exiting.
    """
    delay = 0.5
    while not stop.is_set():
        started = time.monotonic()
        try:
            await run(stop)
        except Exception:
            log.exception("NATS loop failed; starting it again", loop=what, retry_in=delay)
        else:
            if stop.is_set():
                return
            log.warning("NATS loop ended before the process stopped; starting it again", loop=what, retry_in=delay)
        if time.monotonic() - started > 60:
            delay = 0.5  # it had been running well: a new failure starts the pauses afresh
        await natsutil.sleep_unless_stopped(stop, delay)
        delay = min(delay * 2, 10.0)


def _events_stream(subjects: Subjects) -> str:
    return subjects.events_stream
