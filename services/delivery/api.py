"""The gRPC servicer of herald.delivery.v1.DeliveryService: proto to domain and back; the SQL is in store, the rules in domain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf import empty_pb2
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import auth, grpcutil
from services.common.errors import DomainError, ErrorKind, invalid, not_found
from services.common.live_nats import LiveNats
from services.common.outbox import Outbox
from services.delivery import (
    bounce_recording,
    bounce_store,
    cursor,
    dkim,
    dkim_store,
    domain,
    event_stream,
    recipient_events,
    sending,
    store,
)
from services.delivery.domain import CampaignStatistics, RecipientStatus
from services.delivery.events import BOUNCE_KINDS, BOUNCE_SOURCES
from services.delivery.queue import DeliveryQueue


def _start_time(request: delivery_pb2.StreamDeliveryEventsRequest) -> datetime:
    try:
        return request.start_time.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise invalid("START_TIME_INVALID", "start_time is not a valid instant", "start_time") from exc


# What a recorded open, click or unsubscription is, as a DeliveryEvent's kind.
_ACTIVITY_KINDS = {
    domain.OPEN: delivery_pb2.DELIVERY_EVENT_KIND_OPENED,
    domain.CLICK: delivery_pb2.DELIVERY_EVENT_KIND_CLICKED,
    domain.UNSUBSCRIBE: delivery_pb2.DELIVERY_EVENT_KIND_UNSUBSCRIBED,
}

Announce = Callable[[Sequence[int]], Awaitable[None]]


def _activity_event(activity: store.RecipientActivity) -> delivery_pb2.DeliveryEvent:
    return delivery_pb2.DeliveryEvent(
        kind=_ACTIVITY_KINDS[activity.kind],
        owner_user_id=activity.owner_user_id,
        campaign_id=activity.campaign_id,
        recipient_id=activity.recipient_id,
        subscriber_id=activity.subscriber_id,
        email_address=activity.email_address,
        occur_time=grpcutil.to_timestamp(activity.occurred_at),
        detail=activity.url,
    )


# BatchGetCampaignStatistics asks the campaign service about campaigns it never queued this many at a time: the
# answer names each missing id (a BadRequest violation, some 64 bytes of trailer each), and gRPC clients refuse
# trailers above 16 KiB (RESOURCE_EXHAUSTED instead of NOT_FOUND), and may refuse those above 8 KiB.
OWNERSHIP_CHECK_CHUNK = 100


def _owner_scope() -> int | None:
    """Whose campaigns the caller may see: their own, or (None) everyone's for an admin."""
    principal = auth.principal()
    return None if principal.is_admin else principal.user_id


def _statistics_message(statistics: CampaignStatistics) -> delivery_pb2.CampaignStatistics:
    return delivery_pb2.CampaignStatistics(
        campaign_id=statistics.campaign_id,
        total_recipients=statistics.total_recipients,
        total_sent=statistics.sent,
        total_failed=statistics.failed,
        total_deferred=statistics.deferred,
        total_opens=statistics.events.opens,
        unique_opens=statistics.events.unique_opens,
        total_clicks=statistics.events.clicks,
        unique_clicks=statistics.events.unique_clicks,
        first_send_time=grpcutil.timestamp(statistics.first_sent_at),
        last_send_time=grpcutil.timestamp(statistics.last_sent_at),
        main_send_total_sent=statistics.main_sent,
        main_send_last_send_time=grpcutil.timestamp(statistics.main_last_sent_at),
        variations=[
            delivery_pb2.VariationStatistics(
                email_id=variation.email_id,
                total_recipients=variation.total_recipients,
                total_sent=variation.sent,
                total_failed=variation.failed,
                total_deferred=variation.deferred,
                unique_opens=variation.unique_opens,
                unique_clicks=variation.unique_clicks,
            )
            for variation in statistics.variations
        ],
        domains=[
            delivery_pb2.DomainStatistics(
                domain=figures.domain,
                total_recipients=figures.total_recipients,
                total_sent=figures.sent,
                total_failed=figures.failed,
                total_deferred=figures.deferred,
            )
            for figures in statistics.domains
        ],
        split_test=_split_test_message(statistics.split_test),
        total_hard_bounces=statistics.bounces.hard,
        total_soft_bounces=statistics.bounces.soft,
        total_policy_rejections=statistics.bounces.policy,
        total_spam_complaints=statistics.bounces.complaints,
        total_unsubscriptions=statistics.bounces.unsubscriptions,
    )


