"""The delivery service's side of sending: it queues campaigns on `campaign.send_requested` and follows `campaign.status_changed`.

- A send request for an occurrence not queued yet snapshots the content (EmailService.GetEmail), streams
  the audience (AudienceService.StreamRecipients, which keeps Subscribed, unsuppressed addresses, each
  once) into the queue with COPY and fixes TotalRecipients; the feeder (services/delivery/feeder.py) then
  publishes one batch message per HERALD_DELIVERY_BATCH_SIZE rows through the outbox. Both calls carry a
  token of the campaign's owner, so a campaign only ever reaches its owner's lists and emails.
- A plain campaign (no split test, no auto-resend, no rules bundle) is queued in chunks of
  HERALD_DELIVERY_QUEUE_CHUNK recipients: one transaction fixes the content and marks the run queueing
  (campaign_runs.queueing_after = 0), then each chunk commits its rows, whose batch messages the feeder
  publishes, so workers send the first chunk while the rest is still streamed. The audience streams in
  subscriber id order; a chunk leaves out the addresses earlier chunks queued (each address once, the lowest
  subscriber id, as in one transaction) and advances queueing_after to its last subscriber id under the run's
  lock.
  A redelivered send request (the service died midway) resumes the stream after queueing_after; two
  queuers of one run take turns on its lock and skip what the other queued. The run cannot finish while
  queueing_after is set. Paused: chunks are still queued, Pending, and the feeder publishes nothing for
  the run until its resume; Cancelled: queueing stops.
- The others (split test, auto-resend, rules bundle) are queued in one transaction, all or nothing: the
  test group is drawn from, and the non-openers compared against, the whole audience; with a rules bundle the
  recipients' lists are only known once all are streamed, and the List: tags must be fixed before the first
  message.
- A send request for an occurrence already queued (a resume after a pause, or the same request again)
  streams nothing: the rows still Pending are published again under a new generation.
- An auto-resend (the request names `non_openers_of_campaign_id`) streams its targeting's audience the
  same way, then keeps only the addresses the original campaign was Sent to and that neither opened nor
  clicked it nor bounced or complained (delivery's own rows and tracking events), and that audience does not
  report bounced now: subscribed, unsuppressed non-openers, each once, in the same transaction as above.
- A/B campaigns with a split test queue only the test group (TestSize % of the recipients, drawn by a
  hash) with variations and batches; the others are queued Held, and services/delivery/split_tests.py
  sends them the winner after TestDuration hours.
- A status change is mirrored into the run's state, which workers check between messages: Cancelled
  drops the Pending, Held and Deferred rows, and entering Sending publishes the Pending rows again (as a
  resume does) and schedules the Deferred rows' retries again (services/delivery/retries.py).
- A deleted campaign is treated as cancelled.

Both consumers lock the campaign's run row, so for one campaign they take turns. Nothing here sends mail.

Only send requests the campaign service made are acted on: the picker signs each one (HMAC with a key
derived from the token secret, services/common/event_signing.py) and a request without a valid
signature does not decode (services/common/events.py): it is logged and terminated, so it sends
nothing and is not retried. Why a signature rather
than asking the campaign service (GetCampaign) whether the campaign is Sending: the signature covers
the whole request, its targeting, emails and occurrence included, which a status check would not
(a forged request for a campaign that really is Sending could still name another list of the same
owner); and it needs no call to a service that may be down or being redeployed meanwhile. A signed
request replayed by someone with NATS access is harmless: a run queues each occurrence once, a
request for an occurrence already queued only republishes the rows still Pending, and only while the
run is Sending (a resume does the same); runs are never deleted (a deleted campaign's run is
Cancelled), so no old request can queue an audience again. A request signed with a token secret
since rotated is refused too: pausing and resuming the campaign issues a new one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.campaign.v1 import campaign_pb2, email_pb2, email_pb2_grpc
from prometheus_client import Gauge
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import auth, events, grpcutil, metrics
from services.common.config import Settings
from services.common.natsutil import Subjects
from services.common.outbox import Outbox, UnitOfWork
from services.common.personalization import list_snapshot
from services.delivery import events as delivery_events
from services.delivery import queue_store, recipient_events, retries, sending, store
from services.delivery.feeder import BatchFeeder
from services.delivery.message import email_snapshot, uses_subscription_tags
from services.delivery.queue_store import Run, StagedRecipient
from services.delivery.relays import relay_names
from services.delivery.sending import RunState, SendRequest

log = structlog.get_logger()

QUEUE_ROWS = Gauge(
    "herald_delivery_queue_rows",
    "Queue rows of all campaigns by status: Sent, Failed, Deferred, Unsent (Pending, Held or Sending)",
    ["status"],
)

SEND_REQUESTED_DURABLE = "delivery-send-requested"
STATUS_CHANGED_DURABLE = "delivery-status-changed"
CAMPAIGN_DELETED_DURABLE = "delivery-campaign-deleted"
# The audience stream is read in chunks of this many recipients; a queue is written with one COPY.
STREAM_CHUNK = 5000
# Send requests a delivery service handles at once (campaigns being queued in chunks at the same time).
SEND_REQUEST_CONCURRENCY = 8
# Queueing in chunks keeps at most this many chunks of a Sending campaign queued and not yet sent (the feeder,
# services/delivery/feeder.py, publishes their batches in turn with the other campaigns').
CHUNKS_AHEAD = 2
# Seconds between two looks at how far the workers got, while a campaign has as much queued ahead as it may.
ROOM_POLL_SECONDS = 0.5
# Statuses that stop delivery: a run is created for them even before the campaign was queued, so that
# a send request handled later still sees them.
_STOPPING = frozenset({RunState.PAUSED, RunState.CANCELLED})
# Errors of audience and EmailService that no retry can cure: the occurrence fails with the reason.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


# Subscribers whose mail bounced: a delivery to them is announced (RecipientDeliveredEvent).
_BOUNCED = frozenset({audience_pb2.BOUNCE_TYPE_SOFT, audience_pb2.BOUNCE_TYPE_HARD})


class _Refused(Exception):
    """A neighbour refused for good (unknown list or email): the occurrence fails with this reason."""


def owner_metadata(settings: Settings, owner_user_id: int) -> tuple[tuple[str, str], ...]:
    """Call metadata with a short-lived token of the campaign's owner, marked as delivery's own (internal RPCs)."""
    owner = auth.Principal(user_id=owner_user_id, service="delivery")
    token = auth.mint_token(owner, settings.effective_token_secret(), 600)
    return (("authorization", f"Bearer {token}"),)


def split_test_record(request: SendRequest, split_test: sending.SplitTest, test_group: int) -> dict[str, Any]:
    """The split test as the run keeps it (campaign_runs.split_test), with the variations' order for ties."""
    return {
        "test_recipients": test_group,
        "test_size_percent": split_test.test_size_percent,
        "test_duration_hours": split_test.test_duration_hours,
        "winner": split_test.winner,
        "email_ids": request.email_ids(),
    }


