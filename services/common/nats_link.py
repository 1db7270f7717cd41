"""A process's link to NATS: connects in the background, sets up the streams, then runs the outbox relay and the consumers.

Every Herald process that uses NATS makes one: the campaign service (relay and the campaign_finished
consumer), the tag service (the campaign.deleted consumer), the audience service (the bounce and
delivered consumers), the delivery service (relay and its
three consumers) and each delivery worker (relay and its batch lanes). The process serves meanwhile:
while NATS is away, `run` waits, and events wait in the outbox table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from nats.js import JetStreamContext

from services.common import natsutil
from services.common.config import Settings
from services.common.events import Consumer
from services.common.natsutil import Subjects
from services.common.outbox import Outbox

log = structlog.get_logger()

# Sets up (creates or updates) one stream.
StreamSetup = Callable[[JetStreamContext, Subjects], Awaitable[None]]
# Anything else that runs on the connection until `stop` (a delivery worker's lanes).
Task = Callable[[JetStreamContext, Subjects, asyncio.Event], Awaitable[None]]


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
    ) -> None:
        self._settings = settings
        self._name = name
        self._subjects = Subjects.of(settings)
        self._outbox = outbox
        self._consumers = consumers
        self._tasks = tasks
        self._streams = streams

    async def run(self, stop: asyncio.Event) -> None:
        """Connects (waiting for NATS as long as it takes), sets up the streams, then runs everything until `stop`."""
        client = await natsutil.connect_unless_stopped(self._settings, self._name, stop)
        if client is None:
            return
        try:
            js = client.jetstream()

            async def setup() -> None:
                for ensure in self._streams:
                    await ensure(js, self._subjects)

            if not await natsutil.until_ready(setup, stop, "streams"):
                return
            runs: list[Awaitable[None]] = [consumer.run(js, self._subjects, stop) for consumer in self._consumers]
            runs += [task(js, self._subjects, stop) for task in self._tasks]
            if self._outbox is not None:
                runs.append(self._outbox.relay(js, stop))
            log.info(
                "connected to NATS",
                name=self._name,
                outbox=self._outbox is not None,
                consumers=len(self._consumers),
            )
            await asyncio.gather(*runs)
        finally:
            await client.close()