def _split_test_message(standing: domain.SplitTestStanding | None) -> delivery_pb2.SplitTestResult | None:
    if standing is None:
        return None
    return delivery_pb2.SplitTestResult(
        test_recipients=standing.test_recipients,
        held_recipients=standing.held_recipients,
        winner_email_id=standing.winner_email_id,
        decide_time=grpcutil.timestamp(standing.decided_at),
    )


class DeliveryService(delivery_pb2_grpc.DeliveryServiceServicer):
    """Delivery statistics, every call scoped to the principal's user."""

    def __init__(
        self,
        engine: AsyncEngine,
        queue: DeliveryQueue | None = None,
        outbox: Outbox | None = None,
        *,
        key_seal: dkim.KeySeal | None = None,
        live: LiveNats | None = None,
        campaigns: campaign_pb2_grpc.CampaignServiceStub | None = None,
    ) -> None:
        self._engine = engine
        # StreamDeliveryEvents' NATS connection, and the campaign service that says whose a campaign not queued
        # yet is; None where the service streams nothing.
        self._live = live
        self._campaigns = campaigns
        # The send pipeline's queue (retrying failed recipients); None where the service serves reads only.
        self._queue = queue
        # Where recorded bounces are announced (RecordBounces); None where the service serves reads only.
        self._outbox = outbox
        # Seals the DKIM private keys of new sending domains; None where the service creates none.
        self._key_seal = key_seal

    async def BatchGetCampaignStatistics(
        self, request: delivery_pb2.BatchGetCampaignStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.BatchGetCampaignStatisticsResponse:
        campaign_ids = domain.validate_statistics_request(request.campaign_ids)
        if not campaign_ids:
            return delivery_pb2.BatchGetCampaignStatisticsResponse()
        # Only STATISTICS_VIEW_TOTALS leaves the breakdowns out: unset (and any other view) is the full one.
        breakdowns = request.view != delivery_pb2.STATISTICS_VIEW_TOTALS
        owner = _owner_scope()
        variations: dict[int, list[domain.VariationFigures]] = {}
        domains: dict[int, list[domain.DomainFigures]] = {}
        async with self._engine.connect() as conn:
            # One snapshot for every figure group, so totals and breakdowns agree while workers send.
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                run_totals = await store.run_totals(conn, campaign_ids, owner)
                counts = await store.recipient_counts(conn, campaign_ids, owner)
                # Events and breakdowns exist only for campaigns with queue rows; most campaigns a
                # listing asks about were never sent, and then these queries are skipped.
                queued = [campaign_id for campaign_id in campaign_ids if campaign_id in counts]
                events = await store.event_counts(conn, queued, owner) if queued else {}
                bounces = await bounce_store.bounce_counts(conn, queued, owner) if queued else {}
                split_tests = await store.split_test_standings(conn, queued, owner) if queued else {}
                # The breakdowns read every queue row of the campaigns: only when they are asked for.
                if queued and breakdowns:
                    variations = await store.variation_figures(conn, queued, owner)
                    domains = await store.domain_figures(conn, queued, owner, domain.MAX_DOMAINS_PER_CAMPAIGN)
        unqueued = [campaign_id for campaign_id in campaign_ids if campaign_id not in counts]
        if unqueued:
            await self._require_campaigns(unqueued)
        statistics = domain.campaign_statistics(
            campaign_ids, run_totals, counts, events, variations, domains, split_tests, bounces
        )
        return delivery_pb2.BatchGetCampaignStatisticsResponse(
            statistics=[_statistics_message(entry) for entry in statistics]
        )

    # --- tracking events ----------------------------------------------------------------------------------

    async def RecordTrackingEvents(
        self, request: delivery_pb2.RecordTrackingEventsRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.RecordTrackingEventsResponse:
        """Records the events whose queue row exists and is the caller's (any row for an admin)."""
        received_at = datetime.now(UTC)
        hits = [_tracking_hit(event, received_at) for event in request.events]
        domain.validate_tracking_hits(hits)
        if not hits:
            return delivery_pb2.RecordTrackingEventsResponse()
        async with self._announcing() as (conn, announce):
            event_ids = await store.inserted_tracking_event_ids(conn, hits, _owner_scope())
            await announce(event_ids)
        return delivery_pb2.RecordTrackingEventsResponse(recorded_count=len(event_ids))

    async def RecordUnsubscriptions(
        self, request: delivery_pb2.RecordUnsubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.RecordUnsubscriptionsResponse:
        """Counts API unsubscriptions in the campaign's statistics for the subscribers it was sent to (and the
        caller's campaign, any for an admin); the others record nothing and are no error."""
        unsubscriptions = domain.Unsubscriptions(
            campaign_id=request.campaign_id,
            list_id=request.list_id,
            subscribers=tuple((s.subscriber_id, s.email_address) for s in request.subscribers),
            email_id=request.email_id,
            occurred_at=(
                request.occur_time.ToDatetime(tzinfo=UTC) if request.HasField("occur_time") else datetime.now(UTC)
            ),
        )
        domain.validate_unsubscriptions(unsubscriptions)
        async with self._announcing() as (conn, announce):
            event_ids = await store.inserted_unsubscription_ids(conn, unsubscriptions, _owner_scope())
            await announce(event_ids)
        return delivery_pb2.RecordUnsubscriptionsResponse(recorded_count=len(event_ids))

    @contextlib.asynccontextmanager
    async def _announcing(self) -> AsyncIterator[tuple[AsyncConnection, Announce]]:
        """A transaction, and what publishes the DeliveryEvents of the opens, clicks and unsubscriptions it records
        (through the outbox, with the transaction); a server without an outbox records them unannounced."""
        if self._outbox is None:
            async with self._engine.begin() as conn:

                async def unannounced(event_ids: Sequence[int]) -> None:
                    return None

                yield conn, unannounced
            return
        async with self._outbox.unit_of_work() as work:

            async def announce(event_ids: Sequence[int]) -> None:
                activities = await store.recipient_activities(work.conn, event_ids)
                recipient_events.publish(work, (_activity_event(activity) for activity in activities))

            yield work.conn, announce

    # --- bounces and complaints ---------------------------------------------------------------------------

    async def RecordBounces(
        self, request: delivery_pb2.RecordBouncesRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.RecordBouncesResponse:
        """Classifies and records the reports whose queue row exists (and is the caller's, any for an admin)."""
        received_at = datetime.now(UTC)
        reports = [_bounce_report(report, received_at) for report in request.reports]
        domain.validate_bounce_reports(reports)
        if self._outbox is None:
            raise DomainError(ErrorKind.UNAVAILABLE, "OUTBOX_UNAVAILABLE", "this server does not record bounces")
        tally = await bounce_recording.record(self._outbox, reports, _owner_scope())
        return delivery_pb2.RecordBouncesResponse(
            recorded_count=tally.recorded, duplicate_count=tally.duplicates, unknown_count=tally.unknown
        )

    # --- the send queue -----------------------------------------------------------------------------------

    async def RetryFailedRecipients(
        self, request: delivery_pb2.RetryFailedRecipientsRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.RetryFailedRecipientsResponse:
        """Requeues the campaign's Failed rows (nobody else) in new batches of a new generation; the run is Sending."""
        if request.campaign_id <= 0:
            raise invalid(
                sending.CAMPAIGN_ID_REQUIRED, "campaign_id must be a positive campaign id", "campaign_id"
            )
        if self._queue is None:
            raise DomainError(
                ErrorKind.UNAVAILABLE, "QUEUE_UNAVAILABLE", "this server does not run the send queue"
            )
        retried, batches, generation = await self._queue.retry_failed(request.campaign_id, _owner_scope())
        return delivery_pb2.RetryFailedRecipientsResponse(
            retried_count=retried, batches_created=batches, generation=generation
        )

    async def ListQueuedRecipients(
        self, request: delivery_pb2.ListQueuedRecipientsRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.ListQueuedRecipientsResponse:
        """A page of a campaign's queue rows in recipient id order, with their delivery state."""
        status = _STATUS_BY_STATE.get(request.state)
        page = sending.queue_page(request.campaign_id, status, request.page_size, request.after_recipient_id)
        owner = _owner_scope()
        async with self._engine.connect() as conn:
            rows = await store.queued_rows(conn, page, owner)
            total = await store.queued_row_count(conn, page, owner)
            logs = await bounce_store.bounce_logs(
                conn, page.campaign_id, [row.recipient_id for row in rows], owner
            )
        return delivery_pb2.ListQueuedRecipientsResponse(
            recipients=[
                delivery_pb2.QueuedRecipient(
                    recipient_id=row.recipient_id,
                    email_address=row.email_address,
                    state=_STATE_BY_STATUS[row.status],
                    attempts=row.attempts,
                    generation=row.generation,
                    batch_id=row.batch_id,
                    last_error=row.last_error,
                    send_time=grpcutil.timestamp(row.sent_at),
                    email_id=row.email_id,
                    next_attempt_time=grpcutil.timestamp(row.next_attempt_at),
                    bounces=[_bounce_message(bounce) for bounce in logs.get(row.recipient_id, ())],
                )
                for row in rows
            ],
            total_size=total,
        )

    # --- DKIM sending domains -----------------------------------------------------------------------------

    async def CreateSendingDomain(
        self, request: delivery_pb2.CreateSendingDomainRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.SendingDomain:
        """Generates the domain's key pair and keeps it (sealed); answers the DNS record to publish."""
        principal = auth.principal()
        owner = dkim.owner_of(request.owner_user_id, principal.user_id, principal.is_admin)
        assert owner is not None
        domain_name, selector = dkim.validated_sending_domain(request.domain, request.selector)
        if self._key_seal is None:
            raise DomainError(
                ErrorKind.UNAVAILABLE, "DKIM_KEYS_UNAVAILABLE", "this server does not keep DKIM keys"
            )
        # RSA key generation is ~0.1 s of CPU: off the event loop.
        pair = await asyncio.to_thread(dkim.generate_key_pair)
        sealed = self._key_seal.seal(pair.private_pem, owner, domain_name)
        async with self._engine.begin() as conn:
            created = await dkim_store.inserted_sending_domain(
                conn, owner, domain_name, selector, sealed, pair.public_key
            )
        if created is None:
            raise dkim.already_exists(domain_name)
        return _sending_domain_message(created)

    async def ListSendingDomains(
        self, request: delivery_pb2.ListSendingDomainsRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.ListSendingDomainsResponse:
        principal = auth.principal()
        owner = dkim.owner_of(request.owner_user_id, principal.user_id, principal.is_admin, for_listing=True)
        async with self._engine.connect() as conn:
            rows = await dkim_store.sending_domains_of(conn, owner)
        return delivery_pb2.ListSendingDomainsResponse(
            sending_domains=[_sending_domain_message(row) for row in rows]
        )

    async def StreamDeliveryEvents(
        self, request: delivery_pb2.StreamDeliveryEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[delivery_pb2.StreamDeliveryEventsResponse]:
        """The caller's per-recipient events of one campaign (or all of theirs) from JetStream, resumable from a
        cursor (services/delivery/event_stream.py); the owner is always the caller, an admin too."""
        if request.campaign_id < 0:
            raise invalid(
                sending.CAMPAIGN_ID_REQUIRED,
                "campaign_id must be a campaign id, or 0 for every campaign",
                "campaign_id",
            )
        after = cursor.decode(request.cursor) if request.cursor else None
        start_time = _start_time(request) if request.HasField("start_time") else None
        if self._live is None or self._campaigns is None:
            raise DomainError(ErrorKind.UNAVAILABLE, "EVENTS_UNAVAILABLE", "this server does not stream events")
        owner = auth.principal().user_id
        if request.campaign_id:
            await self._check_campaign_owner(self._campaigns, request.campaign_id, owner)

        async def started() -> None:
            # The response headers tell the client the stream is live: what happens from now on reaches it.
            await context.send_initial_metadata(())

        source = event_stream.delivery_events(self._live, owner, request.campaign_id, after, start_time, started)
        async with contextlib.aclosing(source) as happened:
            async for event, position in happened:
                yield delivery_pb2.StreamDeliveryEventsResponse(event=event, cursor=position.encode())

    async def _require_campaigns(self, campaign_ids: list[int]) -> None:
        """NOT_FOUND (the campaign service's, one violation per missing id) unless the caller may see every one of
        these campaigns, which have no queue rows of theirs: only the campaign service knows a campaign never
        queued, or another user's. Its answer passes through unchanged."""
        if self._campaigns is None:
            return
        # In chunks: a listing may ask about thousands of campaigns; each answer carries whole campaigns, and a
        # refusal one violation per missing id.
        for start in range(0, len(campaign_ids), OWNERSHIP_CHECK_CHUNK):
            chunk = campaign_ids[start : start + OWNERSHIP_CHECK_CHUNK]
            await self._campaigns.BatchGetCampaigns(campaign_pb2.BatchGetCampaignsRequest(campaign_ids=chunk))

    async def _check_campaign_owner(
        self, campaigns: campaign_pb2_grpc.CampaignServiceStub, campaign_id: int, owner: int
    ) -> None:
        """NOT_FOUND unless the campaign is `owner`'s: delivery's run says so, or (not queued yet) the campaign
        service's answer."""
        async with self._engine.connect() as conn:
            run_owner = await store.run_owner(conn, campaign_id)
        if run_owner is None:
            try:
                campaign = await campaigns.GetCampaign(campaign_pb2.GetCampaignRequest(campaign_id=campaign_id))
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            else:
                run_owner = campaign.owner_user_id
        if run_owner != owner:
            raise not_found(
                "CAMPAIGN_NOT_FOUND",
                f"campaign {campaign_id} not found",
                "campaign_id",
                campaign_id=str(campaign_id),
            )

    async def DeleteSendingDomain(
        self, request: delivery_pb2.DeleteSendingDomainRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        principal = auth.principal()
        owner = dkim.owner_of(request.owner_user_id, principal.user_id, principal.is_admin)
        assert owner is not None
        domain_name = dkim.normalized_domain(request.domain)
        async with self._engine.begin() as conn:
            deleted = await dkim_store.deleted_sending_domain_count(conn, owner, domain_name)
        if not deleted:
            raise dkim.unknown(domain_name)
        return empty_pb2.Empty()

    # --- mail capture -------------------------------------------------------------------------------------

    async def ListCapturedMessages(
        self, request: delivery_pb2.ListCapturedMessagesRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.ListCapturedMessagesResponse:
        page = domain.captured_page(request.page_size, request.page_token)
        async with self._engine.connect() as conn:
            fetched = await store.captured_message_summaries(conn, page)
            total = await store.captured_message_count(conn)
        return delivery_pb2.ListCapturedMessagesResponse(
            captured_messages=[_captured_message(message) for message in fetched[: page.limit]],
            next_page_token=domain.next_captured_page_token(page, [m.captured_message_id for m in fetched]),
            total_size=total,
        )

    async def GetCapturedMessage(
        self, request: delivery_pb2.GetCapturedMessageRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.CapturedMessage:
        async with self._engine.connect() as conn:
            found = await store.captured_message(conn, request.captured_message_id)
        if found is None:
            raise not_found(
                domain.CAPTURED_MESSAGE_NOT_FOUND,
                f"no captured message {request.captured_message_id}",
                "captured_message_id",
            )
        return _captured_message(found)


_TRACKING_KINDS = {
    delivery_pb2.TRACKING_EVENT_KIND_OPEN: domain.OPEN,
    delivery_pb2.TRACKING_EVENT_KIND_CLICK: domain.CLICK,
    delivery_pb2.TRACKING_EVENT_KIND_UNSUBSCRIBE: domain.UNSUBSCRIBE,
}


_STATE_BY_STATUS = {
    RecipientStatus.PENDING: delivery_pb2.RECIPIENT_STATE_PENDING,
    RecipientStatus.SENDING: delivery_pb2.RECIPIENT_STATE_SENDING,
    RecipientStatus.SENT: delivery_pb2.RECIPIENT_STATE_SENT,
    RecipientStatus.FAILED: delivery_pb2.RECIPIENT_STATE_FAILED,
    RecipientStatus.DROPPED: delivery_pb2.RECIPIENT_STATE_DROPPED,
    RecipientStatus.HELD: delivery_pb2.RECIPIENT_STATE_HELD,
    RecipientStatus.DEFERRED: delivery_pb2.RECIPIENT_STATE_DEFERRED,
}
_STATUS_BY_STATE = {state: status for status, state in _STATE_BY_STATUS.items()}


def _tracking_hit(event: delivery_pb2.TrackingEvent, received_at: datetime) -> domain.TrackingHit:
    return domain.TrackingHit(
        campaign_id=event.campaign_id,
        recipient_id=event.recipient_id,
        kind=_TRACKING_KINDS.get(event.kind, ""),
        url=event.url,
        # An event without its own time happened when it was reported.
        occurred_at=event.occur_time.ToDatetime(tzinfo=UTC) if event.HasField("occur_time") else received_at,
        event_key=event.event_key,
    )


_HINTS = {kind: hint for hint, kind in BOUNCE_KINDS.items()}
_SOURCES = {value: source for source, value in BOUNCE_SOURCES.items()}


def _bounce_report(report: delivery_pb2.BounceReport, received_at: datetime) -> domain.BounceReport:
    """A report in domain terms: an unspecified hint or source is "", a value outside the enums "?" (refused)."""
    hint = "" if report.kind_hint == delivery_pb2.BOUNCE_KIND_UNSPECIFIED else _HINTS.get(report.kind_hint, "?")
    return domain.BounceReport(
        campaign_id=report.campaign_id,
        recipient_id=report.recipient_id,
        kind_hint=hint,
        status_code=report.status_code,
        reply_code=report.reply_code,
        diagnostic=report.diagnostic,
        source=_SOURCES.get(report.source, ""),
        event_key=report.event_key,
        # A report without its own time happened when it was reported.
        occurred_at=report.occur_time.ToDatetime(tzinfo=UTC) if report.HasField("occur_time") else received_at,
    )


def _bounce_message(bounce: domain.RecordedBounce) -> delivery_pb2.Bounce:
    return delivery_pb2.Bounce(
        kind=BOUNCE_KINDS[bounce.kind],
        source=BOUNCE_SOURCES[bounce.source],
        status_code=bounce.status_code,
        reply_code=bounce.reply_code,
        diagnostic=bounce.diagnostic,
        occur_time=grpcutil.timestamp(bounce.occurred_at),
    )


def _sending_domain_message(row: dkim_store.SendingDomainRow) -> delivery_pb2.SendingDomain:
    return delivery_pb2.SendingDomain(
        domain=row.domain,
        selector=row.selector,
        owner_user_id=row.owner_user_id,
        dns_record_name=dkim.record_name(row.selector, row.domain),
        dns_txt_value=dkim.txt_value(row.public_key),
        create_time=grpcutil.timestamp(row.created_at),
    )


def _captured_message(message: domain.CapturedSummary) -> delivery_pb2.CapturedMessage:
    return delivery_pb2.CapturedMessage(
        captured_message_id=message.captured_message_id,
        envelope_from=message.envelope_from,
        envelope_to=message.envelope_to,
        subject=message.subject,
        message_id=message.message_id,
        receive_time=grpcutil.timestamp(message.received_at),
        size_bytes=message.size_bytes,
        session_id=message.session_id,
        raw_message=message.raw,
    )
