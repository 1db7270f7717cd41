"""The delivery worker (`herald serve delivery-worker`, any number of processes): takes batches from JetStream and sends them over SMTP.

Per batch message `{campaign_id, batch_id, generation}`:

1. Rows of the batch that another worker claimed and never confirmed (it stopped mid-send) are marked
   Failed as ambiguous — never sent again silently.
2. If the campaign's run is not Sending, the message is acked and nothing is sent: the rows stay
   Pending for a resume (which publishes them again) or were dropped by a cancel.
3. Otherwise the worker claims the batch's Pending rows of that generation a window at a time (one
   UPDATE … RETURNING), renders and sends each over pooled SMTP sessions, and writes the window's
   outcomes in one UPDATE … FROM unnest. A window is at most HERALD_DELIVERY_CONCURRENCY /
   HERALD_DELIVERY_PARALLEL_BATCHES rows, so a worker killed at any instant leaves at most its send
   concurrency of rows unconfirmed, and one window more of due retries: those become the ambiguous ones of
   step 1 (a retry's when its message comes back). Each send first takes its tokens from the fleet's pacer
   (services/delivery/pacing.py): a recipient whose domain has none now is set aside (Pending again, no
   attempt), the handling claims no more rows of that domain, and when only those are left the message is
   nak'd with a delay, their turn.
4. Between messages the run's state is checked (at most 0.5 s old): a pause or cancel stops sending
   within a second and the claimed rows not yet sent go back to Pending (Dropped when cancelled).
5. When the run has no Pending, Held (a split test's rest, waiting for the winner) or Sending row left,
   delivery.campaign_finished goes out (once).
   Then the message is acked; while the batch runs the worker tells JetStream it is alive.

SMTP outcomes: 2xx Sent; 5xx Failed with the reply; a 4xx reply or no connection: Deferred, with its retry
scheduled through JetStream (services/delivery/retries.py) in the transaction that records it, and the
worker moves on at once; a connection lost after the content went out is Failed as ambiguous (the server
may have accepted it). A reply that refused the recipient (a 5xx, or the last 4xx of a recipient deferred
for longer than HERALD_DELIVERY_MAX_DEFER_HOURS) is classified and recorded as a bounce, and a recipient
Sent whose address had bounced before is announced, in the transaction of the window's outcomes
(services/delivery/bounce_recording.py).

Due retries come from the consumer `delivery-retries` (one lane per worker, up to a window of messages at
a time): the messages of one campaign are handled together, their rows claimed in one statement (only
while the run is Sending or Sent: a paused campaign's deferred recipients wait for the resume, a cancelled
one's were dropped), sent like a batch's, and their outcomes recorded in one unit of work before the
messages are acked.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import db, events, health, natsutil, tracing
from services.common.config import Settings
from services.common.events import UndecodableEvent
from services.common.logging import RepeatingFailure
from services.common.nats_link import NatsLink
from services.common.natsutil import Subjects
from services.common.opt_in_links import OptInLinks
from services.common.outbox import Outbox, UnitOfWork
from services.common.personalization import HashedIds
from services.common.return_path import ReturnPaths
from services.common.tracking import TrackingLinks
from services.delivery import (
    bounce_recording,
    claim_store,
    dkim,
    dkim_store,
    pacing,
    queue_store,
    recipient_events,
    retries,
    sending,
    streams,
)
from services.delivery import events as delivery_events
from services.delivery.claim_store import ClaimedRecipient, RunView
from services.delivery.domain import RecipientStatus
from services.delivery.message import MessageTemplate, Recipient
from services.delivery.queue import finish_if_done
from services.delivery.relays import Relay, RelayPool, parse_relays, parse_routes
from services.delivery.sending import BatchMessage, Outcome, Refusal, RunState
from services.delivery.smtp import SmtpConnectionPool, SmtpSendError
from services.delivery.store import SCHEMA

log = structlog.get_logger()
# PostgreSQL or NATS away: the worker's retries log the first failure, then one line a minute with a count
# (services/common/logging.py), not a line per batch, recipient or statement.
DATABASE_AWAY = RepeatingFailure("delivery worker: database statements fail; work waits and is retried")
_FETCH_FAILING = RepeatingFailure("delivery worker: fetching from NATS fails; retrying")
T = TypeVar("T")

SENT_TOTAL = Counter("herald_delivery_sent_total", "Messages the SMTP server accepted")
FAILED_TOTAL = Counter("herald_delivery_failed_total", "Recipients marked Failed", ["kind"])
DEFERRED_TOTAL = Counter(
    "herald_delivery_deferred_total", "Recipients deferred: a 4xx reply, or no connection to the relay", ["how"]
)
SMTP_REPLIES_TOTAL = Counter(
    "herald_delivery_smtp_replies_total",
    "The relay's final replies to messages, by class: 2xx, 4xx, 5xx, or none (the connection failed first)",
    ["class"],
)
RETRIES_TOTAL = Counter("herald_delivery_retries_total", "Due retries of deferred recipients handled")
BATCH_SECONDS = Histogram(
    "herald_delivery_batch_seconds",
    "Time from receiving a batch message to acking it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
EMAILS_PER_SECOND = Gauge("herald_delivery_emails_per_second", "Messages sent per second over the last 5 s")

# How old a run's state may be when a worker acts on it: pause and cancel take effect within a second.
STATE_TTL_SECONDS = 0.5
# Due retries a worker may hold unacknowledged (JetStream's default is 1,000 per consumer): a worker takes at
# most a window at a time, so this only matters when many workers share the consumer.
RETRY_MAX_ACK_PENDING = 20_000
# Batch messages a worker fleet may hold unacknowledged: those whose recipients wait for a paced domain's tokens
# come back later (a nak with a delay) and count meanwhile (JetStream's default is 1,000 per consumer).
BATCH_MAX_ACK_PENDING = 100_000
# Runs whose templates a worker keeps parsed (an entry is one occurrence of one campaign).
TEMPLATE_CACHE_SIZE = 64
# Run states in which a batch's rows are sent, and in which deferred recipients are retried (a campaign is
# Sent once nothing is Pending; its deferred recipients keep being retried).
_BATCH_STATES = frozenset({RunState.SENDING})
_RETRY_STATES = frozenset({RunState.SENDING, RunState.SENT})
# While PostgreSQL is away, a worker keeps trying to record outcomes for this long after a stop request.
RECORD_GRACE_SECONDS = 20.0


class RunStates:
    """The state of each run a worker works on, read from the database at most every STATE_TTL_SECONDS.

    Concurrent callers share one read. While the database is unreachable the last state read is used:
    nothing can be recorded then anyway, and sending stops at the next window claim.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._known: dict[int, tuple[float, RunView | None]] = {}
        self._loading: dict[int, asyncio.Task[RunView | None]] = {}

    async def get(self, campaign_id: int, *, fresh: bool = False) -> RunView | None:
        """The run's state, at most STATE_TTL_SECONDS old; with `fresh`, read now (a read already under way may
        have started before the change that the caller must see)."""
        known = self._known.get(campaign_id)
        if not fresh and known is not None and time.monotonic() - known[0] < STATE_TTL_SECONDS:
            return known[1]
        task = None if fresh else self._loading.get(campaign_id)
        if task is None:
            task = asyncio.create_task(self._load(campaign_id))
            if not fresh:
                self._loading[campaign_id] = task
                task.add_done_callback(lambda _: self._loading.pop(campaign_id, None))
        try:
            return await asyncio.shield(task)
        except (DBAPIError, OSError) as exc:
            if known is None:
                raise
            DATABASE_AWAY.failed(exc, using="the run's last known state")
            return known[1]

    async def _load(self, campaign_id: int) -> RunView | None:
        async with db.autocommit(self._engine).connect() as conn:
            view = (await claim_store.run_views(conn, [campaign_id])).get(campaign_id)
        self._known[campaign_id] = (time.monotonic(), view)
        if len(self._known) > 10_000:
            self._known.clear()
        return view


