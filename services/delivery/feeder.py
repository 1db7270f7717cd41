"""The feeder: publishes the batch messages of queued campaigns, a few at a time and in turn.

The batch stream is one queue in publish order that every worker reads. When a chunk of 20,000 recipients
published its batch messages as it committed (and a campaign queued in one transaction all of its batches), two
large campaigns sent at once went out in turns of whole chunks (each stood still for up to 30 s at a time), and
a campaign set Ready while another sent waited behind the chunks the other had queued ahead. So a chunk now commits its queue rows only, and the delivery service's
feeder keeps the stream short and mixed:

- Every FEED_SECONDS, and at once when a chunk commits or a campaign is resumed, it reads how many batch
  messages wait in the stream that no worker has taken yet (the workers' consumer's `num_pending`, plus
  those still in the outbox).
- It tops them up to what the workers took over the last AHEAD_SECONDS (at least MIN_AHEAD_BATCHES), shared
  evenly among the Sending campaigns that have batches left to publish, each in batch id order.

Every Sending campaign so gets an even share of the batches the workers take, and a campaign set Ready while
others send waits behind at most AHEAD_SECONDS of theirs. The target follows the workers: the more they take,
the more is kept ready for them. Batches being worked, and batches waiting for a paced domain's tokens (nak'd
with a delay), are not in `num_pending`, so a slow domain does not hold the feeder back.

Nothing is lost or sent twice: a run's messages and its `published_batches` (migration 0021) commit in one
transaction under the run's lock, each batch under the generation its Pending rows have (a resume moves them
to its own and publishes only what was published before, services/delivery/queue.py). A feeder that stops
midway leaves the rest to its next pass or to another replica's feeder. Several delivery services each run a
feeder: a pass takes a transaction-long advisory lock first, and a feeder that finds it held skips its pass, so
one pass at a time reads the stream and tops it up.

Every occurrence queued since migration 0021 is fed: in chunks, in one transaction (split test, auto-resend,
rules bundle), and a split test's winner. Runs queued before it (`published_batches` NULL), opt-in confirmations
and previews publish their batches as they are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque

import nats.js.errors
import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import DBAPIError

from services.common import events, natsutil
from services.common.logging import RepeatingFailure
from services.common.natsutil import Subjects
from services.common.outbox import Outbox
from services.delivery import queue_store, streams
from services.delivery.sending import RunState

log = structlog.get_logger()

# How often the feeder looks at the stream, when nothing wakes it sooner.
FEED_SECONDS = 0.2
# The batch messages it keeps waiting in the stream: what the workers took over this many seconds...
AHEAD_SECONDS = 2.0
# ... and at least this many (the workers' first takes, before there is a rate to go by).
MIN_AHEAD_BATCHES = 4

BATCHES_FED = Counter(
    "herald_delivery_batches_fed_total",
    "Batch messages the feeder published for queued campaigns",
)
FEED_TARGET = Gauge(
    "herald_delivery_feed_target_batches",
    "Batch messages the feeder keeps waiting in the stream: what the workers took over the last 2 s, at least 4",
)


class BatchFeeder:
    """The delivery service's feeder: a NatsLink task (`run`), woken early by `kick`."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._kicked = asyncio.Event()
        # (monotonic time, the workers' consumer's last delivered stream sequence) of the last AHEAD_SECONDS.
        self._taken: deque[tuple[float, int]] = deque()
        # Which run goes first in the next pass: each pass starts one further, so the odd batch goes round.
        self._turn = 0

    def kick(self) -> None:
        """Feeds without waiting for the next pass (a chunk committed, a campaign resumed)."""
        self._kicked.set()

    async def run(self, js: JetStreamContext, subjects: Subjects, stop: asyncio.Event) -> None:
        failing = RepeatingFailure("feeding the batch stream failed; retrying", traceback=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kicked.wait(), timeout=FEED_SECONDS)
            self._kicked.clear()
            try:
                await self.feed(js, subjects)
            except (DBAPIError, OSError, *natsutil.NATS_FAILURES) as exc:
                failing.failed(exc)
                await natsutil.sleep_unless_stopped(stop, 1)
                continue
            failing.recovered()

    async def feed(self, js: JetStreamContext, subjects: Subjects) -> int:
        """One pass: tops the stream up for the runs with batches to publish; returns how many messages. A pass is
        one transaction, and one at a time among the delivery services' feeders."""
        async with self._outbox.unit_of_work() as work:
            if not await queue_store.feeding_turn(work.conn):
                return 0  # another delivery service's feeder is in its pass
            runs = await queue_store.feedable_runs(work.conn)
            if not runs:
                self._taken.clear()  # the workers' pace is measured afresh when there is something to feed again
                return 0
            target = await self._target(js, subjects)
            room = target - await self._waiting(js, subjects)
            if room > 0:
                room -= await queue_store.unrelayed_batch_messages(
                    work.conn, subjects.event(events.DELIVERY_BATCH), cap=room
                )
            if room <= 0:
                return 0
            self._turn += 1
            first = self._turn % len(runs)
            shares = _shares(runs[first:] + runs[:first], room)
            # Locked in this pass's turn, which is the order their batches alternate in (no other transaction locks
            # two runs: the advisory lock above makes this pass the only one).
            locked: list[tuple[queue_store.Run, int]] = []
            for campaign_id, share in shares.items():
                run = await queue_store.run_for_update(work.conn, campaign_id)
                if run is not None and run.state == RunState.SENDING and run.fed:
                    locked.append((run, share))
            fed = await queue_store.fed_batch_count(work, locked)
        BATCHES_FED.inc(fed)
        return fed

    async def _waiting(self, js: JetStreamContext, subjects: Subjects) -> int:
        """Batch messages in the stream that no worker has taken yet; records how far the workers have taken."""
        try:
            info = await js.consumer_info(
                streams.batches_stream(subjects), subjects.durable(streams.WORKERS_DURABLE)
            )
        except nats.js.errors.NotFoundError:
            # No worker has made its consumer yet: whatever the stream holds waits.
            state = (await js.stream_info(streams.batches_stream(subjects))).state
            return state.messages
        now = time.monotonic()
        self._taken.append((now, info.delivered.stream_seq if info.delivered else 0))
        while len(self._taken) > 2 and now - self._taken[1][0] >= AHEAD_SECONDS:
            self._taken.popleft()
        return info.num_pending or 0

    async def _target(self, js: JetStreamContext, subjects: Subjects) -> int:
        """What the workers took over the last AHEAD_SECONDS (as of the previous pass), at least MIN_AHEAD_BATCHES."""
        target = MIN_AHEAD_BATCHES
        if len(self._taken) >= 2:
            (since, first), (until, last) = self._taken[0], self._taken[-1]
            if until > since:
                target = max(
                    target, math.ceil((last - first) * AHEAD_SECONDS / max(until - since, AHEAD_SECONDS / 2))
                )
        FEED_TARGET.set(target)
        return target


def _shares(runs: list[tuple[int, int]], room: int) -> dict[int, int]:
    """`room` batches split evenly among the runs (campaign id, batches left), none given more than it has left; the
    first runs get the odd ones."""
    shares = dict.fromkeys((campaign_id for campaign_id, _ in runs), 0)
    left = dict(runs)
    while room > 0 and left:
        each = max(room // len(left), 1)
        for campaign_id in list(left):
            given = min(each, left[campaign_id], room)
            shares[campaign_id] += given
            left[campaign_id] -= given
            room -= given
            if not left[campaign_id]:
                del left[campaign_id]
            if room <= 0:
                break
    return {campaign_id: share for campaign_id, share in shares.items() if share}
