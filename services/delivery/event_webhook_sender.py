"""Event webhooks out (docs/webhooks.md): events consumed durably from JetStream into one row per endpoint, then POSTed, signed, in order per campaign, retried with backoff until the endpoint is disabled.

The ingest is one durable consumer of the events stream (campaign status changes and the per-recipient
DeliveryEvents), handled strictly in stream order: JetStream lets one message out at a time (to whichever
delivery replica asks), it is acked only once its rows are committed, and a failed commit is retried in
place rather than handed back, so no later message overtakes it. Each event
gets an id derived from its JetStream message, the same on every redelivery, so the rows' primary key
keeps a redelivered message from adding anything.

The dispatcher claims the head of each (endpoint, campaign) queue that is due, POSTs it, and settles it;
the next event of that campaign waits until its predecessor is delivered. Each connection resolves its
name through the guarded resolver, so an endpoint whose name now points at a private address is refused
at delivery as at registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
import nats.errors
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Histogram
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from yarl import URL

from services.common import db, events, natsutil
from services.common.config import Settings
from services.common.events import UndecodableEvent
from services.common.logging import RepeatingFailure
from services.common.natsutil import Subjects
from services.common.urlguard import AddressRefused, GuardedResolver
from services.delivery import dkim, event_webhook_store
from services.delivery.event_webhooks import (
    CAMPAIGN_STATUS_CHANGED,
    RECIPIENT_TYPE_PREFIX,
    OutgoingEvent,
    RetrySchedule,
    disabled_reason,
    event_id,
    event_type_of_recipient_kind,
    payload,
    signed_headers,
)

log = structlog.get_logger()
T = TypeVar("T")
# Storing ingested events keeps failing while PostgreSQL is away: logged once, then a line a minute with a count.
_STORE_FAILING = RepeatingFailure("cannot store events for webhooks; retrying", traceback=True)
_RECORD_FAILING = RepeatingFailure("cannot record an event webhook attempt", traceback=True)

# docs/operations.md, "Metrics"; "event webhooks" are the outgoing ones (herald_webhook_* are the provider webhooks).
EVENTS_WRITTEN = Counter(
    "herald_event_webhook_events_total", "Events written for event webhook endpoints (one per endpoint and event)"
)
SKIPPED = Counter(
    "herald_event_webhook_messages_skipped_total",
    "Messages of per-recipient events acked undecoded: no enabled endpoint of their owner asks for recipient events",
)
ATTEMPTS = Counter("herald_event_webhook_attempts_total", "POSTs of events to endpoints", ["outcome"])
ATTEMPT_SECONDS = Histogram("herald_event_webhook_attempt_seconds", "Time a POST of an event to an endpoint took")
DISABLED = Counter(
    "herald_event_webhook_endpoints_disabled_total", "Endpoints disabled after failing for the retry horizon"
)
for _outcome in ("delivered", "failed"):
    ATTEMPTS.labels(_outcome)

DURABLE = "delivery-event-webhooks"
USER_AGENT = "Herald-Webhooks/1"
# How long a claimed event is held beyond the POST's timeout before another dispatcher may take it.
CLAIM_MARGIN_SECONDS = 30.0
PRUNE_EVERY_SECONDS = 600.0
KEEP_DELIVERED_DAYS = 8.0  # past the events stream's seven days: no redelivery can come after
KEEP_ATTEMPTS_DAYS = 30.0


class SecretSeal(dkim.KeySeal):
    """Endpoints' signing secrets at rest: sealed like DKIM keys, under a key derived for this purpose."""

    _INFO = b"herald delivery: event webhook signing secrets at rest, v1"

    def seal_secret(self, secret: str, owner_user_id: int) -> bytes:
        return self.seal(secret.encode("ascii"), owner_user_id, "event-webhook")

    def open_secret(self, sealed: bytes, owner_user_id: int) -> str:
        return self.open(sealed, owner_user_id, "event-webhook").decode("ascii")


def _data(message: Message) -> dict[str, object]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def recipient_events_owner(subject_suffix: str) -> int | None:
    """The owner a DeliveryEvents message is about, from its subject below the namespace
    (`events.delivery.recipients.<owner>.<campaign>`); None for any other subject."""
    head, _, tail = subject_suffix.partition(f"{events.DELIVERY_EVENTS.subject}.")
    if head or not tail:
        return None
    owner = tail.split(".", 1)[0]
    return int(owner) if owner.isdigit() else None


