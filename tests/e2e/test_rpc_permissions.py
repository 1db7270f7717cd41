"""Permissions over gRPC: a token stays as narrow as its user's permissions, internal and admin RPCs refuse an
ordinary token, malformed claims are refused, and legacy commands still work with exactly their permission."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from herald.tag.v1 import tag_pb2, tag_pb2_grpc

from services.common import auth
from services.common.grpcutil import RpcFailure, decode_error
from tests.conftest import Api, System, User, grpc_metadata
from translator.identity import IdentityStore

pytestmark = pytest.mark.asyncio(loop_scope="session")
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Stubs:
    campaign: campaign_pb2_grpc.CampaignServiceStub
    tag: tag_pb2_grpc.TagServiceStub
    audience: audience_pb2_grpc.AudienceServiceStub
    delivery: delivery_pb2_grpc.DeliveryServiceStub


@pytest_asyncio.fixture(loop_scope="session")
async def stubs(system: System) -> AsyncIterator[Stubs]:
    channels = {
        name: grpc.aio.insecure_channel(system.grpc_target(name))
        for name in ("campaign", "tag", "audience", "delivery")
    }
    try:
        yield Stubs(
            campaign_pb2_grpc.CampaignServiceStub(channels["campaign"]),
            tag_pb2_grpc.TagServiceStub(channels["tag"]),
            audience_pb2_grpc.AudienceServiceStub(channels["audience"]),
            delivery_pb2_grpc.DeliveryServiceStub(channels["delivery"]),
        )
    finally:
        for channel in channels.values():
            await channel.close()


async def refusal(call: Any) -> RpcFailure:
    """The decoded error of a call (awaitable, or a server stream whose first read fails) that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await (call.read() if hasattr(call, "read") else call)
    return decode_error(raised.value)


def assert_denied(failure: RpcFailure, domain: str, requires: str, permission: str = "") -> None:
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED, failure
    assert (failure.reason, failure.domain, failure.metadata["requires"]) == (
        "PERMISSION_DENIED",
        domain,
        requires,
    )
    assert failure.metadata.get("permission", "") == permission


async def minted(identity: IdentityStore, user: User) -> Metadata:
    """What `herald token mint --user N` prints, as call metadata."""
    token = (await identity.mint_for(user_id=user.user_id, admin_id=None, ttl=600))["Token"]
    return (("authorization", f"Bearer {token}"),)


# --- direct callers ---------------------------------------------------------------------------------------------


async def test_a_token_minted_for_a_narrow_user_calls_only_what_its_permissions_cover(
    system: System, make_user: Any, identity: IdentityStore, stubs: Stubs
) -> None:
    narrow = await make_user(["Campaign.Get", "Tag.Get"])
    token = await minted(identity, narrow)
    # The same user's campaign, made with a token that may create it.
    campaign_id = (
        await stubs.campaign.CreateCampaign(
            campaign_pb2.CreateCampaignRequest(name="narrow"), metadata=grpc_metadata(system, narrow.user_id)
        )
    ).campaign_id

    got = await stubs.campaign.GetCampaign(
        campaign_pb2.GetCampaignRequest(campaign_id=campaign_id), metadata=token
    )
    assert got.name == "narrow"
    assert (await stubs.tag.ListTags(tag_pb2.ListTagsRequest(), metadata=token)).tags == []  # tags need nothing

    campaign, audience = "herald.campaign.v1", "herald.audience.v1"
    for call, domain, permission in (
        (
            stubs.campaign.CreateCampaign(campaign_pb2.CreateCampaignRequest(name="no"), metadata=token),
            campaign,
            "Campaign.Create",
        ),
        (
            stubs.campaign.DeleteCampaigns(
                campaign_pb2.DeleteCampaignsRequest(campaign_ids=[campaign_id]), metadata=token
            ),
            campaign,
            "Campaign.Delete",
        ),
        (
            stubs.audience.CreateList(audience_pb2.CreateListRequest(name="no"), metadata=token),
            audience,
            "List.Create",
        ),
        (
            stubs.audience.AddSuppressions(
                audience_pb2.AddSuppressionsRequest(email_addresses=["no@example.com"]), metadata=token
            ),
            audience,
            "Subscribers.Import",
        ),
    ):
        assert_denied(await refusal(call), domain, "permission", permission)

    # Nothing happened: the campaign is still there, and the user still has no list.
    assert (
        await stubs.campaign.GetCampaign(campaign_pb2.GetCampaignRequest(campaign_id=campaign_id), metadata=token)
    ).campaign_id == campaign_id
    lists = await stubs.audience.ListLists(
        audience_pb2.ListListsRequest(), metadata=grpc_metadata(system, narrow.user_id)
    )
    assert list(lists.lists) == []


