"""The CampaignService servicer: turns requests into domain calls and store queries, and their results into
answers (services/campaign/convert.py translates between the messages and domain values)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc
import structlog
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from herald.tag.v1 import tag_pb2, tag_pb2_grpc
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.campaign import convert, domain, events, sending, store, watch
from services.campaign.clock import Clock
from services.campaign.domain import Campaign
from services.common import auth, db, grpcutil, tracing
from services.common import events as herald_events
from services.common.errors import DomainError, ErrorKind, FieldViolation
from services.common.live_nats import LiveNats
from services.common.outbox import Outbox, UnitOfWork

log = structlog.get_logger()


class CampaignService(campaign_pb2_grpc.CampaignServiceServicer):
    """Every method works within the caller's campaigns (an admin's: everyone's); DomainError becomes a status
    in the CallInterceptor, and a neighbour's error status passes through as it is."""

    def __init__(
        self,
        engine: AsyncEngine,
        reads: db.ReadPool,
        outbox: Outbox,
        tags: tag_pb2_grpc.TagServiceStub,
        delivery: delivery_pb2_grpc.DeliveryServiceStub,
        audience: audience_pb2_grpc.AudienceServiceStub,
        clock: Clock,
        live: LiveNats,
        watch_heartbeat_seconds: float,
    ) -> None:
        self._engine = engine
        self._reads = reads
        self._reader = db.autocommit(engine)
        self._outbox = outbox
        self._tags = tags
        self._delivery = delivery
        self._audience = audience
        self._clock = clock
        self._live = live
        self._watch_heartbeat_seconds = watch_heartbeat_seconds

    async def CreateCampaign(
        self, request: campaign_pb2.CreateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        owner_user_id = domain.owner_of_new_campaign(auth.principal())
        name = domain.validate_campaign_name(request.name)
        async with self._engine.begin() as conn:
            campaign = await store.insert_campaign(conn, owner_user_id=owner_user_id, name=name)
        structlog.contextvars.bind_contextvars(campaign_id=campaign.campaign_id)
        return convert.campaign_to_proto(campaign)

    async def GetCampaign(
        self, request: campaign_pb2.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        campaign = await self._callers_campaign(request.campaign_id)
        message = convert.campaign_to_proto(campaign)
        if request.view == campaign_pb2.CAMPAIGN_VIEW_FULL:
            statistics, tags = await asyncio.gather(
                self._statistics([campaign.campaign_id], request.statistics_view),
                self._campaign_tags([campaign.campaign_id]),
            )
            convert.add_full_view(message, statistics, tags)
        return message

    async def BatchGetCampaigns(
        self, request: campaign_pb2.BatchGetCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.BatchGetCampaignsResponse:
        campaign_ids = domain.require_campaign_ids(request.campaign_ids)
        async with self._reader.connect() as conn:
            found = await store.campaigns_by_ids(conn, campaign_ids, domain.owner_scope(auth.principal()))
        domain.check_all_found(campaign_ids, (campaign.campaign_id for campaign in found))
        by_id = {campaign.campaign_id: campaign for campaign in found}
        # AIP-231: the response lists the campaigns in the order they were asked for.
        return campaign_pb2.BatchGetCampaignsResponse(
            campaigns=[convert.campaign_to_proto(by_id[campaign_id]) for campaign_id in campaign_ids]
        )

    async def ListCampaigns(
        self, request: campaign_pb2.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.ListCampaignsResponse:
        query = domain.build_list_query(
            auth.principal(),
            statuses=[convert.status_from_proto(value) for value in request.statuses],
            search=request.search,
            campaign_ids=request.campaign_ids,
            include_auto_resend=request.include_auto_resend,
            order_by=convert.order_field_from_proto(request.order_by),
            descending=request.descending,
            page_size=request.page_size,
            skip=request.skip,
            page_token=request.page_token,
            schedule_types=[convert.schedule_type_from_proto(value) for value in request.schedule_types],
            scheduled=request.scheduled,
            send_time_from=convert.instant(request.send_time_from) if request.HasField("send_time_from") else None,
            send_time_to=convert.instant(request.send_time_to) if request.HasField("send_time_to") else None,
            tag_ids=request.tag_ids,
            owner_user_id=request.owner_user_id,
            publish_on_rss=request.publish_on_rss if request.HasField("publish_on_rss") else None,
        )
        if query.filter.tag_ids:
            tagged = await self._tags.ListTaggedCampaigns(
                tag_pb2.ListTaggedCampaignsRequest(tag_ids=query.filter.tag_ids)
            )
            query = dataclasses.replace(query, filter=query.filter.with_tagged_campaigns(tagged.campaign_ids))
        full = request.view == campaign_pb2.CAMPAIGN_VIEW_FULL
        async with self._engine.connect() as conn:
            page, total = await store.campaign_page(conn, query)
            page_ids = [campaign.campaign_id for campaign in page]
            total_ids = page_ids
            if full and total > len(page):
                total_ids = await store.matching_campaign_ids(
                    conn, query.filter, domain.MAX_TOTAL_STATISTICS_CAMPAIGNS
                )
        response = campaign_pb2.ListCampaignsResponse(
            campaigns=[convert.campaign_to_proto(campaign) for campaign in page],
            next_page_token=domain.next_page_token(query, len(page), total),
            total_size=total,
        )
        if full:
            statistics, tags = await asyncio.gather(
                self._statistics(list(dict.fromkeys([*page_ids, *total_ids])), request.statistics_view),
                self._campaign_tags(page_ids),
            )
            for message in response.campaigns:
                convert.add_full_view(message, statistics, tags)
            response.total_statistics.CopyFrom(
                convert.total_statistics(
                    statistics[campaign_id] for campaign_id in total_ids if campaign_id in statistics
                )
            )
        return response

    async def CopyCampaign(
        self, request: campaign_pb2.CopyCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        domain.validate_campaign_id(request.campaign_id)
        structlog.contextvars.bind_contextvars(campaign_id=request.campaign_id)
        scope = domain.owner_scope(auth.principal())
        async with self._engine.begin() as conn:
            source = await store.campaign_by_id(conn, request.campaign_id, scope)
            if source is None:
                raise domain.campaign_not_found(request.campaign_id)
            copy = await store.insert_copy_of_campaign(
                conn, source.campaign_id, scope, name=domain.copy_name(source.name)
            )
            if copy is None:  # deleted between the two statements
                raise domain.campaign_not_found(request.campaign_id)
        return convert.campaign_to_proto(copy)

    async def DeleteCampaigns(
        self, request: campaign_pb2.DeleteCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.DeleteCampaignsResponse:
        campaign_ids = domain.require_campaign_ids(request.campaign_ids)
        async with self._outbox.unit_of_work() as work:
            deleted = await store.delete_campaigns_with_auto_resends(
                work.conn, campaign_ids, domain.owner_scope(auth.principal())
            )
            for event in events.deleted_events(deleted):
                work.publish(herald_events.CAMPAIGN_DELETED, event)
        return campaign_pb2.DeleteCampaignsResponse(
            deleted_campaign_ids=sorted(campaign_id for campaign_id, _ in deleted)
        )

    async def UpdateCampaign(
        self, request: campaign_pb2.UpdateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        principal = auth.principal()
        now = self._clock.now()
        patch = convert.patch_from_proto(request)
        if patch.campaign_id <= 0:
            raise domain.update_failure(domain.check_patch(patch, now)[1])
        structlog.contextvars.bind_contextvars(campaign_id=patch.campaign_id)
        # Asked before the campaign's row is locked: no lock is held across a call to another service.
        unowned = await self._unowned_targeting(patch, principal)
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            current = await store.campaign_for_update(conn, patch.campaign_id, domain.owner_scope(principal))
            if current is None:
                raise domain.update_not_found(patch.campaign_id, domain.check_patch(patch, now)[1])
            references = dataclasses.replace(
                await self._references(conn, current, patch), unowned_targeting=unowned
            )
            updated = domain.apply_update(current, patch, references, principal, now)
            if request.validate_only:
                return convert.campaign_to_proto(current)
            saved = await store.save_campaign(conn, updated, replace_variations="variations" in patch.paths)
            events.record_status_change(work, current, saved)
            await _keep_trace_context(conn, current, saved)
        return convert.campaign_to_proto(saved)

    async def PauseCampaign(
        self, request: campaign_pb2.PauseCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        return await self._change_status(request.campaign_id, domain.paused)

    async def ResumeCampaign(
        self, request: campaign_pb2.ResumeCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        return await self._change_status(request.campaign_id, domain.resumed)

    async def CancelCampaign(
        self, request: campaign_pb2.CancelCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        return await self._change_status(
            request.campaign_id, domain.cancelled, follow_up=self._cancel_auto_resend_with_original
        )

    async def ApproveCampaign(
        self, request: campaign_pb2.ApproveCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        now = self._clock.now()
        return await self._change_status(request.campaign_id, lambda campaign: domain.approved(campaign, now))

    async def CreateSplitTest(
        self, request: campaign_pb2.CreateSplitTestRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.SplitTest:
        settings, violations = domain.check_split_test(
            request.campaign_id,
            request.test_size_percent,
            request.test_duration_hours,
            convert.winner_from_proto(request.winner),
        )
        structlog.contextvars.bind_contextvars(campaign_id=request.campaign_id)
        scope = domain.owner_scope(auth.principal())
        async with self._engine.begin() as conn:
            if settings is None:
                # Name the missing campaign beside the bad fields, as the legacy list of codes does.
                exists = request.campaign_id <= 0 or await store.campaign_exists(conn, request.campaign_id, scope)
                raise domain.split_test_failure(violations, None if exists else request.campaign_id)
            split_test = await store.upsert_split_test(conn, request.campaign_id, scope, settings)
        if split_test is None:
            raise domain.split_test_failure([], request.campaign_id)
        return convert.split_test_to_proto(split_test)

    async def RetryFailedRecipients(
        self, request: campaign_pb2.RetryFailedRecipientsRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.RetryFailedRecipientsResponse:
        """Admin only (the permission table): delivery requeues the Failed recipients; the campaign is Sending."""
        domain.validate_campaign_id(request.campaign_id)
        structlog.contextvars.bind_contextvars(campaign_id=request.campaign_id)
        try:
            async with self._outbox.unit_of_work() as work:
                conn = work.conn
                found = await store.sending_campaign_for_update(conn, request.campaign_id, None)
                if found is None:
                    raise domain.campaign_not_found(request.campaign_id)
                campaign, progress = found
                # Judged before delivery is asked: only a Sent or Failed campaign is retried.
                after, reopened = sending.retried(campaign, progress)
                # The row stays locked while delivery requeues: a campaign_finished for the retried
                # recipients waits for this commit, so it always finds the campaign Sending.
                requeued = await self._delivery.RetryFailedRecipients(
                    delivery_pb2.RetryFailedRecipientsRequest(campaign_id=campaign.campaign_id)
                )
                await store.save_sending(conn, after, reopened)
                events.record_status_change(work, campaign, after)
        except DBAPIError as exc:
            raise DomainError(
                ErrorKind.UNAVAILABLE, "DATABASE_ERROR", "the campaign database failed during the retry"
            ) from exc
        return campaign_pb2.RetryFailedRecipientsResponse(
            retried_count=requeued.retried_count,
            batches_created=requeued.batches_created,
            generation=requeued.generation,
        )

    async def WatchCampaign(
        self, request: campaign_pb2.WatchCampaignRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[campaign_pb2.CampaignProgress]:
        """The campaign's progress now, then at each change (services/campaign/watch.py), until a terminal status."""
        campaign = await self._callers_campaign(request.campaign_id)

        async def read() -> watch.Progress:
            found = await store.read_campaign(self._reads, campaign.campaign_id, None)
            if found is None:  # deleted meanwhile
                raise domain.campaign_not_found(campaign.campaign_id)
            statistics = await self._statistics([campaign.campaign_id], campaign_pb2.STATISTICS_VIEW_TOTALS)
            stats = statistics.get(
                campaign.campaign_id, delivery_pb2.CampaignStatistics(campaign_id=campaign.campaign_id)
            )
            return watch.Progress(convert.STATUS_TO_PROTO[found.status], convert.statistics_to_proto(stats))

        progress_stream = watch.watch(
            self._live, campaign.campaign_id, campaign.owner_user_id, read, self._watch_heartbeat_seconds
        )
        async for progress, heartbeat in progress_stream:
            yield campaign_pb2.CampaignProgress(
                campaign_id=campaign.campaign_id,
                status=progress.status,
                statistics=progress.statistics,
                heartbeat=heartbeat,
                observe_time=grpcutil.to_timestamp(self._clock.now()),
            )

    # --- helpers -----------------------------------------------------------------------------------------------

    async def _callers_campaign(self, campaign_id: int) -> Campaign:
        """The caller's campaign, read from the read pool; NOT_FOUND for an unknown or another user's one."""
        domain.validate_campaign_id(campaign_id)
        structlog.contextvars.bind_contextvars(campaign_id=campaign_id)
        campaign = await store.read_campaign(self._reads, campaign_id, domain.owner_scope(auth.principal()))
        if campaign is None:
            raise domain.campaign_not_found(campaign_id)
        return campaign

    async def _change_status(
        self,
        campaign_id: int,
        change: Callable[[Campaign], Campaign],
        follow_up: Callable[[UnitOfWork, Campaign], Awaitable[None]] | None = None,
    ) -> campaign_pb2.Campaign:
        """Applies a status change under the row lock, so that concurrent changes of one campaign serialize;
        `follow_up` then runs in the same transaction with the campaign as saved."""
        domain.validate_campaign_id(campaign_id)
        structlog.contextvars.bind_contextvars(campaign_id=campaign_id)
        async with self._outbox.unit_of_work() as work:
            current = await store.campaign_for_update(work.conn, campaign_id, domain.owner_scope(auth.principal()))
            if current is None:
                raise domain.campaign_not_found(campaign_id)
            saved = await store.save_campaign(work.conn, change(current), replace_variations=False)
            events.record_status_change(work, current, saved)
            await _keep_trace_context(work.conn, current, saved)
            if follow_up is not None:
                await follow_up(work, saved)
        return convert.campaign_to_proto(saved)

    async def _cancel_auto_resend_with_original(self, work: UnitOfWork, original: Campaign) -> None:
        """A campaign cancelled for good takes its auto-resend along, unless that started sending already."""
        if original.status is not domain.CampaignStatus.CANCELLED:
            return
        found = await store.auto_resend_for_update(work.conn, original.campaign_id)
        if found is None:
            return
        resend, progress = found
        after = sending.cancelled_with_original(resend, progress)
        if after is None:
            return
        await store.save_sending(work.conn, after, progress)
        events.record_status_change(work, resend, after)
        log.info(
            "auto-resend cancelled with its original",
            campaign_id=original.campaign_id,
            auto_resend_campaign_id=resend.campaign_id,
        )

    async def _references(
        self, conn: AsyncConnection, current: Campaign, patch: domain.CampaignPatch
    ) -> domain.References:
        """Looks up, within the campaign owner's data, the emails and the original campaign a patch names."""
        owner = current.owner_user_id
        wanted = patch.referenced_email_ids()
        if current.email_id is not None:
            wanted.append(current.email_id)
        wanted.extend(variation.email_id for variation in current.variations)
        email_ids = await store.live_email_ids(conn, owner, wanted)
        original_found = False
        if "original_campaign_id" in patch.paths and patch.original_campaign_id > 0:
            original_found = await store.original_campaign_found(
                conn, current.campaign_id, patch.original_campaign_id, owner
            )
        return domain.References(live_email_ids=email_ids, original_campaign_found=original_found)

    async def _unowned_targeting(
        self, patch: domain.CampaignPatch, principal: auth.Principal
    ) -> tuple[FieldViolation, ...]:
        """RULINGS 15: what the audience service finds wrong with the lists, segments and rules of a targeting the
        patch sets (judged for the campaign's owner); nothing when the patch sets none or it is malformed anyway."""
        if "targeting" not in patch.paths:
            return ()
        targeting, problems = domain.validate_targeting(patch.targeting)
        if targeting.rules_bundle is not None and not targeting.rules_bundle.get("criteria"):
            # A bundle without criteria names no list and selects nobody (campaign.recipients.get says so).
            targeting = dataclasses.replace(targeting, rules_bundle=None)
        if problems or not (targeting.included or targeting.excluded or targeting.rules_bundle):
            return ()
        owner = principal.user_id
        if principal.is_admin:
            campaign = await store.read_campaign(self._reads, patch.campaign_id, None)
            if campaign is None:
                return ()  # the update answers CAMPAIGN_NOT_FOUND
            owner = campaign.owner_user_id
        request = audience_pb2.CheckTargetingRequest(
            targeting=convert.targeting_spec(targeting), owner_user_id=owner
        )
        try:
            await self._audience.CheckTargeting(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise
            failure = grpcutil.decode_error(exc)
            return tuple(
                FieldViolation(f"targeting.{v.field}", v.reason, v.description) for v in failure.violations
            ) or (FieldViolation("targeting", failure.reason, failure.message),)
        return ()

    async def _statistics(
        self, campaign_ids: Sequence[int], view: campaign_pb2.StatisticsView.ValueType
    ) -> dict[int, delivery_pb2.CampaignStatistics]:
        """Delivery's statistics of the campaigns, in one call; its errors (UNIMPLEMENTED too) pass through.

        Without the breakdowns (STATISTICS_VIEW_TOTALS) delivery reads only its counters, not the queue rows.
        """
        if not campaign_ids:
            return {}
        response = await self._delivery.BatchGetCampaignStatistics(
            delivery_pb2.BatchGetCampaignStatisticsRequest(
                campaign_ids=campaign_ids,
                view=(
                    delivery_pb2.STATISTICS_VIEW_TOTALS
                    if view == campaign_pb2.STATISTICS_VIEW_TOTALS
                    else delivery_pb2.STATISTICS_VIEW_FULL
                ),
            )
        )
        return {stats.campaign_id: stats for stats in response.statistics}

    async def _campaign_tags(self, campaign_ids: Sequence[int]) -> dict[int, list[campaign_pb2.CampaignTag]]:
        """The tags of the campaigns, from the tag service in one call."""
        if not campaign_ids:
            return {}
        response = await self._tags.BatchGetCampaignTags(
            tag_pb2.BatchGetCampaignTagsRequest(campaign_ids=campaign_ids)
        )
        return {
            entry.campaign_id: [campaign_pb2.CampaignTag(tag_id=tag.tag_id, name=tag.name) for tag in entry.tags]
            for entry in response.campaign_tags
        }


async def _keep_trace_context(conn: AsyncConnection, before: Campaign, after: Campaign) -> None:
    """A campaign made Ready keeps the request's traceparent (when tracing is on): the picker, which starts it
    later outside the request, makes its span a child of it, so that the whole send is one trace."""
    if after.status is domain.CampaignStatus.READY and before.status is not domain.CampaignStatus.READY:
        traceparent = tracing.traceparent()
        if traceparent is not None:
            await store.keep_trace_context(conn, after.campaign_id, traceparent)