@dataclass(frozen=True)
class RunTemplates:
    """The parsed emails of one occurrence of a campaign, and the DKIM keys of its owner's sending domains."""

    by_email: Mapping[int, MessageTemplate]
    default: MessageTemplate
    signer: dkim.Signer
    # The relay the campaign is sent through ("": the From domain's route or any relay; relays.py).
    relay: str = ""

    def for_recipient(self, recipient: Recipient) -> MessageTemplate:
        if recipient.email_id is not None:
            return self.by_email.get(recipient.email_id, self.default)
        return self.default


class Templates:
    """Parses a run's content once per occurrence and keeps the most recently used runs."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._links = TrackingLinks(settings.effective_public_url(), settings.effective_token_secret())
        self._opt_in_links = OptInLinks(settings.effective_public_url(), settings.effective_token_secret())
        self._return_paths = ReturnPaths(settings.effective_bounce_domain(), settings.effective_token_secret())
        self._relay_provider = settings.relay_provider
        self._public_url = settings.effective_public_url()
        self._mailto = settings.delivery_unsubscribe_mailto
        self._key_seal = dkim.KeySeal(settings.effective_token_secret())
        self._hashed_ids = HashedIds(settings.effective_token_secret())
        self._cache: OrderedDict[tuple[int, int], RunTemplates | None] = OrderedDict()

    async def get(self, campaign_id: int, occurrence: int) -> RunTemplates | None:
        key = (campaign_id, occurrence)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        async with db.autocommit(self._engine).connect() as conn:
            found = await claim_store.run_content(conn, campaign_id)
            # The owner's DKIM keys are read with the content: once per run, not per message.
            sealed_keys = await dkim_store.run_signing_keys(conn, campaign_id) if found is not None else []
        templates = None
        if found is not None and found[0] == occurrence and found[1].get("emails"):
            templates = self._build(campaign_id, found[1], self._signer(campaign_id, sealed_keys))
        self._cache[key] = templates
        while len(self._cache) > TEMPLATE_CACHE_SIZE:
            self._cache.popitem(last=False)
        return templates

    def _signer(self, campaign_id: int, sealed_keys: Sequence[dkim.SealedKey]) -> dkim.Signer:
        signer, unreadable = dkim.opened_signer(sealed_keys, self._key_seal)
        if unreadable:
            # Sealed under another token secret: the domain's mail goes out unsigned until it is added again.
            log.error(
                "DKIM keys that do not open; those domains are sent unsigned",
                campaign_id=campaign_id,
                domains=unreadable,
            )
        return signer

    def _build(self, campaign_id: int, content: Mapping[str, object], signer: dkim.Signer) -> RunTemplates:
        emails = content["emails"]
        assert isinstance(emails, dict)
        lists = content.get("lists")
        assert lists is None or isinstance(lists, dict)
        by_email = {
            int(email_id): MessageTemplate(
                snapshot,
                campaign_id=campaign_id,
                campaign_name=str(content.get("campaign_name", "")),
                links=self._links,
                return_paths=self._return_paths,
                public_url=self._public_url,
                unsubscribe_mailto=self._mailto,
                relay_provider=self._relay_provider,
                opt_in_links=self._opt_in_links,
                lists=lists,
                hashed_ids=self._hashed_ids,
            )
            for email_id, snapshot in emails.items()
        }
        default_id = int(str(content.get("default_email_id") or next(iter(by_email))))
        default = by_email.get(default_id, next(iter(by_email.values())))
        return RunTemplates(by_email, default, signer, str(content.get("relay") or ""))


@dataclass(frozen=True)
class Window:
    """The outcomes of one window of a batch's sends, the claimant that claimed their rows, and the recipients
    among them whose address had bounced before (a delivery of theirs is announced)."""

    batch: BatchMessage
    claimant: str
    outcomes: Sequence[Outcome]
    bounced_before: frozenset[int]


class Worker:
    """One worker process: `lanes` batches at a time, each claimed and sent a window at a time."""

    def __init__(self, settings: Settings, engine: AsyncEngine, pool: RelayPool) -> None:
        self._settings = settings
        self._engine = engine
        self._rows = db.autocommit(engine)
        self._pool = pool
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._lanes = max(settings.delivery_parallel_batches, 1)
        self._window = max(1, -(-max(settings.delivery_concurrency, 1) // self._lanes))
        self._ack_wait = settings.delivery_ack_wait_seconds
        self._heartbeat = sending.heartbeat_seconds(self._ack_wait)
        self._stale_seconds = sending.stale_claim_seconds(self._ack_wait)
        self._schedule = retries.RetrySchedule.of(settings)
        self._domain_threshold = settings.delivery_domain_defer_after
        self._subjects = Subjects.of(settings)
        self._states = RunStates(engine)
        self._templates = Templates(engine, settings)
        # One pace for the whole fleet (services/delivery/pacing.py), with each relay's `rate=`.
        self.pacer = pacing.FleetPacer(engine, pacing.PacingConfig.of(settings, pool.rates()))
        self._outbox = Outbox(
            engine,
            SCHEMA,
            self._subjects,
            with_headers=True,
            unordered_prefix=retries.schedules_prefix(self._subjects),
        )
        self._stop = asyncio.Event()
        self._sent = 0
        self._handlings = 0

    # --- running -------------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Links to NATS (waiting for it as long as it takes) and works batches until `stop`."""
        self._stop = stop
        link = NatsLink(
            self._settings,
            f"delivery-worker-{os.getpid()}",
            outbox=self._outbox,
            tasks=[self._work_batches, self._work_retries],
            streams=streams.STREAMS,
            task_consumers={
                streams.WORKERS_DURABLE: streams.batches_stream,
                retries.RETRIES_DURABLE: retries.retries_stream,
            },
        )
        health.PROCESS.add("nats", link.check)
        await link.run(stop)

    async def _work_batches(self, js: JetStreamContext, subjects: Subjects, stop: asyncio.Event) -> None:
        subscription: JetStreamContext.PullSubscription | None = None

        async def setup() -> None:
            nonlocal subscription
            durable = subjects.durable(streams.WORKERS_DURABLE)
            stream = streams.batches_stream(subjects)
            # Created or updated: the stale-claim rule assumes the consumer's ack wait is this worker's.
            await js.add_consumer(
                stream,
                config=ConsumerConfig(
                    durable_name=durable,
                    filter_subject=streams.batches_subject(subjects),
                    ack_wait=self._ack_wait,
                    max_deliver=-1,
                    ack_policy=AckPolicy.EXPLICIT,
                    # Batches waiting for a paced domain's tokens (nak'd with a delay) count as unacknowledged.
                    max_ack_pending=BATCH_MAX_ACK_PENDING,
                ),
            )
            subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)

        if not await natsutil.until_ready(setup, stop, "batches consumer"):
            return
        assert subscription is not None
        natsutil.REDELIVERIES_TOTAL.labels(streams.WORKERS_DURABLE)  # the series exists (at 0) from the start
        log.info("delivery worker started", worker_id=self.worker_id, lanes=self._lanes, window=self._window)
        await asyncio.gather(self._measure(stop), *(self._lane(subscription, stop) for _ in range(self._lanes)))

    async def _lane(self, subscription: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                messages = await subscription.fetch(batch=1, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except natsutil.NATS_FAILURES as exc:
                _FETCH_FAILING.failed(exc, what="batches")
                await natsutil.sleep_unless_stopped(stop, 0.5)
                continue
            _FETCH_FAILING.recovered()
            natsutil.count_redeliveries(streams.WORKERS_DURABLE, messages)
            for message in messages:
                try:
                    await self._handle(message)
                except Exception:
                    # Whatever it was, this lane goes on with the next batch (a lane that ended would leave
                    # the worker short of one); the batch comes back later, its unconfirmed claims resolved then.
                    log.exception("batch handling failed; it will come back")
                    await natsutil.settle(message.nak(delay=natsutil.redelivery_delay(message)), "nak")

    # --- due retries of deferred recipients -----------------------------------------------------------------

    async def _work_retries(self, js: JetStreamContext, subjects: Subjects, stop: asyncio.Event) -> None:
        subscription: JetStreamContext.PullSubscription | None = None

        async def setup() -> None:
            nonlocal subscription
            durable = subjects.durable(retries.RETRIES_DURABLE)
            stream = retries.retries_stream(subjects)
            await js.add_consumer(
                stream,
                config=ConsumerConfig(
                    durable_name=durable,
                    filter_subject=retries.due_subject(subjects),
                    ack_wait=self._ack_wait,
                    max_deliver=-1,
                    ack_policy=AckPolicy.EXPLICIT,
                    max_ack_pending=RETRY_MAX_ACK_PENDING,
                ),
            )
            subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)

        if not await natsutil.until_ready(setup, stop, "retries consumer"):
            return
        assert subscription is not None
        natsutil.REDELIVERIES_TOTAL.labels(retries.RETRIES_DURABLE)
        while not stop.is_set():
            try:
                messages = await subscription.fetch(batch=self._window, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except natsutil.NATS_FAILURES as exc:
                _FETCH_FAILING.failed(exc, what="retries")
                await natsutil.sleep_unless_stopped(stop, 0.5)
                continue
            _FETCH_FAILING.recovered()
            natsutil.count_redeliveries(retries.RETRIES_DURABLE, messages)
            by_campaign: dict[int, tuple[list[Msg], list[tuple[int, int]]]] = {}
            for message in messages:
                try:
                    retry = events.DELIVERY_RETRY.decode(message.data)
                except UndecodableEvent as exc:
                    log.error("undecodable retry message terminated", error=str(exc), payload=message.data[:200])
                    await natsutil.settle(message.term(), "term")
                    continue
                taken, due = by_campaign.setdefault(retry.campaign_id, ([], []))
                taken.append(message)
                due.extend((recipient_id, retry.attempt) for recipient_id in retries.recipients_of(retry))
            # Due retries of one campaign travel together: one claim, one unit of work for their outcomes.
            await asyncio.gather(*(self._handle_retries(c, *work) for c, work in by_campaign.items()))

    async def _handle_retries(self, campaign_id: int, messages: list[Msg], due: Sequence[tuple[int, int]]) -> None:
        self._handlings += 1
        claimant = f"{self.worker_id}#r{self._handlings}"
        RETRIES_TOTAL.inc(len(due))
        traced = tracing.consuming(messages[0].subject, [m.headers for m in messages], retries.RETRIES_DURABLE)
        with structlog.contextvars.bound_contextvars(campaign_id=campaign_id), traced:
            tracing.set_attributes({"herald.campaign_id": campaign_id})
            try:
                async with natsutil.kept_alive(messages, self._heartbeat):
                    finished = await self._retry(campaign_id, claimant, due)
            except (DBAPIError, OSError) as exc:
                DATABASE_AWAY.failed(exc, dropped="due retries; they will come back")
                for message in messages:
                    await natsutil.settle(message.nak(delay=natsutil.redelivery_delay(message)), "nak")
                return
        for message in messages:
            if not isinstance(finished, bool):
                # Recipients set aside for a paced domain's tokens (Deferred again): the messages come back then.
                await natsutil.settle(message.nak(delay=finished), "nak")
                continue
            # A worker stopping midway hands the messages on: the rows it released are Deferred again.
            await natsutil.settle(message.ack() if finished else message.nak(), "ack" if finished else "nak")

    async def _retry(self, campaign_id: int, claimant: str, due: Sequence[tuple[int, int]]) -> bool | float:
        """Sends to the deferred recipients whose retry is due, once each, a window at a time (as a batch's rows:
        a worker killed at any instant leaves at most a window unconfirmed); records what became of them.

        False when the worker stopped midway: the messages come back to another worker. (When the run was
        paused or cancelled meanwhile, the resume schedules the rest again, or the cancel dropped them.) A number of
        seconds when the pacer set recipients aside: they are Deferred again, and the messages come back then.
        """
        view = await self._states.get(campaign_id)
        if view is None or view.state not in _RETRY_STATES:
            # Paused: they stay Deferred and the resume schedules them again. Cancelled: they were dropped.
            return True
        domains = retries.DomainDeferrals(self._domain_threshold)
        aside: list[tuple[str, float]] = []
        async with RowSession(self._outbox, self._stop) as rows:
            for start in range(0, len(due), self._window):
                window = due[start : start + self._window]
                if not await self._retry_window(rows, campaign_id, claimant, view, domains, window, aside):
                    break
        # A retry claimed while the main send ended held the run open: it may be finished now.
        await finish_if_done(self._outbox, campaign_id)
        if aside and not self._stop.is_set():
            return await self.pacer.come_back_after([a for a, _ in aside], [w for _, w in aside])
        return not self._stop.is_set()

    async def _retry_window(
        self,
        rows: RowSession,
        campaign_id: int,
        claimant: str,
        view: RunView,
        domains: retries.DomainDeferrals,
        due: Sequence[tuple[int, int]],
        aside: list[tuple[str, float]],
    ) -> bool:
        """One window of due retries; False when the run or the worker stopped meanwhile. Recipients the pacer set
        aside are added to `aside` (address, wait)."""
        claimed, stale = await rows.run(
            functools.partial(
                claim_store.claimed_retries,
                campaign_id=campaign_id,
                claimant=claimant,
                retries=due,
                stale_seconds=self._stale_seconds,
                events_subject=self._events_subject(campaign_id),
            )
        )
        if stale:
            FAILED_TOTAL.labels("retry_unsendable").inc(stale)
            log.warning(
                "deferred rows Failed instead of retried: a stopped worker's (ambiguous) or of a replaced occurrence",
                rows=stale,
            )
        if claimed:
            templates = await self._templates.get(campaign_id, view.occurrence)
            if templates is None:
                outcomes = [
                    Outcome(row.recipient_id, RecipientStatus.FAILED, 0, "the run's content to send is gone")
                    for row in claimed
                ]
            else:
                outcomes = list(
                    await asyncio.gather(
                        *(self._send(campaign_id, row, templates, domains, _RETRY_STATES) for row in claimed)
                    )
                )
            unsent = [o.recipient_id for o in outcomes if o.status == RecipientStatus.PENDING]
            window = Window(
                BatchMessage(campaign_id, 0, view.generation),
                claimant,
                [o for o in outcomes if o.status != RecipientStatus.PENDING],
                frozenset(row.recipient_id for row in claimed if row.bounced_before),
            )
            if sending.announced_outcomes(window.outcomes, window.bounced_before):
                await rows.run_in_unit_of_work(functools.partial(self._record_announced, window=window))
            else:
                # As a batch's window: the outcomes and the retry messages of those deferred again in one
                # statement, which locks the campaign's counts row only while it runs (the main send's
                # windows write the same row).
                await rows.run(
                    functools.partial(
                        claim_store.record_outcomes,
                        campaign_id=campaign_id,
                        claimant=claimant,
                        outcomes=window.outcomes,
                        outbox_rows=retries.outbox_rows(
                            self._subjects, self._deferrals(campaign_id, window.outcomes)
                        ),
                        events_subject=self._events_subject(campaign_id),
                    )
                )
            if unsent:
                await rows.run(
                    functools.partial(
                        claim_store.released_retries,
                        campaign_id=campaign_id,
                        claimant=claimant,
                        recipient_ids=unsent,
                    )
                )
                addresses = {row.recipient_id: row.email_address for row in claimed}
                aside.extend((addresses[o.recipient_id], o.set_aside) for o in outcomes if o.set_aside is not None)
                if any(o.status == RecipientStatus.PENDING and o.set_aside is None for o in outcomes):
                    return False
        return not self._stop.is_set()

    async def _measure(self, stop: asyncio.Event) -> None:
        """Keeps the emails-per-second gauge current."""
        last = self._sent
        while not stop.is_set():
            await natsutil.sleep_unless_stopped(stop, 5.0)
            EMAILS_PER_SECOND.set((self._sent - last) / 5.0)
            last = self._sent

    # --- one batch -----------------------------------------------------------------------------------------------

    async def _handle(self, message: Msg) -> None:
        started = time.monotonic()
        try:
            batch = delivery_events.batch_message(events.DELIVERY_BATCH.decode(message.data))
        except UndecodableEvent as exc:
            log.error("undecodable batch message terminated", error=str(exc), payload=message.data[:200])
            await natsutil.settle(message.term(), "term")
            return
        log_context = structlog.contextvars.bound_contextvars(
            campaign_id=batch.campaign_id, batch_id=batch.batch_id, generation=batch.generation
        )
        with log_context, tracing.consuming(message.subject, [message.headers], streams.WORKERS_DURABLE):
            tracing.set_attributes(
                {
                    "herald.campaign_id": batch.campaign_id,
                    "herald.batch_id": batch.batch_id,
                    "herald.generation": batch.generation,
                }
            )
            try:
                async with natsutil.kept_alive(message, self._heartbeat):
                    done = await self._work(batch)
                    if done is True:
                        await finish_if_done(self._outbox, batch.campaign_id)
            except (DBAPIError, OSError) as exc:
                # PostgreSQL away: the batch comes back later; what was claimed and not recorded is
                # resolved as ambiguous then, never sent twice.
                DATABASE_AWAY.failed(exc, dropped="a batch; it will come back")
                await natsutil.settle(message.nak(delay=natsutil.redelivery_delay(message)), "nak")
                return
            if not isinstance(done, bool):
                # Recipients set aside for a paced domain's tokens (Pending): the batch comes back at their turn.
                await natsutil.settle(message.nak(delay=done), "nak")
                return
            await natsutil.settle(message.ack() if done else message.nak(), "ack" if done else "nak")
        BATCH_SECONDS.observe(time.monotonic() - started)

    async def _work(self, batch: BatchMessage) -> bool | float:
        """Sends what the batch holds for this generation; False when stopped midway (the batch goes to another worker),
        a number of seconds when recipients were set aside by the pacer (the batch comes back then)."""
        # Each handling of a batch message claims under its own name, so that its claims are told apart
        # from those of an earlier handling (of this worker or another) that stopped midway.
        self._handlings += 1
        claimant = f"{self.worker_id}#{self._handlings}"
        async with RowSession(self._outbox, self._stop) as rows:
            stale = await rows.run(
                functools.partial(
                    claim_store.resolved_stale_claim_count,
                    campaign_id=batch.campaign_id,
                    batch_id=batch.batch_id,
                    claimant=claimant,
                    stale_seconds=self._stale_seconds,
                    events_subject=self._events_subject(batch.campaign_id),
                )
            )
            if stale:
                FAILED_TOTAL.labels("ambiguous").inc(stale)
                log.warning("rows of a stopped worker marked ambiguous", rows=stale)
            # A run of single messages (a list's confirmations, a user's previews) may have a new occurrence with
            # new content for each batch: its state is read afresh, so that the batch gets the content it was
            # queued with, not the last one this worker parsed.
            view = await self._states.get(batch.campaign_id, fresh=sending.is_opt_in_run(batch.campaign_id))
            if view is None or view.state != RunState.SENDING:
                return True
            templates = await self._templates.get(batch.campaign_id, view.occurrence)
            if templates is None:
                if sending.is_opt_in_run(batch.campaign_id):
                    # A list's confirmation email changed a moment ago and this worker's view of the run is
                    # older than its content: the batch comes back once the view is fresh.
                    log.info(
                        "opt-in run content newer than the view; batch comes back", occurrence=view.occurrence
                    )
                    return False
                log.error("the run has no content to send; batch skipped", occurrence=view.occurrence)
                return True
            outcomes: list[Outcome] = []
            # The claimed rows whose address had bounced before: their delivery is announced.
            bounced_before: frozenset[int] = frozenset()
            domains = retries.DomainDeferrals(self._domain_threshold)
            # Rows the pacer set aside (Pending again, not claimed again by this handling): address and wait; the
            # recipient domains whose rows this handling claims no more (their bucket is empty now).
            aside: dict[int, tuple[str, float]] = {}
            paced: set[str] = set()
            while True:
                window = Window(batch, claimant, outcomes, bounced_before)
                if any(o.status == RecipientStatus.PENDING and o.set_aside is None for o in outcomes):
                    await rows.run_in_unit_of_work(functools.partial(self._release, window=window))
                    return not self._stop.is_set()
                if sending.announced_outcomes(outcomes, bounced_before):
                    # Rare: the outcomes and their announcements in one unit of work. A window of deliveries
                    # and deferrals is written with the next claim below, in one statement, as ever.
                    await rows.run_in_unit_of_work(functools.partial(self._record_announced, window=window))
                    outcomes = []
                view = await self._states.get(batch.campaign_id)
                more = not self._stop.is_set() and view is not None and view.state == RunState.SENDING
                # The deferred recipients' retry messages go into the outbox with their outcomes. The relay is
                # not woken: its next poll (within half a second) publishes a pass's worth together.
                retry_rows = retries.outbox_rows(self._subjects, self._deferrals(batch.campaign_id, outcomes))
                claimed = await rows.run(
                    functools.partial(
                        claim_store.recorded_and_claimed,
                        campaign_id=batch.campaign_id,
                        batch_id=batch.batch_id,
                        generation=batch.generation,
                        claimant=claimant,
                        outcomes=outcomes,
                        # A long wait (a warm-up's day used up) holds the whole batch: it comes back then.
                        limit=self._window if more and not _long_wait(aside) else 0,
                        outbox_rows=retry_rows,
                        events_subject=self._events_subject(batch.campaign_id),
                        skip=list(aside),
                        skip_domains=sorted(paced),
                    )
                )
                if not claimed:
                    if aside and more:
                        # Only recipients of paced domains are left: the batch comes back at their turn.
                        addresses = [address for address, _ in aside.values()]
                        return await self.pacer.come_back_after(addresses, [wait for _, wait in aside.values()])
                    return not self._stop.is_set()
                bounced_before = frozenset(row.recipient_id for row in claimed if row.bounced_before)
                outcomes = list(
                    await asyncio.gather(
                        *(self._send(batch.campaign_id, row, templates, domains, _BATCH_STATES) for row in claimed)
                    )
                )
                for row, outcome in zip(claimed, outcomes, strict=True):
                    if outcome.set_aside is not None:
                        aside[row.recipient_id] = (row.email_address, outcome.set_aside)
                        paced.update(self.pacer.paced_domains(row.email_address))

    async def _send(
        self,
        campaign_id: int,
        recipient: ClaimedRecipient,
        templates: RunTemplates,
        domains: retries.DomainDeferrals,
        states: frozenset[RunState],
    ) -> Outcome:
        """The outcome of one recipient; a fault of Herald's own is a visible Failed row, never a silent resend."""
        try:
            return await self._deliver(campaign_id, recipient, templates, domains, states)
        except (DBAPIError, OSError) as exc:
            # The run's state could not be read before the first send: nothing went out.
            DATABASE_AWAY.failed(exc, dropped="a recipient, not sent: the run's state is unknown")
            return Outcome(recipient.recipient_id, RecipientStatus.PENDING, 0, "")
        except Exception as exc:
            log.exception("sending one message failed unexpectedly", recipient_id=recipient.recipient_id)
            FAILED_TOTAL.labels("internal").inc()
            return Outcome(
                recipient.recipient_id,
                RecipientStatus.FAILED,
                0,
                f"ambiguous: internal error while sending: {exc!r}",
            )

    async def _deliver(
        self,
        campaign_id: int,
        recipient: ClaimedRecipient,
        templates: RunTemplates,
        domains: retries.DomainDeferrals,
        states: frozenset[RunState],
    ) -> Outcome:
        """Sends one message once: Sent, Failed, or Deferred with its next attempt; Pending when the run is no
        longer in one of `states` before it went out."""
        view = await self._states.get(campaign_id)
        if self._stop.is_set() or view is None or view.state not in states:
            return Outcome(recipient.recipient_id, RecipientStatus.PENDING, 0, "")
        deferral = domains.deferral(recipient.email_address)
        if deferral is not None:
            # The domain defers everything in this batch: not tried, deferred with its reply. It counts as an
            # attempt (the domain's answer to this batch), so each deferral has an attempt count of its own.
            DEFERRED_TOTAL.labels("domain").inc()
            return self._deferred(recipient, 1, deferral.error, None)
        template = templates.for_recipient(recipient)
        message_id: str | None = None

        def content() -> bytes:
            # Rendered and signed only once the server accepted the envelope: a greylisted recipient costs none.
            nonlocal message_id
            message = template.render(recipient)
            message_id = message.message_id
            return templates.signer.sign(message.data)

        wait = await self.pacer.admit(recipient.email_address, campaign_id, template.sender)
        if wait is not None:
            # No token of its domain now: back to the queue, not an attempt; the other domains go on.
            return Outcome(recipient.recipient_id, RecipientStatus.PENDING, 0, "", set_aside=wait)
        try:
            with tracing.span(
                "smtp.send",
                kind=tracing.SpanKind.CLIENT,
                attributes={"herald.campaign_id": campaign_id, "herald.recipient_id": recipient.recipient_id},
            ):
                # MAIL FROM is the recipient's signed return path: bounces come back to the bounce receiver.
                await self._pool.send(
                    template.return_path(recipient),
                    recipient.email_address,
                    content,
                    relay=templates.relay,
                    from_address=template.sender,
                    before_attempt=self._before_attempt,
                )
        except SmtpSendError as exc:
            SMTP_REPLIES_TOTAL.labels(_reply_class(exc.reply.code) if exc.reply is not None else "none").inc()
            error = str(exc.reply) if exc.reply is not None else str(exc)
            self.pacer.answered(recipient.email_address, exc.reply.code if exc.reply else None, error)
            if exc.maybe_delivered:
                FAILED_TOTAL.labels("ambiguous").inc()
                return Outcome(
                    recipient.recipient_id,
                    RecipientStatus.FAILED,
                    1,
                    f"{sending.AMBIGUOUS_CONNECTION} ({error})",
                    message_id,
                )
            # The server's refusal of this recipient is a bounce to classify and record (a temporary one
            # only if the recipient is given up).
            refusal = Refusal(exc.reply.code, error) if exc.refuses_recipient and exc.reply else None
            if exc.permanent:
                FAILED_TOTAL.labels("permanent").inc()
                return Outcome(
                    recipient.recipient_id, RecipientStatus.FAILED, 1, error, message_id, refusal=refusal
                )
            domains.temporary(recipient.email_address, exc.reply.code if exc.reply else None, error)
            DEFERRED_TOTAL.labels("reply" if exc.reply else "connection").inc()
            return self._deferred(recipient, 1, error, refusal, message_id)
        domains.delivered(recipient.email_address)
        self.pacer.answered(recipient.email_address, 250)
        SMTP_REPLIES_TOTAL.labels("2xx").inc()
        SENT_TOTAL.inc()
        self._sent += 1
        return Outcome(recipient.recipient_id, RecipientStatus.SENT, 1, "", message_id, datetime.now(UTC))

    async def _before_attempt(self, relay: Relay) -> None:
        await self.pacer.admit_relay(relay.name)

    def _deferred(
        self,
        recipient: ClaimedRecipient,
        tried: int,
        error: str,
        refusal: Refusal | None,
        message_id: str | None = None,
    ) -> Outcome:
        """Deferred until the schedule's next attempt, or Failed when the recipient was deferred for too long."""
        now = datetime.now(UTC)
        deferrals = max(recipient.attempts + tried, 1)
        due = self._schedule.next_attempt(deferrals, recipient.deferred_since or now, now)
        if due is None:
            FAILED_TOTAL.labels("deferred_too_long").inc()
            since = recipient.deferred_since or now
            return Outcome(
                recipient.recipient_id,
                RecipientStatus.FAILED,
                tried,
                f"deferred since {since:%Y-%m-%d %H:%M:%S} UTC, given up after {deferrals} attempts: {error}",
                message_id,
                refusal=refusal,
            )
        return Outcome(
            recipient.recipient_id,
            RecipientStatus.DEFERRED,
            tried,
            error,
            message_id,
            next_attempt_at=due,
            retry_attempt=recipient.attempts + tried,
        )

    async def _record_announced(self, work: UnitOfWork, window: Window) -> None:
        """Writes a window's outcomes with the bounces its refusals record, the deliveries after a bounce and the
        deferred recipients' retries."""
        batch, outcomes = window.batch, window.outcomes
        due = self._deferrals(batch.campaign_id, outcomes)
        await claim_store.record_outcomes(
            work.conn,
            batch.campaign_id,
            window.claimant,
            outcomes,
            events_subject=self._events_subject(batch.campaign_id),
        )
        await bounce_recording.announce_window(work, batch, outcomes, window.bounced_before)
        retries.schedule(work, self._subjects, due)

    def _events_subject(self, campaign_id: int) -> str | None:
        """Where a window's Sent and Failed rows are announced (the subject's fixed part); None: not at all."""
        return self._subjects.event(events.DELIVERY_EVENTS) if recipient_events.announces(campaign_id) else None

    @staticmethod
    def _deferrals(campaign_id: int, outcomes: Sequence[Outcome]) -> list[retries.DueRetry]:
        """The retries of a window's deferred outcomes, made due together (retries.together): each outcome's
        next attempt becomes its group's, so that the row says when its retry message comes."""
        deferred = [
            (o, o.next_attempt_at)
            for o in outcomes
            if o.status == RecipientStatus.DEFERRED and o.next_attempt_at is not None
        ]
        due = retries.together(
            [retries.DueRetry(campaign_id, o.recipient_id, o.retry_attempt, at) for o, at in deferred]
        )
        for (outcome, _), retry in zip(deferred, due, strict=True):
            outcome.next_attempt_at = retry.due
        return due

    async def _release(self, work: UnitOfWork, window: Window) -> None:
        """Writes a window whose unsent rows go back to the queue, under the run's lock, so that a cancel or a
        resume that happened meanwhile is seen: they are Dropped after a cancel, and published again at once
        after a resume (rather than left Pending with no batch message)."""
        conn, batch, outcomes = work.conn, window.batch, window.outcomes
        run = await queue_store.run_for_update(conn, batch.campaign_id)
        state = run.state if run is not None else RunState.CANCELLED
        if state == RunState.CANCELLED:
            for outcome in outcomes:
                if outcome.status == RecipientStatus.PENDING:
                    outcome.status, outcome.error = RecipientStatus.DROPPED, "campaign cancelled"
        due = self._deferrals(batch.campaign_id, outcomes)
        await claim_store.record_outcomes(
            conn,
            batch.campaign_id,
            window.claimant,
            outcomes,
            events_subject=self._events_subject(batch.campaign_id),
        )
        if sending.announced_outcomes(outcomes, window.bounced_before):
            await bounce_recording.announce_window(work, batch, outcomes, window.bounced_before)
        retries.schedule(work, self._subjects, due)
        if state == RunState.SENDING and not self._stop.is_set():
            generation = await queue_store.next_generation(conn, batch.campaign_id)
            await queue_store.republished_batch_count(work, batch.campaign_id, generation, batch_id=batch.batch_id)


class RowSession:
    """One connection for the statements of one batch, replaced and retried while PostgreSQL is away.

    The outcomes of sent messages must be written: a statement is retried until it succeeds, or, once
    the worker is stopping, for RECORD_GRACE_SECONDS (then the rows are resolved as ambiguous later).
    """

    def __init__(self, outbox: Outbox, stop: asyncio.Event) -> None:
        self._outbox = outbox
        self._autocommit = db.autocommit(outbox.engine)
        self._stop = stop
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> RowSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def run(self, statement: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """The statement's result, on the session's connection (autocommit)."""

        async def attempt() -> T:
            if self._conn is None:
                self._conn = await self._autocommit.connect()
            return await statement(self._conn)

        return await self._retried(attempt)

    async def run_in_unit_of_work(self, statements: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """The result of `statements`, run in a unit of work of their own (one transaction, which may publish)."""

        async def attempt() -> T:
            async with self._outbox.unit_of_work() as work:
                return await statements(work)

        return await self._retried(attempt)

    async def _retried(self, attempt: Callable[[], Awaitable[T]]) -> T:
        deadline: float | None = None
        delay = 0.2
        while True:
            try:
                result = await attempt()
            except (DBAPIError, OSError) as exc:
                if self._conn is not None:
                    await self._conn.invalidate()
                    await self._conn.close()
                    self._conn = None
                if self._stop.is_set():
                    deadline = deadline or time.monotonic() + RECORD_GRACE_SECONDS
                    if time.monotonic() > deadline:
                        raise
                DATABASE_AWAY.failed(exc, retrying="a statement of a batch")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                DATABASE_AWAY.recovered()
                return result


def _long_wait(aside: Mapping[int, tuple[str, float]]) -> bool:
    """Whether a recipient set aside waits long (a warm-up's next day): the batch claims nothing more meanwhile."""
    return any(wait >= pacing.LONG_WAIT_SECONDS for _, wait in aside.values())


def _reply_class(code: int) -> str:
    """2xx, 4xx or 5xx (anything else a server says is counted as 5xx: it is no reply that SMTP defines)."""
    return f"{code // 100}xx" if code // 100 in (2, 4) else "5xx"


def db_error(exc: Exception) -> str:
    """A database error for a log line: the driver's message, without the statement and its parameters."""
    original = getattr(exc, "orig", None)
    return f"{type(original or exc).__name__}: {original or exc}".strip()


async def main(settings: Settings) -> None:
    if not settings.smtp_url:
        raise SystemExit("the delivery worker needs SMTP_URL (herald run sets it to its local mail capture)")
    relays = parse_relays(settings.smtp_url)
    routes = parse_routes(settings.smtp_routes, relays)
    if settings.delivery_worker_nice:
        # Bulk work yields the CPU to the processes answering calls (README, HERALD_DELIVERY_WORKER_NICE).
        niceness = os.nice(settings.delivery_worker_nice)
        log.info("delivery worker runs at a lower CPU priority", nice=niceness)
    lanes = max(settings.delivery_parallel_batches, 1)
    engine = db.make_engine(settings, pool_size=lanes + 3)
    # Workers may start before the delivery service has migrated; migrating is idempotent and locked.
    await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = RelayPool(
        relays,
        routes,
        pool=lambda relay: SmtpConnectionPool(
            relay.target,
            size=max(settings.delivery_concurrency, 1),
            max_messages_per_connection=1000,
            timeout=settings.delivery_smtp_timeout_seconds,
        ),
        health_check_seconds=settings.smtp_health_check_seconds,
    )
    worker = Worker(settings, engine, pool)
    smtp = ", ".join(f"{relay.name}: {relay.target.describe()}" for relay in relays)
    log.info("delivery worker starting", smtp=smtp, routes=routes, worker_id=worker.worker_id)
    # Readiness on the metrics port (/readyz; services/common/health.py): the worker's PostgreSQL and NATS.
    health.PROCESS.add("postgresql", health.postgres_check(settings, "delivery-worker"))
    try:
        await asyncio.gather(worker.run(stop), health.PROCESS.runner(settings)(stop))
    finally:
        await worker.pacer.close()
        await pool.close()
        await engine.dispose()
    log.info("delivery worker stopped", worker_id=worker.worker_id)
