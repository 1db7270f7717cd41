"""Tag commands end to end: legacy HTTP → translator → tag service (→ campaign service) → PostgreSQL, and NATS events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, User, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def create_tag(api: Api, user: User, name: str) -> int:
    body = await api.call("tag.create", user.api_key, Tag=name)
    assert body["Success"] is True, body
    tag_id: int = body["TagID"]
    return tag_id


async def create_campaign(api: Api, user: User, name: str = "Summer Sale 2025") -> int:
    body = await api.call("campaign.create", user.api_key, CampaignName=name)
    assert body["Success"] is True, body
    campaign_id: int = body["CampaignID"]
    return campaign_id


async def test_tag_create_answers_the_seed_shape(api: Api, user: User) -> None:
    body = await api.call("tag.create", user.api_key, Tag="summer-campaign")
    assert set(body) == {"Success", "ErrorCode", "ErrorText", "TagID"}
    assert body["Success"] is True and body["ErrorCode"] == 0 and body["ErrorText"] == ""
    assert isinstance(body["TagID"], int) and body["TagID"] > 0


async def test_tags_get_answers_the_seed_shape(api: Api, user: User) -> None:
    first = await create_tag(api, user, "newsletter")
    second = await create_tag(api, user, "promotion")
    body = await api.call("tags.get", user.api_key)
    assert set(body) == {"Success", "ErrorCode", "ErrorText", "TotalTagCount", "Tags"}
    assert body["TotalTagCount"] == 2
    assert body["Tags"] == [
        {"TagID": first, "Tag": "newsletter", "RelOwnerUserID": user.user_id},
        {"TagID": second, "Tag": "promotion", "RelOwnerUserID": user.user_id},
    ]


async def test_tag_create_error_codes(api: Api, user: User) -> None:
    await create_tag(api, user, "Existing Tag")
    cases = [
        ({}, 1),
        ({"Tag": ""}, 1),
        ({"Tag": "existing tag"}, 2),  # duplicates compare case-insensitively
        ({"Tag": "  Existing Tag  "}, 2),  # ... after trimming
        ({"Tag": "bad!name"}, 3),
        ({"Tag": "semi;colon"}, 3),
        ({"Tag": {"nested": 1}}, 3),
        ({"Tag": "x" * 300}, 3),
        ({"Tag": "   "}, 4),
    ]
    for params, code in cases:
        body = await api.call("tag.create", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == code, (params, body)
        assert isinstance(body["ErrorText"], str) and body["ErrorText"]


async def test_tag_names_are_trimmed_and_keep_spaces_hyphens_underscores(api: Api, user: User) -> None:
    tag_id = await create_tag(api, user, "  Black Friday_2025-EU  ")
    body = await api.call("tags.get", user.api_key)
    assert body["Tags"] == [{"TagID": tag_id, "Tag": "Black Friday_2025-EU", "RelOwnerUserID": user.user_id}]


async def test_tag_update_renames_and_answers_the_seed_shape(api: Api, user: User) -> None:
    tag_id = await create_tag(api, user, "summer")
    body = await api.call("tag.update", user.api_key, TagID=tag_id, Tag="summer-promotion")
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    body = await api.call("tags.get", user.api_key)
    assert [t["Tag"] for t in body["Tags"]] == ["summer-promotion"]


async def test_tag_update_error_codes_are_lists_of_every_problem(api: Api, user: User) -> None:
    tag_id = await create_tag(api, user, "alpha")
    await create_tag(api, user, "beta")
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, [1, 2]),
        ({"TagID": tag_id}, [2]),
        ({"Tag": "gamma"}, [1]),
        ({"TagID": "abc", "Tag": "gamma"}, [1]),
        ({"TagID": tag_id, "Tag": "bad@name"}, [3]),
        ({"TagID": tag_id, "Tag": "   "}, [4]),
        ({"TagID": 999_999_999, "Tag": "gamma"}, [1]),
        ({"TagID": tag_id, "Tag": "BETA"}, [2]),
    ]
    for params, codes in cases:
        body = await api.call("tag.update", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == codes, (params, body)
        assert isinstance(body["ErrorText"], list) and len(body["ErrorText"]) == len(codes)


async def test_renaming_a_tag_to_itself_in_another_case_is_allowed(api: Api, user: User) -> None:
    tag_id = await create_tag(api, user, "casing")
    body = await api.call("tag.update", user.api_key, TagID=tag_id, Tag="CASING")
    assert body["Success"] is True


async def test_tags_delete_answers_the_seed_shape_and_ignores_unknown_ids(api: Api, user: User) -> None:
    keep = await create_tag(api, user, "keep")
    ids = [await create_tag(api, user, f"drop {i}") for i in range(3)]
    body = await api.call("tags.delete", user.api_key, Tags=",".join(map(str, [*ids, 987654321])))
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    body = await api.call("tags.get", user.api_key)
    assert [t["TagID"] for t in body["Tags"]] == [keep]


async def test_tags_delete_error_codes(api: Api, user: User) -> None:
    for params in ({}, {"Tags": ""}, {"Tags": "a,b"}):
        body = await api.call("tags.delete", user.api_key, **params)
        assert body["ErrorCode"] == [1] and len(body["ErrorText"]) == 1, (params, body)


async def test_assign_and_unassign_are_idempotent(api: Api, user: User) -> None:
    tag_id = await create_tag(api, user, "assigned")
    campaigns = [await create_campaign(api, user, f"c{i}") for i in range(3)]
    ids = ",".join(map(str, campaigns))
    for _ in range(2):
        body = await api.call("tag.assigntocampaigns", user.api_key, TagID=tag_id, CampaignIDs=ids)
        assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    body = await api.call("campaigns.get", user.api_key)
    assert body["TotalCampaigns"] == 3
    for _ in range(2):
        body = await api.call("tag.unassignfromcampaigns", user.api_key, TagID=tag_id, CampaignIDs=ids)
        assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}


async def test_assign_accepts_campaign_ids_as_a_list(api: Api, user: User) -> None:
    tag_id = await create_tag(api, user, "listed")
    campaign = await create_campaign(api, user)
    body = await api.call("tag.assigntocampaigns", user.api_key, TagID=tag_id, CampaignIDs=[campaign])
    assert body["Success"] is True


async def test_assign_error_codes(api: Api, user: User) -> None:
    tag_id = await create_tag(api, user, "codes")
    campaign = await create_campaign(api, user)
    for command in ("tag.assigntocampaigns", "tag.unassignfromcampaigns"):
        cases: list[tuple[dict[str, Any], list[int]]] = [
            ({}, [1, 2]),
            ({"TagID": tag_id}, [2]),
            ({"CampaignIDs": str(campaign)}, [1]),
            ({"TagID": 987654321, "CampaignIDs": str(campaign)}, [1]),
            ({"TagID": tag_id, "CampaignIDs": "x,y"}, [2]),
        ]
        for params, codes in cases:
            body = await api.call(command, user.api_key, **params)
            assert body["ErrorCode"] == codes, (command, params, body)
    body = await api.call("tag.assigntocampaigns", user.api_key, TagID=tag_id, CampaignIDs=f"{campaign},987654321")
    assert body["ErrorCode"] == [2]


async def test_assign_needs_the_campaigns_get_permission(api: Api, make_user: Any) -> None:
    limited = await make_user(permissions=["Campaign.Create"])
    tag_id = await create_tag(api, limited, "perm")
    campaign = await create_campaign(api, limited)
    body = await api.call("tag.assigntocampaigns", limited.api_key, TagID=tag_id, CampaignIDs=str(campaign))
    assert body["ErrorCode"] == 99999


async def test_users_cannot_see_or_change_each_others_tags(api: Api, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    tag_id = await create_tag(api, alice, "private")
    alice_campaign = await create_campaign(api, alice)
    bob_campaign = await create_campaign(api, bob)
    assert (await api.call("tags.get", bob.api_key))["Tags"] == []
    body = await api.call("tag.update", bob.api_key, TagID=tag_id, Tag="stolen")
    assert body["ErrorCode"] == [1]
    body = await api.call("tag.assigntocampaigns", bob.api_key, TagID=tag_id, CampaignIDs=str(bob_campaign))
    assert body["ErrorCode"] == [1]
    # Alice cannot tag Bob's campaign with her own tag either.
    body = await api.call("tag.assigntocampaigns", alice.api_key, TagID=tag_id, CampaignIDs=str(bob_campaign))
    assert body["ErrorCode"] == [2]
    await api.call("tags.delete", bob.api_key, Tags=str(tag_id))
    # The same name is free for another user.
    assert (await api.call("tag.create", bob.api_key, Tag="private"))["Success"] is True
    body = await api.call("tags.get", alice.api_key)
    assert body["Tags"] == [{"TagID": tag_id, "Tag": "private", "RelOwnerUserID": alice.user_id}]
    body = await api.call("tag.assigntocampaigns", alice.api_key, TagID=tag_id, CampaignIDs=str(alice_campaign))
    assert body["Success"] is True


async def test_deleting_a_campaign_drops_its_tag_assignments(
    api: Api, user: User, grpc_channel_factory: Any, system: Any
) -> None:
    from herald.tag.v1 import tag_pb2, tag_pb2_grpc

    from tests.conftest import grpc_metadata

    tag_id = await create_tag(api, user, "cleanup")
    doomed, kept = await create_campaign(api, user, "doomed"), await create_campaign(api, user, "kept")
    await api.call("tag.assigntocampaigns", user.api_key, TagID=tag_id, CampaignIDs=f"{doomed},{kept}")
    async with grpc_channel_factory("tag") as channel:
        stub = tag_pb2_grpc.TagServiceStub(channel)
        # As the campaign service asks: ListTaggedCampaigns is internal.
        metadata = grpc_metadata(system, user.user_id, service="campaign")

        async def tagged() -> list[int]:
            response = await stub.ListTaggedCampaigns(
                tag_pb2.ListTaggedCampaignsRequest(tag_ids=[tag_id]), metadata=metadata
            )
            return sorted(response.campaign_ids)

        assert await tagged() == sorted([doomed, kept])
        body = await api.call("campaigns.delete", user.api_key, Campaigns=str(doomed))
        assert body["Success"] is True

        async def only_kept() -> bool:
            return await tagged() == [kept]

        assert await eventually(only_kept), "the tag service did not drop the deleted campaign's assignment"
