"""The gRPC servicer of herald.tag.v1.TagService: proto to domain and back; the SQL is in store, the rules in domain."""

from __future__ import annotations

import grpc
import structlog
from google.protobuf import empty_pb2
from herald.tag.v1 import tag_pb2, tag_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import auth, grpcutil
from services.tag import domain, store
from services.tag.campaigns import CampaignDirectory
from services.tag.domain import Tag

log = structlog.get_logger()


def _owner_scope() -> int | None:
    """Whose tags the caller may see and change: their own, or (None) everyone's for an admin."""
    principal = auth.principal()
    return None if principal.is_admin else principal.user_id


def _tag_message(tag: Tag) -> tag_pb2.Tag:
    create_time = grpcutil.to_timestamp(tag.create_time)
    update_time = grpcutil.to_timestamp(tag.update_time)
    return tag_pb2.Tag(
        tag_id=tag.tag_id,
        name=tag.name,
        owner_user_id=tag.owner_user_id,
        create_time=create_time,
        update_time=update_time,
        archive_template_url=tag.archive_template_url,
    )


class TagService(tag_pb2_grpc.TagServiceServicer):
    """Tags and their assignments to campaigns, every call scoped to the principal's user."""

    def __init__(self, engine: AsyncEngine, campaigns: CampaignDirectory) -> None:
        self._engine = engine
        self._campaigns = campaigns

    async def ListTags(
        self, request: tag_pb2.ListTagsRequest, context: grpc.aio.ServicerContext
    ) -> tag_pb2.ListTagsResponse:
        async with self._engine.connect() as conn:
            tags = await store.tags_of_owner(conn, _owner_scope())
        return tag_pb2.ListTagsResponse(tags=[_tag_message(tag) for tag in tags])

    async def GetTag(self, request: tag_pb2.GetTagRequest, context: grpc.aio.ServicerContext) -> tag_pb2.Tag:
        domain.validate_tag_id(request.tag_id)
        async with self._engine.connect() as conn:
            tag = await store.tag_by_id(conn, request.tag_id, _owner_scope())
        if tag is None:
            raise domain.tag_not_found(request.tag_id)
        return _tag_message(tag)

    async def CreateTag(self, request: tag_pb2.CreateTagRequest, context: grpc.aio.ServicerContext) -> tag_pb2.Tag:
        name = domain.validate_new_tag_name(request.name)
        async with self._engine.begin() as conn:
            tag = await store.inserted_tag(conn, auth.principal().user_id, name)
        log.info("tag created", tag_id=tag.tag_id)
        return _tag_message(tag)

    async def UpdateTag(self, request: tag_pb2.UpdateTagRequest, context: grpc.aio.ServicerContext) -> tag_pb2.Tag:
        name = domain.validate_rename(request.tag_id, request.name)
        async with self._engine.begin() as conn:
            tag = await store.renamed_tag(conn, request.tag_id, _owner_scope(), name)
        log.info("tag renamed", tag_id=tag.tag_id)
        return _tag_message(tag)

    async def DeleteTags(
        self, request: tag_pb2.DeleteTagsRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        tag_ids = domain.validate_tag_ids(request.tag_ids)
        async with self._engine.begin() as conn:
            deleted = await store.deleted_tag_count(conn, tag_ids, _owner_scope())
        log.info("tags deleted", requested=len(tag_ids), deleted=deleted)
        return empty_pb2.Empty()

    async def AssignTag(
        self, request: tag_pb2.AssignTagRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        campaign_ids = domain.validate_assignment(request.tag_id, request.campaign_ids)
        scope = _owner_scope()
        async with self._engine.connect() as conn:
            tag = await store.tag_by_id(conn, request.tag_id, scope)
        if tag is None:
            raise domain.tag_not_found(request.tag_id)
        # Asked outside any transaction: no row lock is held across a network call.
        await self._campaigns.require_campaigns_of(tag.owner_user_id, campaign_ids)
        async with self._engine.begin() as conn:
            # The lock keeps a concurrent DeleteTags from removing the tag under the insert.
            if await store.tag_by_id(conn, tag.tag_id, scope, lock=True) is None:
                raise domain.tag_not_found(request.tag_id)
            added = await store.assigned_count(conn, tag, campaign_ids)
        log.info("tag assigned", tag_id=tag.tag_id, campaigns=len(campaign_ids), added=added)
        return empty_pb2.Empty()

    async def UnassignTag(
        self, request: tag_pb2.UnassignTagRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        campaign_ids = domain.validate_assignment(request.tag_id, request.campaign_ids)
        async with self._engine.begin() as conn:
            if await store.tag_by_id(conn, request.tag_id, _owner_scope()) is None:
                raise domain.tag_not_found(request.tag_id)
            removed = await store.unassigned_count(conn, request.tag_id, campaign_ids)
        log.info("tag unassigned", tag_id=request.tag_id, campaigns=len(campaign_ids), removed=removed)
        return empty_pb2.Empty()

    async def BatchGetCampaignTags(
        self, request: tag_pb2.BatchGetCampaignTagsRequest, context: grpc.aio.ServicerContext
    ) -> tag_pb2.BatchGetCampaignTagsResponse:
        campaign_ids = domain.unique_ids(request.campaign_ids)
        if not campaign_ids:
            return tag_pb2.BatchGetCampaignTagsResponse()
        async with self._engine.connect() as conn:
            found = await store.tags_by_campaign(conn, campaign_ids, _owner_scope())
        # Entries follow the request's order, so callers can zip them with what they asked for.
        return tag_pb2.BatchGetCampaignTagsResponse(
            campaign_tags=[
                tag_pb2.BatchGetCampaignTagsResponse.CampaignTags(
                    campaign_id=campaign_id, tags=[_tag_message(tag) for tag in found[campaign_id]]
                )
                for campaign_id in campaign_ids
                if campaign_id in found
            ]
        )

    async def ListTaggedCampaigns(
        self, request: tag_pb2.ListTaggedCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> tag_pb2.ListTaggedCampaignsResponse:
        tag_ids = domain.unique_ids(request.tag_ids)
        if not tag_ids:
            return tag_pb2.ListTaggedCampaignsResponse()
        async with self._engine.connect() as conn:
            campaign_ids = await store.tagged_campaign_ids(conn, tag_ids, _owner_scope())
        return tag_pb2.ListTaggedCampaignsResponse(campaign_ids=campaign_ids)

    async def SetArchiveTemplate(
        self, request: tag_pb2.SetArchiveTemplateRequest, context: grpc.aio.ServicerContext
    ) -> tag_pb2.Tag:
        template_url = domain.validate_archive_template(request.tag_id, request.archive_template_url)
        async with self._engine.begin() as conn:
            tag = await store.templated_tag(conn, request.tag_id, _owner_scope(), template_url)
        log.info("tag archive template set", tag_id=tag.tag_id, cleared=not template_url)
        return _tag_message(tag)
