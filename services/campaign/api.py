"""The CampaignService servicer: turns requests into domain calls and store queries, and campaigns back into protos."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import grpc
import structlog
from google.protobuf import timestamp_pb2
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.campaign import domain, store
from services.campaign.domain import Campaign
from services.common import auth, outbox
from services.common.natsutil import Subjects

CAMPAIGN_DELETED = "campaign.deleted"


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def campaign_to_proto(campaign: Campaign) -> campaign_pb2.Campaign:
    message = campaign_pb2.Campaign(
        campaign_id=campaign.campaign_id,
        owner_user_id=campaign.owner_user_id,
        name=campaign.name,
        status=domain.status_to_proto(campaign.status),
        status_reason=campaign.status_reason,
        email_id=campaign.email_id or 0,
        schedule_type=domain.schedule_type_to_proto(campaign.schedule_type),
        original_campaign_id=campaign.original_campaign_id or 0,
        create_time=_timestamp(campaign.created_at),
        update_time=_timestamp(campaign.updated_at),
    )
    if campaign.send_started_at is not None:
        message.send_time.CopyFrom(_timestamp(campaign.send_started_at))
    return message


class CampaignApi(campaign_pb2_grpc.CampaignServiceServicer):
    """Every method works within the caller's campaigns (an admin's: everyone's); DomainError becomes a status
    in the ErrorInterceptor."""

    def __init__(self, engine: AsyncEngine, subjects: Subjects, wake_outbox: Callable[[], None]) -> None:
        self._engine = engine
        self._subjects = subjects
        self._wake_outbox = wake_outbox

    async def CreateCampaign(
        self, request: campaign_pb2.CreateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        owner_user_id = domain.owner_of_new_campaign(auth.principal())
        name = domain.validate_campaign_name(request.name)
        async with self._engine.begin() as conn:
            campaign = await store.insert_campaign(conn, owner_user_id=owner_user_id, name=name)
        structlog.contextvars.bind_contextvars(campaign_id=campaign.campaign_id)
        return campaign_to_proto(campaign)

    async def GetCampaign(
        self, request: campaign_pb2.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.Campaign:
        domain.validate_campaign_id(request.campaign_id)
        structlog.contextvars.bind_contextvars(campaign_id=request.campaign_id)
        async with self._engine.connect() as conn:
            campaign = await store.campaign_by_id(conn, request.campaign_id, domain.owner_scope(auth.principal()))
        if campaign is None:
            raise domain.campaign_not_found(request.campaign_id)
        return campaign_to_proto(campaign)

    async def BatchGetCampaigns(
        self, request: campaign_pb2.BatchGetCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.BatchGetCampaignsResponse:
        campaign_ids = domain.require_campaign_ids(request.campaign_ids)
        async with self._engine.connect() as conn:
            found = await store.campaigns_by_ids(conn, campaign_ids, domain.owner_scope(auth.principal()))
        domain.check_all_found(campaign_ids, (campaign.campaign_id for campaign in found))
        by_id = {campaign.campaign_id: campaign for campaign in found}
        # AIP-231: the response lists the campaigns in the order they were asked for.
        return campaign_pb2.BatchGetCampaignsResponse(
            campaigns=[campaign_to_proto(by_id[campaign_id]) for campaign_id in campaign_ids]
        )

    async def ListCampaigns(
        self, request: campaign_pb2.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.ListCampaignsResponse:
        query = domain.build_list_query(
            auth.principal(),
            statuses=request.statuses,
            search=request.search,
            campaign_ids=request.campaign_ids,
            include_auto_resend=request.include_auto_resend,
            order_by=request.order_by,
            descending=request.descending,
            page_size=request.page_size,
            skip=request.skip,
            page_token=request.page_token,
        )
        async with self._engine.connect() as conn:
            page, total = await store.campaign_page(conn, query)
        return campaign_pb2.ListCampaignsResponse(
            campaigns=[campaign_to_proto(campaign) for campaign in page],
            next_page_token=domain.next_page_token(query, len(page), total),
            total_size=total,
        )

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
        return campaign_to_proto(copy)

    async def DeleteCampaigns(
        self, request: campaign_pb2.DeleteCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> campaign_pb2.DeleteCampaignsResponse:
        campaign_ids = domain.require_campaign_ids(request.campaign_ids)
        subject = self._subjects.event(CAMPAIGN_DELETED)
        async with self._engine.begin() as conn:
            deleted = await store.delete_campaigns_with_auto_resends(
                conn, campaign_ids, domain.owner_scope(auth.principal())
            )
            events = domain.deleted_events(deleted)
            for event in events:
                await outbox.add_message(
                    conn,
                    store.SCHEMA,
                    subject=subject,
                    msg_id=f"{CAMPAIGN_DELETED}:{uuid.uuid4()}",
                    payload=event.payload(),
                )
        if events:
            self._wake_outbox()
        return campaign_pb2.DeleteCampaignsResponse(
            deleted_campaign_ids=sorted(campaign_id for campaign_id, _ in deleted)
        )