def outgoing_events(
    namespace: str,
    subject_suffix: str,
    payload_bytes: bytes,
    sequence: int,
    published: datetime,
    wanted: frozenset[str] | None = None,
) -> list[OutgoingEvent]:
    """The events one JetStream message carries, by its subject below the namespace (UndecodableEvent if the
    payload is not its message); with `wanted`, only the recipient events of those types."""
    published_us = int(published.timestamp() * 1_000_000)
    if subject_suffix == events.CAMPAIGN_STATUS_CHANGED.subject:
        change = events.CAMPAIGN_STATUS_CHANGED.decode(payload_bytes)
        identifier = event_id(namespace, sequence, published_us, 0)
        return [
            OutgoingEvent(
                owner_user_id=change.owner_user_id,
                campaign_id=change.campaign_id,
                event_id=identifier,
                event_type=CAMPAIGN_STATUS_CHANGED,
                stream_sequence=sequence,
                position=0,
                body=payload(identifier, CAMPAIGN_STATUS_CHANGED, published, _data(change)),
            )
        ]
    batch = events.DELIVERY_EVENTS.decode(payload_bytes)
    found = []
    for position, event in enumerate(batch.events):
        event_type = event_type_of_recipient_kind(event.kind)
        if event_type is None or (wanted is not None and event_type not in wanted):
            continue
        identifier = event_id(namespace, sequence, published_us, position)
        occurred = event.occur_time.ToDatetime(tzinfo=UTC) if event.HasField("occur_time") else published
        found.append(
            OutgoingEvent(
                owner_user_id=event.owner_user_id,
                campaign_id=event.campaign_id,
                event_id=identifier,
                event_type=event_type,
                stream_sequence=sequence,
                position=position,
                body=payload(identifier, event_type, occurred, _data(event)),
            )
        )
    return found