async def finish_if_done(outbox: Outbox, campaign_id: int) -> bool:
    """Publishes delivery.campaign_finished when the run's occurrence has nothing left to send."""
    if sending.is_opt_in_run(campaign_id):
        return False  # a list's confirmation emails: no campaign waits for them to finish
    async with outbox.unit_of_work() as work:
        finished = await queue_store.finished_occurrence(work.conn, campaign_id)
        if finished is None:
            return False
        work.publish(
            events.CAMPAIGN_FINISHED,
            delivery_events.finished_event(finished),
            key=delivery_events.finished_key(finished),
        )
    log.info("campaign finished", campaign_id=campaign_id, failed=finished.failed, reason=finished.reason)
    return True


class DeliveryQueue:
    """Queues campaigns and follows their status: the handlers of its `consumers()`."""

    def __init__(self, engine: AsyncEngine, settings: Settings, outbox: Outbox, feeder: BatchFeeder) -> None:
        self._engine = engine
        self._feeder = feeder
        self._settings = settings
        self._outbox = outbox
        self._subjects = Subjects.of(settings)
        self._batch_size = max(settings.delivery_batch_size, 1)
        self._queue_chunk = settings.delivery_queue_chunk
        # Campaigns this process is queueing in chunks now: a resume meanwhile does not start a second queuer.
        self._queueing: set[int] = set()
        campaign = grpcutil.channel(settings.grpc_addr("campaign"))
        audience = grpcutil.channel(settings.grpc_addr("audience"))
        self._channels = (campaign, audience)
        self._emails = email_pb2_grpc.EmailServiceStub(campaign)
        self._audience = audience_pb2_grpc.AudienceServiceStub(audience)

    async def sample_queue_rows(self, stop: asyncio.Event) -> None:
        """Keeps QUEUE_ROWS, from the per-campaign counts, every HERALD_METRICS_SAMPLE_SECONDS until `stop`."""

        async def sample() -> None:
            async with self._engine.connect() as conn:
                counts = await store.queue_rows_by_status(conn)
            for status, rows in counts.items():
                QUEUE_ROWS.labels(status).set(rows)

        await metrics.sample_every(self._settings.metrics_sample_seconds, sample, stop)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def consumers(self) -> list[events.Consumer[Any]]:
        """The durable consumers of the campaign service's events (NatsLink runs them)."""
        return [
            events.Consumer(
                SEND_REQUESTED_DURABLE,
                events.CAMPAIGN_SEND_REQUESTED,
                self.handle_send_request,
                signer=events.signer_of(events.CAMPAIGN_SEND_REQUESTED, self._settings),
                # Queueing a large campaign takes as long as sending most of it (see _wait_for_room): other
                # campaigns' requests are handled meanwhile, each acked when its own queueing ended.
                concurrency=SEND_REQUEST_CONCURRENCY,
            ),
            events.Consumer(STATUS_CHANGED_DURABLE, events.CAMPAIGN_STATUS_CHANGED, self.handle_status_change),
            events.Consumer(CAMPAIGN_DELETED_DURABLE, events.CAMPAIGN_DELETED, self.handle_campaigns_deleted),
        ]

    # --- campaign.send_requested -------------------------------------------------------------------------------

    async def handle_send_request(self, event: campaign_pb2.CampaignSendRequestedEvent) -> None:
        request = delivery_events.send_request(event)
        structlog.contextvars.bind_contextvars(campaign_id=request.campaign_id)
        try:
            async with self._outbox.unit_of_work() as work:
                run = await queue_store.ensured_run_for_update(
                    work.conn, request.campaign_id, request.owner_user_id, RunState.SENDING
                )
                resume_queueing = (
                    run.queueing
                    and run.occurrence == request.occurrence
                    and request.campaign_id not in self._queueing
                )
                if run.queued and run.occurrence >= request.occurrence and not resume_queueing:
                    # A resume (or this request again): nobody is streamed or queued twice.
                    if run.state == RunState.SENDING:
                        await self._publish_pending(work, run)
                    queued = False
                else:
                    queued = True
            if resume_queueing:
                # Queueing in chunks stopped midway (this service died): the stream goes on where it stopped.
                log.info("queueing resumed", occurrence=run.occurrence, after_subscriber_id=run.queueing_after)
                assert run.content is not None
                await self._queue_chunks(request, run.content)
            elif queued:
                await self._queue_occurrence(request)
            await finish_if_done(self._outbox, request.campaign_id)
        finally:
            structlog.contextvars.unbind_contextvars("campaign_id")

    async def _queue_occurrence(self, request: SendRequest) -> None:
        metadata = owner_metadata(self._settings, request.owner_user_id)
        try:
            content = await self._content(request, metadata)
            if _chunked(request):
                started = await self._start_chunks(request, content, metadata)
                if started is not None:
                    await self._queue_chunks(request, started)
                return
            await self._write_queue(request, content, "", metadata)
        except _Refused as refused:
            log.warning("campaign cannot be sent", reason=str(refused))
            await self._write_queue(request, {"campaign_name": request.name, "emails": {}}, str(refused), None)

    async def _content(self, request: SendRequest, metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        """The snapshot of every email the occurrence sends, fixed for its whole life (resumes included)."""
        email_ids = request.email_ids()
        if not email_ids:
            raise _Refused("the campaign has no email to send")
        relays = relay_names(self._settings.smtp_url)
        if request.relay and relays and request.relay not in relays:
            raise _Refused(f"relay {request.relay!r} is not one of SMTP_URL's relays ({', '.join(relays)})")
        emails: dict[str, Any] = {}
        for email_id in email_ids:
            try:
                email = await self._emails.GetEmail(
                    email_pb2.GetEmailRequest(email_id=email_id), metadata=metadata, timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _REFUSALS:
                    raise _Refused(f"email {email_id} cannot be sent: {exc.details()}") from exc
                raise
            snapshot = email_snapshot(email)
            if not snapshot["from_email"]:
                raise _Refused(f"email {email_id} has no From address")
            if not snapshot["html"] and not snapshot["plain"]:
                raise _Refused(f"email {email_id} has no content")
            emails[str(email_id)] = snapshot
        default = request.email_id if request.email_id and not request.variations else email_ids[0]
        content: dict[str, Any] = {"campaign_name": request.name, "default_email_id": default, "emails": emails}
        if request.relay:
            content["relay"] = request.relay
        return content

    async def _write_queue(
        self,
        request: SendRequest,
        content: dict[str, Any],
        reason: str,
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> None:
        """Queues the occurrence in one transaction: all of its recipients, or nothing (the feeder publishes the
        batches)."""
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            run = await queue_store.ensured_run_for_update(
                conn, request.campaign_id, request.owner_user_id, RunState.SENDING
            )
            if run.queued and run.occurrence >= request.occurrence:
                return  # queued meanwhile by another replica
            generation = run.generation + 1
            first_batch = run.batches + 1
            count = 0
            published = 0
            split_test = request.effective_split_test()
            test_group: int | None = None
            if metadata is not None:
                await queue_store.create_staging(conn)
                dates = uses_subscription_tags(content["emails"])
                await queue_store.copy_staged(conn, self._recipients(request, metadata, dates=dates))
                if request.non_openers_of:
                    removed = await queue_store.keep_staged_non_openers(
                        conn, request.non_openers_of, request.owner_user_id
                    )
                    log.info(
                        "auto-resend audience narrowed to the original's non-openers",
                        original_campaign_id=request.non_openers_of,
                        removed=removed,
                    )
                lists = await self._lists(await queue_store.staged_list_ids(conn), metadata)
                content = {**content, "lists": lists}
                if split_test is not None:
                    audience = await queue_store.staged_address_count(conn)
                    test_group = sending.split_test_group_size(audience, split_test.test_size_percent)
                    if test_group >= audience:
                        # The test group is everybody: nobody is left for a winner, send as without a test.
                        test_group = None
                count = await queue_store.queued_staged_count(
                    conn,
                    campaign_id=request.campaign_id,
                    owner_user_id=request.owner_user_id,
                    occurrence=request.occurrence,
                    generation=generation,
                    first_batch=first_batch,
                    batch_size=self._batch_size,
                    variations=request.variations,
                    test_group=test_group,
                    events_subject=_events_subject(work, request.campaign_id),
                )
                published = count if test_group is None else test_group
            batches = sending.batch_count(published, self._batch_size)
            await queue_store.save_occurrence(
                conn,
                request.campaign_id,
                occurrence=request.occurrence,
                content=content,
                generation=generation,
                batches=run.batches + batches,
                added_recipients=count,
                reason=reason,
                split_test=(
                    split_test_record(request, split_test, test_group)
                    if split_test is not None and test_group is not None
                    else None
                ),
                published_batches=run.batches,  # the feeder publishes the new ones
            )
        if batches:
            self._feeder.kick()
        log.info(
            "campaign queued",
            occurrence=request.occurrence,
            recipients=count,
            test_group=test_group,
            batches=batches,
            generation=generation,
            state=run.state,
        )

    async def _start_chunks(
        self, request: SendRequest, content: dict[str, Any], metadata: tuple[tuple[str, str], ...]
    ) -> dict[str, Any] | None:
        """Fixes the occurrence's content (with its lists) and marks the run queueing; None when it was queued
        meanwhile by another replica."""
        # Without a rules bundle every recipient comes from an included list: their List: tags are known now.
        lists = await self._lists(sorted({list_id for list_id, _ in request.targeting.included}), metadata)
        content = {**content, "lists": lists}
        # From here a resume request handled meanwhile sees this process queueing and starts no second queuer.
        self._queueing.add(request.campaign_id)
        async with self._outbox.unit_of_work() as work:
            run = await queue_store.ensured_run_for_update(
                work.conn, request.campaign_id, request.owner_user_id, RunState.SENDING
            )
            if run.queued and run.occurrence >= request.occurrence:
                self._queueing.discard(request.campaign_id)
                return None
            await queue_store.save_occurrence(
                work.conn,
                request.campaign_id,
                occurrence=request.occurrence,
                content=content,
                generation=run.generation + 1,
                batches=run.batches,
                added_recipients=0,
                reason="",
                in_chunks=True,
                published_batches=run.batches,  # the feeder publishes the chunks' batches
            )
        log.info("campaign queueing in chunks", occurrence=request.occurrence, chunk=self._queue_chunk)
        return content

    async def _queue_chunks(self, request: SendRequest, content: Mapping[str, Any]) -> None:
        """Streams the audience after the run's queueing_after and queues it chunk by chunk, each chunk with its
        batch messages in a transaction of its own; ends the run's queueing when the stream ends."""
        dates = uses_subscription_tags(content["emails"])
        self._queueing.add(request.campaign_id)
        try:
            async with self._engine.connect() as conn:
                run = await queue_store.run_for_update(conn, request.campaign_id)
                await conn.rollback()
            if run is None or not run.queueing or run.occurrence != request.occurrence:
                return
            after = run.queueing_after or 0
            chunks = 0
            try:
                while True:
                    # The first chunk is at most one stream message: the first batches go out as soon as possible.
                    size = self._queue_chunk if chunks else min(self._queue_chunk, STREAM_CHUNK)
                    if chunks:
                        await self._wait_for_room(request.campaign_id)
                    # A call per chunk, read to its end: no stream stays open while the campaign waits for room
                    # (its unread messages would hold up the other campaigns' streams on the same connection).
                    rows: list[StagedRecipient] = []
                    # A token per call: queueing a large audience outlasts any one token (a million recipients
                    # took 13 minutes, and a token minted once expired after ten of them).
                    metadata = owner_metadata(self._settings, request.owner_user_id)
                    async for streamed in self._recipients(
                        request, metadata, dates=dates, after=after, limit=size
                    ):
                        rows.extend(streamed)
                    if not rows:
                        break
                    chunks += 1
                    if not await self._write_chunk(request, rows):
                        return
                    after = rows[-1][0]
                    if len(rows) < size:
                        break
            except _Refused as refused:
                log.warning("campaign cannot be sent", reason=str(refused))
                await self._end_queueing(request, str(refused))
                return
            await self._end_queueing(request, "")
        finally:
            self._queueing.discard(request.campaign_id)

    async def _wait_for_room(self, campaign_id: int) -> None:
        """Waits while the Sending campaign has CHUNKS_AHEAD chunks queued and not yet sent. A paused campaign is
        queued on (without batch messages; its resume publishes them), a cancelled one stops at the next chunk."""
        while True:
            async with self._engine.connect() as conn:
                room = await queue_store.queueing_room(conn, campaign_id)
            if room is None or room[0] != RunState.SENDING or room[1] < CHUNKS_AHEAD * self._queue_chunk:
                return
            await asyncio.sleep(ROOM_POLL_SECONDS)

    async def _write_chunk(self, request: SendRequest, rows: list[StagedRecipient]) -> bool:
        """Queues one chunk of the stream with its batch messages; False when queueing should stop (the run was
        cancelled, or another queuer finished it)."""
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            run = await queue_store.run_for_update(conn, request.campaign_id)
            if run is None or not run.queueing or run.occurrence != request.occurrence:
                return False
            if run.state == RunState.CANCELLED:
                await queue_store.finish_queueing(conn, request.campaign_id)
                log.info("queueing stopped: the campaign was cancelled", occurrence=run.occurrence)
                return False
            after = run.queueing_after or 0
            fresh = [row for row in rows if row[0] > after]  # another queuer of this run may have gone further
            if not fresh:
                return True
            first_batch = run.batches + 1
            await queue_store.create_staging(conn)
            await queue_store.copy_staged(conn, _one(fresh))
            count = await queue_store.queued_staged_count(
                conn,
                campaign_id=request.campaign_id,
                owner_user_id=request.owner_user_id,
                occurrence=request.occurrence,
                generation=run.generation,
                first_batch=first_batch,
                batch_size=self._batch_size,
                variations=request.variations,
                events_subject=_events_subject(work, request.campaign_id),
                chunk_of=run.queueing_rows,
            )
            batches = sending.batch_count(count, self._batch_size)
            await queue_store.save_chunk(
                conn, request.campaign_id, batches=batches, added_recipients=count, after=fresh[-1][0]
            )
            if batches and run.state == RunState.SENDING and not run.fed:
                await queue_store.add_batch_messages(
                    work, request.campaign_id, first_batch, first_batch + batches - 1, run.generation
                )
        if run.fed:
            self._feeder.kick()  # the feeder publishes the chunk's batches, in turn with other campaigns'
        log.debug("chunk queued", recipients=count, batches=batches, after_subscriber_id=fresh[-1][0])
        return True

    async def _end_queueing(self, request: SendRequest, reason: str) -> None:
        async with self._engine.begin() as conn:
            run = await queue_store.run_for_update(conn, request.campaign_id)
            if run is None or not run.queueing or run.occurrence != request.occurrence:
                return
            await queue_store.finish_queueing(conn, request.campaign_id, reason)
        log.info(
            "campaign queued",
            occurrence=request.occurrence,
            recipients=run.queueing_rows,
            batches=run.batches,
            generation=run.generation,
            state=run.state,
            in_chunks=True,
            reason=reason or None,
        )

    async def _lists(
        self, list_ids: list[int], metadata: tuple[tuple[str, str], ...]
    ) -> dict[str, dict[str, str]]:
        """What the occurrence keeps of its recipients' lists for the List: tags, by list id: one call per list."""
        lists: dict[str, dict[str, str]] = {}
        for list_id in list_ids:
            try:
                found = await self._audience.GetList(
                    audience_pb2.GetListRequest(list_id=list_id), metadata=metadata, timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                # Deleted since its subscribers were streamed: its List: tags other than ListID render empty.
                log.warning("a recipient list is gone; its List: tags render empty", list_id=list_id)
                continue
            lists[str(list_id)] = list_snapshot(found)
        return lists

    async def _recipients(
        self,
        request: SendRequest,
        metadata: tuple[tuple[str, str], ...],
        *,
        dates: bool,
        after: int = 0,
        limit: int = 0,
    ) -> AsyncIterator[list[StagedRecipient]]:
        """The occurrence's audience as audience streams it, chunk by chunk in subscriber id order, from after
        subscriber id `after`, at most `limit` (0: all) recipients (memory stays one chunk). The subscription dates and address are kept only with
        `dates` (the content names their tags)."""
        targeting = audience_pb2.TargetingSpec(
            included=[_list_segment(*source) for source in request.targeting.included],
            excluded=[_list_segment(*source) for source in request.targeting.excluded],
        )
        if request.targeting.rules_bundle:
            targeting.rules_bundle.update(request.targeting.rules_bundle)
        call = self._audience.StreamRecipients(
            audience_pb2.StreamRecipientsRequest(
                targeting=targeting, chunk_size=STREAM_CHUNK, after_subscriber_id=after, limit=limit
            ),
            metadata=metadata,
            timeout=3600,
        )
        try:
            async for chunk in call:
                yield [
                    (
                        r.subscriber_id,
                        r.list_id,
                        r.email_address,
                        r.first_name,
                        r.last_name,
                        json.dumps(dict(r.custom_fields)) if r.custom_fields else None,
                        r.bounce_type in _BOUNCED,
                        *(_subscription(r) if dates else _NO_SUBSCRIPTION),
                    )
                    for r in chunk.recipients
                ]
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REFUSALS:
                raise _Refused(f"the audience cannot be read: {exc.details()}") from exc
            raise

    async def _publish_pending(self, work: UnitOfWork, run: Run) -> int:
        """Publishes the run's Pending rows again under a new generation, and schedules its Deferred rows again
        (a retry that came due while the run was paused was not sent); returns how many batch messages."""
        generation = await queue_store.next_generation(work.conn, run.campaign_id)
        # A fed run's batches that the feeder has not published yet wait for it, under the new generation too.
        published = await queue_store.republished_batch_count(
            work, run.campaign_id, generation, through=run.published_batches
        )
        if run.fed:
            self._feeder.kick()
        deferred = await queue_store.deferred_retries(work.conn, run.campaign_id)
        retries.schedule(work, self._subjects, deferred, again=f"g{generation}")
        log.info(
            "pending batches published again",
            campaign_id=run.campaign_id,
            batches=published,
            generation=generation,
            deferred_scheduled=len(deferred),
        )
        return published

    # --- campaign.status_changed -------------------------------------------------------------------------------

    async def handle_status_change(self, event: campaign_pb2.CampaignStatusChangedEvent) -> None:
        change = delivery_events.status_change(event)
        entering = False
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            run = await queue_store.run_for_update(conn, change.campaign_id)
            if run is None:
                if change.status in _STOPPING:
                    await queue_store.ensured_run_for_update(
                        conn, change.campaign_id, change.owner_user_id, change.status
                    )
                return
            if run.state == RunState.CANCELLED or run.state == change.status:
                return
            await queue_store.set_run_state(conn, change.campaign_id, change.status)
            if change.status == RunState.CANCELLED:
                dropped = await queue_store.dropped_pending_count(conn, change.campaign_id)
                log.info(
                    "cancelled campaign's pending recipients dropped",
                    campaign_id=change.campaign_id,
                    dropped=dropped,
                )
            elif change.status == RunState.SENDING and run.queued:
                entering = True
                await self._publish_pending(work, run)
        if entering:
            await finish_if_done(self._outbox, change.campaign_id)

    async def handle_campaigns_deleted(self, event: campaign_pb2.CampaignDeletedEvent) -> None:
        """A deleted campaign sends nothing more: like a cancel, its Pending rows are dropped."""
        for campaign_id in event.campaign_ids:
            async with self._engine.begin() as conn:
                run = await queue_store.run_for_update(conn, campaign_id)
                if run is None or run.state == RunState.CANCELLED:
                    continue
                await queue_store.set_run_state(conn, campaign_id, RunState.CANCELLED)
                dropped = await queue_store.dropped_pending_count(conn, campaign_id)
            log.info("deleted campaign's pending recipients dropped", campaign_id=campaign_id, dropped=dropped)

    # --- admin.campaign.retryfailed ------------------------------------------------------------------------------

    async def retry_failed(self, campaign_id: int, owner: int | None) -> tuple[int, int, int]:
        """(recipients requeued, batches created, their generation): the Failed rows only, in new batches."""
        try:
            async with self._outbox.unit_of_work() as work:
                conn = work.conn
                run = await queue_store.run_for_update(conn, campaign_id)
                # A run that never queued anybody (the audience selected nobody) has no queue to retry.
                if (
                    run is None
                    or not run.queued
                    or run.total_recipients == 0
                    or (owner is not None and run.owner_user_id != owner)
                ):
                    raise sending.run_not_found(campaign_id)
                generation = run.generation + 1
                first_batch = run.batches + 1
                count = await queue_store.requeued_failed_count(
                    conn,
                    campaign_id,
                    generation,
                    first_batch,
                    self._batch_size,
                    events_subject=_events_subject(work, campaign_id),
                )
                if count == 0:
                    raise sending.no_failed_recipients(campaign_id)
                batches = sending.batch_count(count, self._batch_size)
                await queue_store.add_batch_messages(
                    work, campaign_id, first_batch, first_batch + batches - 1, generation
                )
                await queue_store.save_retry(conn, campaign_id, generation, run.batches + batches)
        except DBAPIError as exc:
            log.error("retry of failed recipients failed", campaign_id=campaign_id, error=str(exc))
            raise sending.database_error("the delivery database failed during the retry") from exc
        log.info("failed recipients requeued", campaign_id=campaign_id, recipients=count, batches=batches)
        return count, batches, generation


_NO_SUBSCRIPTION: tuple[None, str, None] = (None, "", None)


def _chunked(request: SendRequest) -> bool:
    """Whether the occurrence is queued in chunks: not with a split test (its test group is drawn from the whole
    audience), an auto-resend (narrowed against the whole audience) or a rules bundle (its recipients' lists, for
    the List: tags, are known only at the end)."""
    return (
        request.effective_split_test() is None
        and not request.non_openers_of
        and not request.targeting.rules_bundle
    )


async def _one(rows: list[StagedRecipient]) -> AsyncIterator[list[StagedRecipient]]:
    yield rows


def _events_subject(work: UnitOfWork, campaign_id: int) -> str | None:
    """Where queueing announces the recipients it queued (the subject's fixed part); None for a run that is not
    a campaign's. The statement writes the messages itself."""
    if not recipient_events.announces(campaign_id):
        return None
    work.wrote_outbox_rows()
    return work.subject(events.DELIVERY_EVENTS)


def _subscription(recipient: audience_pb2.Recipient) -> tuple[datetime | None, str, datetime | None]:
    """A streamed recipient's subscription time, address and opt-in time, as the queue keeps them."""
    return (
        recipient.subscription_time.ToDatetime(UTC) if recipient.HasField("subscription_time") else None,
        recipient.subscription_ip,
        recipient.opt_in_time.ToDatetime(UTC) if recipient.HasField("opt_in_time") else None,
    )


def _list_segment(list_id: int, segment_id: int) -> audience_pb2.ListSegment:
    return audience_pb2.ListSegment(list_id=list_id, segment_id=segment_id)
