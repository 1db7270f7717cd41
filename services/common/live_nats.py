"""A process's NATS connection for its streaming RPCs (WatchCampaign, StreamDeliveryEvents): connected in the
background, handed to each call that needs it, closed on stop.

It is a connection of its own, beside the NatsLink's that runs the outbox relay and the durable consumers,
so that a watcher's subscriptions and ephemeral consumers share nothing with the work that must not stall.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client

from services.common import natsutil
from services.common.config import Settings
from services.common.errors import DomainError, ErrorKind
from services.common.natsutil import Subjects

# How long a call waits for the connection (the process just started, NATS restarts) before UNAVAILABLE.
CONNECT_WAIT_SECONDS = 5.0


class LiveNats:
    """Connects once `run` starts and keeps the connection (reconnecting forever) until `stop`."""

    def __init__(self, settings: Settings, name: str) -> None:
        self._settings = settings
        self._name = name
        self.subjects = Subjects.of(settings)
        self._client: Client | None = None
        self._connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        client = await natsutil.connect_unless_stopped(self._settings, self._name, stop)
        if client is None:
            return
        self._client = client
        self._connected.set()
        try:
            await stop.wait()
        finally:
            self._connected.clear()
            self._client = None
            with contextlib.suppress(*natsutil.NATS_FAILURES):
                await client.close()

    async def client(self) -> Client:
        """The connection; UNAVAILABLE when NATS could not be reached within CONNECT_WAIT_SECONDS."""
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT_SECONDS)
        except TimeoutError:
            pass
        client = self._client
        if client is None or not client.is_connected:
            raise DomainError(ErrorKind.UNAVAILABLE, "EVENTS_UNAVAILABLE", "NATS is not reachable; try again")
        return client