class EventWebhookSender:
    """The delivery service's event webhooks: `ingest` on its NATS link, `run` beside it."""

    def __init__(self, engine: AsyncEngine, settings: Settings, seal: SecretSeal) -> None:
        self._engine = engine
        self._seal = seal
        self._namespace = settings.nats_namespace
        self._allow_private = settings.allow_private_urls
        self._timeout = settings.event_webhook_timeout_seconds
        self._poll = settings.event_webhook_poll_seconds
        self._concurrency = settings.event_webhook_concurrency
        self._schedule = RetrySchedule(
            settings.event_webhook_retry_first_seconds,
            settings.event_webhook_retry_max_seconds,
            settings.event_webhook_retry_horizon_seconds,
        )
        self._wake = asyncio.Event()

    @functools.cached_property
    def _reads(self) -> AsyncEngine:
        """The ingest's one-statement read, asked for every event message: no BEGIN and COMMIT round trips."""
        return db.autocommit(self._engine)

    # --- ingest ------------------------------------------------------------------------------------------------

    async def ingest(self, js: JetStreamContext, subjects: Subjects, stop: asyncio.Event) -> None:
        """Consumes the events endpoints may ask for, in stream order, into their rows (a NatsLink task)."""
        durable = subjects.durable(DURABLE)
        subscription: JetStreamContext.PullSubscription | None = None

        async def setup() -> None:
            nonlocal subscription
            try:
                await js.consumer_info(subjects.events_stream, durable)
            except NotFoundError:
                # From the events published after the consumer first exists: none is older than every endpoint.
                await js.add_consumer(
                    subjects.events_stream,
                    ConsumerConfig(
                        durable_name=durable,
                        filter_subjects=[
                            subjects.event(events.CAMPAIGN_STATUS_CHANGED),
                            events.delivery_events_subject(subjects, "*", "*"),
                        ],
                        deliver_policy=DeliverPolicy.NEW,
                        ack_policy=AckPolicy.EXPLICIT,
                        ack_wait=30,
                        max_deliver=-1,
                        # One message out at a time, to whichever replica asks: rows are written in stream
                        # order even with several delivery services.
                        max_ack_pending=1,
                    ),
                )
            subscription = await js.pull_subscribe_bind(durable=durable, stream=subjects.events_stream)

        if not await natsutil.until_ready(setup, stop, f"{DURABLE} consumer"):
            return
        assert subscription is not None
        natsutil.REDELIVERIES_TOTAL.labels(DURABLE)
        fetch_failing = RepeatingFailure("event fetch failed; retrying", durable=DURABLE)
        while not stop.is_set():
            try:
                messages = await subscription.fetch(batch=1, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except natsutil.NATS_FAILURES as exc:
                fetch_failing.failed(exc)
                await natsutil.sleep_unless_stopped(stop, 0.5)
                continue
            fetch_failing.recovered()
            natsutil.count_redeliveries(DURABLE, messages)
            await self._ingest_in_order(messages, subjects, stop)

    async def _ingest_in_order(self, messages: Sequence[Msg], subjects: Subjects, stop: asyncio.Event) -> None:
        prefix = f"{subjects.namespace}."
        for message in messages:
            metadata = message.metadata
            subject_suffix = message.subject.removeprefix(prefix)
            wanted: frozenset[str] | None = None
            owner = recipient_events_owner(subject_suffix)
            if owner is not None:
                # Most owners have no endpoint: their events (a queued and a sent one per recipient) are not
                # decoded at all. Which endpoints count is what the INSERT below would join with: enabled ones of
                # the owner that existed when the message was published.
                types = await self._stored(
                    stop,
                    functools.partial(
                        event_webhook_store.wanted_event_types,
                        owner_user_id=owner,
                        published_at=metadata.timestamp,
                    ),
                    read=True,
                )
                if types is None:
                    return  # stopping: the message comes back to whoever asks next
                wanted = frozenset(t for t in types if t.startswith(RECIPIENT_TYPE_PREFIX))
                if not wanted:
                    SKIPPED.inc()
                    await natsutil.settle(message.ack(), "ack")
                    continue
            try:
                found = outgoing_events(
                    self._namespace,
                    subject_suffix,
                    message.data,
                    metadata.sequence.stream,
                    metadata.timestamp,
                    wanted,
                )
            except UndecodableEvent as exc:
                log.error("undecodable event terminated", subject=message.subject, durable=DURABLE, error=str(exc))
                await natsutil.settle(message.term(), "term")
                continue
            except Exception:
                # The same payload would fail again on every redelivery and hold up every later event.
                log.exception("event not made into webhook payloads; terminated", subject=message.subject)
                await natsutil.settle(message.term(), "term")
                continue
            async with natsutil.kept_alive(message, 10.0):
                added = await self._stored(
                    stop,
                    functools.partial(
                        event_webhook_store.inserted_events_count, events=found, published_at=metadata.timestamp
                    ),
                )
            if added is None:
                return
            await natsutil.settle(message.ack(), "ack")
            if added:
                EVENTS_WRITTEN.inc(added)
                self._wake.set()

    async def _stored(
        self, stop: asyncio.Event, statement: Callable[[AsyncConnection], Awaitable[T]], *, read: bool = False
    ) -> T | None:
        """`statement` in a transaction of its own (a `read` of one statement: none), retried until it commits;
        None once `stop` is set meanwhile."""
        delay = 0.5
        while True:
            try:
                async with self._reads.connect() if read else self._engine.begin() as conn:
                    done = await statement(conn)
                _STORE_FAILING.recovered()
                return done
            except Exception as exc:
                # Retried here, not handed back: a later message must not overtake this one. (Whatever failed,
                # the service stays up; a stuck ingest shows as the consumer's growing backlog.)
                _STORE_FAILING.failed(exc)
                await natsutil.sleep_unless_stopped(stop, delay)
                if stop.is_set():
                    return None
                delay = min(delay * 2, 10.0)

    # --- delivery ----------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Delivers due events until `stop`: up to HERALD_EVENT_WEBHOOK_CONCURRENCY POSTs at once, each on its own,
        so a slow endpoint holds up nobody else's events; a finished POST makes its campaign's next event due."""
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private=self._allow_private), limit=self._concurrency
        )
        session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), headers={"user-agent": USER_AGENT}
        )
        in_flight: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("event webhook delivery failed unexpectedly", exc_info=task.exception())
            self._wake.set()

        pruned_at = 0.0
        claim_failing = RepeatingFailure("cannot claim event webhook deliveries; retrying", traceback=True)
        try:
            while not stop.is_set():
                # Cleared before looking, so that an event ingested or a POST finished meanwhile wakes the wait below.
                self._wake.clear()
                free = self._concurrency - len(in_flight)
                try:
                    claimed = []
                    if free > 0:
                        async with self._engine.begin() as conn:
                            claimed = await event_webhook_store.claimed_due_events(
                                conn, free, self._timeout + CLAIM_MARGIN_SECONDS
                            )
                    if time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                        pruned_at = time.monotonic()
                        async with self._engine.begin() as conn:
                            await event_webhook_store.pruned_count(conn, KEEP_DELIVERED_DAYS, KEEP_ATTEMPTS_DAYS)
                except Exception as exc:
                    claim_failing.failed(exc)
                    await natsutil.sleep_unless_stopped(stop, self._poll)
                    continue
                claim_failing.recovered()
                for event in claimed:
                    task = asyncio.ensure_future(self._deliver(session, event))
                    in_flight.add(task)
                    task.add_done_callback(finished)
                # Woken by the ingest or a finished POST, or looking again after the poll (for retries falling
                # due); `stop` is noticed within that time.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
        finally:
            # POSTs under way may finish (each is bounded by the timeout); an event cut off is tried again once its
            # claim runs out, with the same id.
            if in_flight:
                _, cut_off = await asyncio.wait(set(in_flight), timeout=self._timeout)
                for task in cut_off:
                    task.cancel()
            await session.close()

    async def _deliver(self, session: aiohttp.ClientSession, event: event_webhook_store.ClaimedEvent) -> None:
        status, error, latency_ms = await self._post(session, event)
        delivered = 200 <= status < 300
        ATTEMPTS.labels("delivered" if delivered else "failed").inc()
        ATTEMPT_SECONDS.observe(latency_ms / 1000)
        context = {"endpoint_id": event.endpoint_id, "event_id": event.event_id, "campaign_id": event.campaign_id}
        retry_in = 0.0 if delivered else self._schedule.delay(event.attempts + 1)
        try:
            async with self._engine.begin() as conn:
                await event_webhook_store.record_attempt(
                    conn,
                    event,
                    delivered=delivered,
                    status_code=status,
                    error=error,
                    latency_ms=latency_ms,
                    retry_in_seconds=retry_in,
                )
                if not delivered:
                    await self._disable_if_given_up(conn, event, f"HTTP {status}" if status else error)
        except (SQLAlchemyError, OSError) as exc:
            # The claim runs out and the event is tried again: the receiver dedupes by its id.
            _RECORD_FAILING.failed(exc, **context)
            return
        _RECORD_FAILING.recovered()
        if delivered:
            log.debug("event webhook delivered", status=status, latency_ms=latency_ms, **context)
        else:
            log.info("event webhook failed", status=status, error=error, retry_in=round(retry_in, 1), **context)

    async def _disable_if_given_up(
        self, conn: AsyncConnection, event: event_webhook_store.ClaimedEvent, outcome: str
    ) -> None:
        since = await event_webhook_store.failing_since_of(conn, event.endpoint_id)
        if since is None:
            return
        failing_for = (datetime.now(UTC) - since).total_seconds()
        if not self._schedule.gives_up(failing_for):
            return
        reason = disabled_reason(since, self._schedule.horizon_seconds, outcome)
        if await event_webhook_store.disabled_endpoint_count(conn, event.endpoint_id, reason):
            DISABLED.inc()
            log.warning("event webhook endpoint disabled", endpoint_id=event.endpoint_id, reason=reason)

    async def _post(
        self, session: aiohttp.ClientSession, event: event_webhook_store.ClaimedEvent
    ) -> tuple[int, str, int]:
        """(HTTP status or 0, why there was no answer, milliseconds taken)."""
        started = time.perf_counter()
        status, error = 0, ""
        try:
            secret = self._seal.open_secret(event.sealed_secret, event.owner_user_id)
            previous = (
                self._seal.open_secret(event.sealed_previous_secret, event.owner_user_id)
                if event.sealed_previous_secret is not None
                else None
            )
            headers = signed_headers(secret, event.event_id, int(time.time()), event.body, previous)
            async with (
                asyncio.timeout(self._timeout),
                session.post(URL(event.url), data=event.body, headers=headers, allow_redirects=False) as response,
            ):
                status = response.status
                await response.content.read(64 * 1024)  # a little of the answer, so the connection can be reused
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except (aiohttp.ClientError, ValueError, OSError, dkim.KeyUnreadable) as exc:
            error = _refusal(exc) or f"{type(exc).__name__}: {exc}"
        return status, error, int((time.perf_counter() - started) * 1000)


def _refusal(exc: BaseException | None) -> str:
    """The refusal of the guarded resolver behind `exc` (aiohttp wraps it), or ""."""
    seen = 0
    while exc is not None and seen < 10:
        for candidate in (exc, getattr(exc, "os_error", None)):
            if isinstance(candidate, AddressRefused):
                return f"address refused: {candidate}"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return ""
