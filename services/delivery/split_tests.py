"""The split-test decider: TestDuration hours after a split test's test group started, picks the winner and sends it to the rest.

Each pass claims the Sending runs whose test phase is over and whose winner is undecided with
`SELECT … FOR UPDATE SKIP LOCKED` on their run rows, so any number of delivery replicas run it side by
side and a winner is decided exactly once. In the same transaction it reads the test group's figures,
chooses the winner (sending.split_test_winner), records it on the run, gives every Held row the
winner's email and makes it Pending in new batches of a new generation, and queues those batch
messages in the outbox. A paused run waits (it is not Sending); a cancelled one has no Held rows left.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy.exc import DBAPIError

from services.common.config import Settings
from services.common.logging import RepeatingFailure
from services.common.outbox import Outbox
from services.delivery import queue_store, sending
from services.delivery.queue import finish_if_done

log = structlog.get_logger()

# Runs decided per transaction; a pass that fills it runs again at once.
DECIDE_LIMIT = 20
# How often due split tests are looked for: a winner goes out at most this late (the query reads a
# partial index of the undecided split tests only).
POLL_SECONDS = 1.0


class SplitTestDecider:
    """Decides due split tests every POLL_SECONDS."""

    def __init__(self, outbox: Outbox, settings: Settings) -> None:
        self._outbox = outbox
        self._batch_size = max(settings.delivery_batch_size, 1)

    async def decide_due_split_tests(self) -> int:
        """Decides the split tests that are due now (at most DECIDE_LIMIT); returns how many."""
        empty: list[int] = []
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            due = await queue_store.due_split_tests_for_update(conn, DECIDE_LIMIT)
            for run in due:
                figures = await queue_store.split_test_figures(conn, run.campaign_id, run.occurrence)
                email_ids = [int(email_id) for email_id in run.split_test["email_ids"]]
                winner = sending.split_test_winner(str(run.split_test["winner"]), email_ids, figures)
                generation = run.generation + 1
                first_batch = run.batches + 1
                count = await queue_store.released_held_count(
                    conn,
                    run.campaign_id,
                    winner_email_id=winner,
                    generation=generation,
                    first_batch=first_batch,
                    batch_size=self._batch_size,
                )
                batches = sending.batch_count(count, self._batch_size)
                if not batches:
                    empty.append(run.campaign_id)
                # A fed run's winner batches are published by the feeder (services/delivery/feeder.py).
                elif run.published_batches is None:
                    await queue_store.add_batch_messages(
                        work,
                        run.campaign_id,
                        first_batch,
                        first_batch + batches - 1,
                        generation,
                    )
                await queue_store.save_winner(
                    conn,
                    run.campaign_id,
                    winner_email_id=winner,
                    generation=generation,
                    batches=run.batches + batches,
                )
                log.info(
                    "split test decided",
                    campaign_id=run.campaign_id,
                    rule=run.split_test["winner"],
                    winner_email_id=winner,
                    figures=[(f.email_id, f.sent, f.unique_opens, f.unique_clicks) for f in figures],
                    recipients=count,
                    batches=batches,
                    generation=generation,
                )
        # A run with no Held row left gets no batch, so no worker would ever see it finish: check here.
        for campaign_id in empty:
            await finish_if_done(self._outbox, campaign_id)
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("split-test decider started")
        failing = RepeatingFailure("split-test pass failed; retrying")
        while not stop.is_set():
            try:
                decided = await self.decide_due_split_tests()
            except (DBAPIError, OSError) as exc:
                # PostgreSQL restarting: due split tests wait for the next pass, nothing is lost.
                failing.failed(exc)
                decided = 0
            else:
                failing.recovered()
            if decided >= DECIDE_LIMIT:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=POLL_SECONDS)