async def test_a_signed_admin_claim_that_is_not_json_true_is_unauthenticated(
    system: System, user: User, stubs: Stubs
) -> None:
    now = int(time.time())
    claims = {"iss": auth.ISSUER, "sub": str(user.user_id + 10**9), "perms": ["*"], "iat": now, "exp": now + 60}
    secret = system.env["HERALD_TOKEN_SECRET"]
    await stubs.campaign.CreateCampaign(
        campaign_pb2.CreateCampaignRequest(name="someone else's"), metadata=grpc_metadata(system, user.user_id)
    )
    for adm in ("false", "true", 1):
        token = jwt.encode({**claims, "adm": adm}, secret, algorithm=auth.ALGORITHM)
        failure = await refusal(
            stubs.campaign.ListCampaigns(
                campaign_pb2.ListCampaignsRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"), adm
    # A JSON false is a well-formed non-admin: it sees none of the other user's campaigns.
    token = jwt.encode({**claims, "adm": False}, secret, algorithm=auth.ALGORITHM)
    listed = await stubs.campaign.ListCampaigns(
        campaign_pb2.ListCampaignsRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert listed.total_size == 0


async def test_internal_rpcs_refuse_an_ordinary_token_and_serve_a_herald_service(
    system: System, user: User, stubs: Stubs
) -> None:
    everything = grpc_metadata(system, user.user_id)  # "*": every permission, but not a Herald service
    campaign_id = (
        await stubs.campaign.CreateCampaign(
            campaign_pb2.CreateCampaignRequest(name="internal"), metadata=everything
        )
    ).campaign_id
    list_id = (
        await stubs.audience.CreateList(audience_pb2.CreateListRequest(name="l"), metadata=everything)
    ).list_id
    targeting = audience_pb2.TargetingSpec(included=[audience_pb2.ListSegment(list_id=list_id)])
    tracking = delivery_pb2.TrackingEvent(
        campaign_id=campaign_id, recipient_id=1, kind=delivery_pb2.TRACKING_EVENT_KIND_OPEN
    )

    def internal_calls(metadata: Metadata) -> list[tuple[Any, str]]:
        return [
            (
                stubs.delivery.BatchGetCampaignStatistics(
                    delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=[campaign_id]), metadata=metadata
                ),
                "herald.delivery.v1",
            ),
            (
                stubs.delivery.RecordTrackingEvents(
                    delivery_pb2.RecordTrackingEventsRequest(events=[tracking]), metadata=metadata
                ),
                "herald.delivery.v1",
            ),
            (
                stubs.delivery.RecordUnsubscriptions(
                    delivery_pb2.RecordUnsubscriptionsRequest(
                        campaign_id=campaign_id,
                        list_id=list_id,
                        subscribers=[
                            delivery_pb2.UnsubscribedSubscriber(subscriber_id=1, email_address="a@b.example")
                        ],
                    ),
                    metadata=metadata,
                ),
                "herald.delivery.v1",
            ),
            (
                stubs.delivery.ListQueuedRecipients(
                    delivery_pb2.ListQueuedRecipientsRequest(campaign_id=campaign_id), metadata=metadata
                ),
                "herald.delivery.v1",
            ),
            (
                stubs.audience.CountRecipients(
                    audience_pb2.CountRecipientsRequest(included=targeting.included), metadata=metadata
                ),
                "herald.audience.v1",
            ),
            (
                stubs.audience.StreamRecipients(
                    audience_pb2.StreamRecipientsRequest(targeting=targeting), metadata=metadata
                ),
                "herald.audience.v1",
            ),
            (
                stubs.tag.BatchGetCampaignTags(
                    tag_pb2.BatchGetCampaignTagsRequest(campaign_ids=[campaign_id]), metadata=metadata
                ),
                "herald.tag.v1",
            ),
            (
                stubs.tag.ListTaggedCampaigns(tag_pb2.ListTaggedCampaignsRequest(tag_ids=[1]), metadata=metadata),
                "herald.tag.v1",
            ),
        ]

    for call, domain in internal_calls(everything):
        assert_denied(await refusal(call), domain, "internal")

    # The same user's token as a Herald service mints it gets answers, scoped to that user.
    as_service = grpc_metadata(system, user.user_id, permissions=(), service="campaign")
    for call, _ in internal_calls(as_service):
        if hasattr(call, "read"):
            async for _chunk in call:
                pass
        else:
            await call
    statistics = await stubs.delivery.BatchGetCampaignStatistics(
        delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=[campaign_id]), metadata=as_service
    )
    assert [(s.campaign_id, s.total_sent) for s in statistics.statistics] == [(campaign_id, 0)]


async def test_admin_rpcs_refuse_every_user_token(system: System, user: User, stubs: Stubs) -> None:
    for metadata in (grpc_metadata(system, user.user_id), grpc_metadata(system, user.user_id, service="campaign")):
        for call, domain in (
            (
                stubs.campaign.ApproveCampaign(
                    campaign_pb2.ApproveCampaignRequest(campaign_id=1), metadata=metadata
                ),
                "herald.campaign.v1",
            ),
            (
                stubs.campaign.RetryFailedRecipients(
                    campaign_pb2.RetryFailedRecipientsRequest(campaign_id=1), metadata=metadata
                ),
                "herald.campaign.v1",
            ),
            (
                stubs.delivery.RetryFailedRecipients(
                    delivery_pb2.RetryFailedRecipientsRequest(campaign_id=1), metadata=metadata
                ),
                "herald.delivery.v1",
            ),
        ):
            assert_denied(await refusal(call), domain, "admin")


# --- legacy commands with exactly their permission --------------------------------------------------------------


async def test_campaign_get_with_tags_and_statistics_needs_only_campaign_get(
    api: Api, system: System, make_user: Any, stubs: Stubs
) -> None:
    reader = await make_user(["Campaign.Get"])
    setup = grpc_metadata(system, reader.user_id)
    campaign_id = (
        await stubs.campaign.CreateCampaign(campaign_pb2.CreateCampaignRequest(name="tagged"), metadata=setup)
    ).campaign_id
    tag_id = (await stubs.tag.CreateTag(tag_pb2.CreateTagRequest(name="vip"), metadata=setup)).tag_id
    await stubs.tag.AssignTag(tag_pb2.AssignTagRequest(tag_id=tag_id, campaign_ids=[campaign_id]), metadata=setup)

    # The campaign service asks tag (BatchGetCampaignTags) and delivery (BatchGetCampaignStatistics),
    # internal RPCs, on the caller's behalf.
    body = await api.call(
        "campaign.get", reader.api_key, CampaignID=campaign_id, RetrieveTags=True, RetrieveStatistics=True
    )
    assert body["Success"] is True, body
    assert body["Campaign"]["Tags"] == [{"TagID": tag_id, "Tag": "vip"}]
    assert body["Campaign"]["TotalSent"] == 0
    assert (await api.call("campaigns.get", reader.api_key))["ErrorCode"] == 99999


async def test_campaign_recipients_get_needs_only_campaign_get(
    api: Api, system: System, make_user: Any, stubs: Stubs
) -> None:
    reader = await make_user(["Campaign.Get"])
    setup = grpc_metadata(system, reader.user_id)
    list_id = (await stubs.audience.CreateList(audience_pb2.CreateListRequest(name="l"), metadata=setup)).list_id
    await stubs.audience.CreateSubscriber(
        audience_pb2.CreateSubscriberRequest(
            subscriber=audience_pb2.Subscriber(
                list_id=list_id, email_address="one@example.com", status=audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED
            )
        ),
        metadata=setup,
    )
    campaign_id = (
        await stubs.campaign.CreateCampaign(campaign_pb2.CreateCampaignRequest(name="aimed"), metadata=setup)
    ).campaign_id
    body = await api.call(
        "campaign.update", reader.api_key, CampaignID=campaign_id, RecipientListsAndSegments=str(list_id)
    )
    assert body["ErrorCode"] == 99999  # the reader may not update
    await stubs.campaign.UpdateCampaign(
        campaign_pb2.UpdateCampaignRequest(
            campaign=campaign_pb2.Campaign(
                campaign_id=campaign_id,
                targeting=campaign_pb2.Targeting(included=[campaign_pb2.RecipientSource(list_id=list_id)]),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["targeting"]),
        ),
        metadata=setup,
    )
    for only_total in (False, True):
        body = await api.call(
            "campaign.recipients.get", reader.api_key, CampaignID=campaign_id, OnlyTotal=only_total
        )
        assert (body["Success"], body["TotalRecipients"]) == (True, 1), body


async def test_campaign_update_of_lists_needs_only_campaign_update(
    api: Api, system: System, make_user: Any, stubs: Stubs
) -> None:
    updater = await make_user(["Campaign.Update"])
    setup = grpc_metadata(system, updater.user_id)
    campaign_id = (
        await stubs.campaign.CreateCampaign(campaign_pb2.CreateCampaignRequest(name="lists"), metadata=setup)
    ).campaign_id
    first, second = [
        (await stubs.audience.CreateList(audience_pb2.CreateListRequest(name=name), metadata=setup)).list_id
        for name in ("first", "second")
    ]
    # The translator reads the stored targeting first (GetCampaign, which the user may not call itself).
    body = await api.call(
        "campaign.update", updater.api_key, CampaignID=campaign_id, RecipientListsAndSegments=f"{first},{second}:0"
    )
    assert body == {"Success": True, "ErrorCode": 0}, body
    body = await api.call(
        "campaign.update", updater.api_key, CampaignID=campaign_id, Exclude_RecipientListsAndSegments=str(second)
    )
    assert body["Success"] is True, body
    stored = await stubs.campaign.GetCampaign(
        campaign_pb2.GetCampaignRequest(campaign_id=campaign_id), metadata=setup
    )
    assert [s.list_id for s in stored.targeting.included] == [first, second]
    assert [s.list_id for s in stored.targeting.excluded] == [second]
    # Nothing to change, an unknown campaign, a bad value beside an unknown campaign: legacy answers.
    assert (await api.call("campaign.update", updater.api_key, CampaignID=campaign_id))["Success"] is True
    assert (await api.call("campaign.update", updater.api_key, CampaignID=10**12))["ErrorCode"] == 2
    body = await api.call("campaign.update", updater.api_key, CampaignID=10**12, ScheduleType="Sometimes")
    assert body["ErrorCode"] == 2, body
    assert (await api.call("campaign.get", updater.api_key, CampaignID=campaign_id))["ErrorCode"] == 99999


async def test_campaigns_get_with_tags_filter_and_tag_assignment_need_only_campaigns_get(
    api: Api, system: System, make_user: Any, stubs: Stubs
) -> None:
    lister = await make_user(["Campaigns.Get"])
    setup = grpc_metadata(system, lister.user_id)
    tagged, other = [
        (
            await stubs.campaign.CreateCampaign(campaign_pb2.CreateCampaignRequest(name=name), metadata=setup)
        ).campaign_id
        for name in ("tagged", "other")
    ]
    tag_id = (await api.call("tag.create", lister.api_key, Tag="pick"))["TagID"]
    # The tag service checks the campaigns with the campaign service on the caller's behalf.
    body = await api.call("tag.assigntocampaigns", lister.api_key, TagID=tag_id, CampaignIDs=str(tagged))
    assert body["Success"] is True, body
    body = await api.call(
        "campaigns.get", lister.api_key, Tags=str(tag_id), RetrieveStatistics=True, RetrieveTags=True
    )
    assert body["Success"] is True, body
    assert [c["CampaignID"] for c in body["Campaigns"]] == [tagged] and other != tagged
    assert body["Campaigns"][0]["Tags"] == [{"TagID": tag_id, "Tag": "pick"}]


async def test_lookups_behind_create_commands_need_only_the_command_permission(
    api: Api, system: System, make_user: Any, stubs: Stubs
) -> None:
    creator = await make_user(["Campaign.Create", "Segment.Create", "List.Create"])
    # splittest.create names every problem, an unknown campaign among them (a GetCampaign lookup).
    body = await api.call(
        "splittest.create",
        creator.api_key,
        CampaignID=10**12,
        TestSize=0,
        TestDuration=4,
        Winner="highest_open_rate",
    )
    assert body["ErrorCode"] == [2, 6], body
    # segment.create likewise checks the list (a GetList lookup) beside a bad operator.
    stranger_list = (
        await stubs.audience.CreateList(
            audience_pb2.CreateListRequest(name="theirs"), metadata=grpc_metadata(system, creator.user_id + 10**9)
        )
    ).list_id
    body = await api.call(
        "segment.create", creator.api_key, SubscriberListID=stranger_list, SegmentName="s", SegmentOperator="xor"
    )
    assert body["ErrorCode"] == [3, 4], body
    # list.create with a confirmation email: the audience service creates the email on the caller's behalf.
    confirmation = {
        "Subject": "Please confirm",
        "FromName": "Ada",
        "FromEmail": "ada@example.com",
        "ContentType": "HTML",
        "HTMLContent": "<p>Confirm: %Link:Confirm%</p>",
    }
    body = await api.call("list.create", creator.api_key, SubscriberListName="l", ConfirmationEmail=confirmation)
    assert body["Success"] is True and body["ConfirmationEmailID"] > 0, body
