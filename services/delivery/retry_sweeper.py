"""The sweeper: Deferred recipients whose retry message never came are scheduled again (services/delivery/retries.py).

Every delivery service replica runs it. A retry message can only be lost with the retries stream
itself (purged or deleted by hand, a JetStream store lost): every HERALD_DELIVERY_RETRY_SWEEP_SECONDS
the sweeper takes the Deferred rows of running campaigns whose retry is overdue by more than
HERALD_DELIVERY_RETRY_OVERDUE_SECONDS (`SKIP LOCKED`, so replicas share them), makes them due now and
writes their retry messages into the outbox in the same transaction. A row it schedules again whose
first message does arrive after all is claimed by one of the two only (the claim checks the attempt
count), so nobody is sent twice; nobody is left Deferred forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from sqlalchemy.exc import DBAPIError

from services.common.config import Settings
from services.common.logging import RepeatingFailure
from services.common.natsutil import Subjects
from services.common.outbox import Outbox
from services.delivery import queue_store, retries

log = structlog.get_logger()

# Rows scheduled again per transaction.
SWEEP_LIMIT = 1000


class RetrySweeper:
    def __init__(self, outbox: Outbox, settings: Settings) -> None:
        self._outbox = outbox
        self._subjects = Subjects.of(settings)
        self._every = settings.delivery_retry_sweep_seconds
        self._overdue = settings.delivery_retry_overdue_seconds

    async def sweep(self) -> int:
        """Schedules one group of overdue rows again; returns how many."""
        async with self._outbox.unit_of_work() as work:
            overdue = await queue_store.overdue_retries(work.conn, self._overdue, SWEEP_LIMIT)
            retries.schedule(work, self._subjects, overdue, again=f"s{time.time_ns()}")
        if overdue:
            log.warning(
                "deferred recipients whose retry never came were scheduled again",
                recipients=len(overdue),
                campaigns=sorted({retry.campaign_id for retry in overdue})[:20],
            )
        return len(overdue)

    async def run(self, stop: asyncio.Event) -> None:
        failing = RepeatingFailure("retry sweep failed; retrying")
        while not stop.is_set():
            try:
                swept = await self.sweep()
            except (DBAPIError, OSError) as exc:
                failing.failed(exc)
                swept = 0
            else:
                failing.recovered()
            if swept >= SWEEP_LIMIT:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._every)
