"""Direct gRPC callers: health, reflection, the principal token, and rich error details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.tag.v1 import tag_pb2, tag_pb2_grpc

from services.common import auth
from services.common.grpcutil import decode_error
from tests.conftest import System, User, grpc_metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")
SERVICES = {
    "campaign": "herald.campaign.v1.CampaignService",
    "tag": "herald.tag.v1.TagService",
    "audience": "herald.audience.v1.AudienceService",
    "delivery": "herald.delivery.v1.DeliveryService",
}


async def test_every_service_answers_health_checks(system: System) -> None:
    for service, full_name in SERVICES.items():
        async with grpc.aio.insecure_channel(system.grpc_target(service)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", full_name):
                response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
                assert response.status == health_pb2.HealthCheckResponse.SERVING, (service, name)


async def test_every_service_lists_itself_through_reflection(system: System) -> None:
    for service, full_name in SERVICES.items():
        async with grpc.aio.insecure_channel(system.grpc_target(service)) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names = []
            async for response in stub.ServerReflectionInfo(iter([request])):
                names = [s.name for s in response.list_services_response.service]
            assert full_name in names and "grpc.health.v1.Health" in names


async def test_a_call_without_a_token_is_unauthenticated(system: System) -> None:
    async with grpc.aio.insecure_channel(system.grpc_target("tag")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await tag_pb2_grpc.TagServiceStub(channel).ListTags(tag_pb2.ListTagsRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert decode_error(raised.value).reason == "UNAUTHENTICATED"


async def test_a_token_signed_with_another_key_is_unauthenticated(system: System) -> None:
    forged = auth.mint_token(auth.Principal(user_id=1), "not-the-secret-but-just-as-long-as-the-real-one", 60)
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await campaign_pb2_grpc.CampaignServiceStub(channel).GetCampaign(
                campaign_pb2.GetCampaignRequest(campaign_id=1), metadata=(("authorization", f"Bearer {forged}"),)
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_expired_token_is_unauthenticated(system: System) -> None:
    expired = auth.mint_token(auth.Principal(user_id=1), system.env["HERALD_TOKEN_SECRET"], -120)
    async with grpc.aio.insecure_channel(system.grpc_target("tag")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await tag_pb2_grpc.TagServiceStub(channel).ListTags(
                tag_pb2.ListTagsRequest(), metadata=(("authorization", f"Bearer {expired}"),)
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_invalid_input_carries_error_info_and_one_violation_per_field(system: System, user: User) -> None:
    async with grpc.aio.insecure_channel(system.grpc_target("tag")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await tag_pb2_grpc.TagServiceStub(channel).UpdateTag(
                tag_pb2.UpdateTagRequest(), metadata=grpc_metadata(system, user.user_id)
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    failure = decode_error(raised.value)
    assert failure.domain == "herald.tag.v1" and failure.reason == "TAG_ID_REQUIRED"
    assert [(v.field, v.reason) for v in failure.violations] == [
        ("tag_id", "TAG_ID_REQUIRED"),
        ("name", "TAG_NAME_REQUIRED"),
    ]
    assert all(isinstance(v, error_details_pb2.BadRequest.FieldViolation) for v in failure.violations)


async def test_not_found_and_conflict_use_their_status_codes(system: System, user: User) -> None:
    metadata = grpc_metadata(system, user.user_id)
    async with grpc.aio.insecure_channel(system.grpc_target("tag")) as channel:
        stub = tag_pb2_grpc.TagServiceStub(channel)
        await stub.CreateTag(tag_pb2.CreateTagRequest(name="grpc tag"), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateTag(tag_pb2.CreateTagRequest(name="GRPC TAG"), metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert decode_error(raised.value).reason == "TAG_ALREADY_EXISTS"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetTag(tag_pb2.GetTagRequest(tag_id=987654321), metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_campaigns_pages_with_tokens(system: System, user: User) -> None:
    metadata = grpc_metadata(system, user.user_id)
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        created = [
            (
                await stub.CreateCampaign(campaign_pb2.CreateCampaignRequest(name=f"paged {i}"), metadata=metadata)
            ).campaign_id
            for i in range(5)
        ]
        seen: list[int] = []
        token = ""
        while True:
            page = await stub.ListCampaigns(
                campaign_pb2.ListCampaignsRequest(page_size=2, page_token=token), metadata=metadata
            )
            assert page.total_size == 5
            seen += [c.campaign_id for c in page.campaigns]
            token = page.next_page_token
            if not token:
                break
        assert seen == sorted(created)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListCampaigns(campaign_pb2.ListCampaignsRequest(page_token="garbage"), metadata=metadata)
        assert decode_error(raised.value).reason == "PAGE_TOKEN_INVALID"
