"""Campaign commands end to end: create, get, copy, delete and list through the translator."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import Api, System, User

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def create(api: Api, user: User, name: str) -> int:
    body = await api.call("campaign.create", user.api_key, CampaignName=name)
    assert body["Success"] is True, body
    campaign_id: int = body["CampaignID"]
    return campaign_id


async def test_campaign_create_answers_the_seed_shape(api: Api, user: User) -> None:
    body = await api.call("campaign.create", user.api_key, CampaignName="Summer Sale 2025")
    assert set(body) == {"Success", "ErrorCode", "CampaignID"}
    assert body["Success"] is True and body["ErrorCode"] == 0 and isinstance(body["CampaignID"], int)


async def test_campaign_create_error_codes(api: Api, user: User) -> None:
    for params in (
        {},
        {"CampaignName": ""},
        {"CampaignName": "   "},
        {"CampaignName": ["x"]},
        {"CampaignName": "x" * 300},
    ):
        body = await api.call("campaign.create", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == [1], (params, body)
        assert isinstance(body["ErrorText"], list)


async def test_campaign_get_answers_the_seed_shape(api: Api, user: User) -> None:
    campaign_id = await create(api, user, "Summer Sale 2025")
    body = await api.call("campaign.get", user.api_key, CampaignID=campaign_id, RetrieveRecipientDomains=True)
    assert set(body) == {"Success", "ErrorCode", "Campaign", "CampaignThroughput"}
    campaign = body["Campaign"]
    assert campaign["CampaignID"] == campaign_id
    assert campaign["CampaignName"] == "Summer Sale 2025"
    assert campaign["CampaignStatus"] == "Draft"
    assert campaign["RelOwnerUserID"] == user.user_id
    assert campaign["ScheduleType"] == "Not Scheduled"
    assert len(campaign["CreateDateTime"]) == 19
    assert body["CampaignThroughput"] == {"EmailsPerSecond": 0, "Duration": 0}


async def test_campaign_get_error_codes_are_a_single_int(api: Api, user: User) -> None:
    for params in (
        {},
        {"CampaignID": "abc"},
        {"CampaignID": 0},
        {"CampaignID": 987654321},
        {"CampaignID": 10**30},
    ):
        body = await api.call("campaign.get", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == 2, (params, body)
        assert isinstance(body["ErrorText"], str)


async def test_an_admin_key_may_get_any_users_campaign(api: Api, user: User, admin: Any) -> None:
    campaign_id = await create(api, user, "for the admin")
    body = await api.call("campaign.get", admin.api_key, CampaignID=campaign_id)
    assert body["Success"] is True and body["Campaign"]["RelOwnerUserID"] == user.user_id


async def test_campaign_copy_creates_a_draft_copy(api: Api, user: User) -> None:
    campaign_id = await create(api, user, "Original")
    body = await api.call("campaign.copy", user.api_key, CampaignID=campaign_id)
    assert set(body) == {"Success", "ErrorCode", "NewCampaignID"} and body["Success"] is True
    new_id = body["NewCampaignID"]
    assert new_id != campaign_id
    copied = (await api.call("campaign.get", user.api_key, CampaignID=new_id))["Campaign"]
    assert copied["CampaignStatus"] == "Draft" and copied["CampaignName"].startswith("Original")


async def test_campaign_copy_error_codes(api: Api, user: User) -> None:
    for params in ({}, {"CampaignID": "x"}, {"CampaignID": 987654321}):
        body = await api.call("campaign.copy", user.api_key, **params)
        assert body == {"Success": False, "ErrorCode": [1], "ErrorText": ["Invalid source campaign"]}, params


async def test_campaigns_delete_answers_the_seed_shape(api: Api, user: User) -> None:
    ids = [await create(api, user, f"to delete {i}") for i in range(3)]
    keep = await create(api, user, "to keep")
    body = await api.call("campaigns.delete", user.api_key, Campaigns=",".join(map(str, ids)))
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    body = await api.call("campaigns.get", user.api_key)
    assert [c["CampaignID"] for c in body["Campaigns"]] == [keep]
    for campaign_id in ids:
        assert (await api.call("campaign.get", user.api_key, CampaignID=campaign_id))["ErrorCode"] == 2


async def test_campaigns_delete_error_codes(api: Api, user: User) -> None:
    for params in ({}, {"Campaigns": ""}, {"Campaigns": "1,abc"}):
        body = await api.call("campaigns.delete", user.api_key, **params)
        assert body["ErrorCode"] == [1], (params, body)


async def test_campaigns_get_answers_the_seed_shape(api: Api, user: User) -> None:
    campaign_id = await create(api, user, "Summer Sale 2025")
    # Date_From/Date_To filter on the send date: this one is scheduled within the range.
    body = await api.call(
        "campaign.update",
        user.api_key,
        CampaignID=campaign_id,
        ScheduleType="Future",
        SendDate="2098-06-15",
        SendTime="10:00:00",
    )
    assert body["Success"] is True, body
    body = await api.call(
        "campaigns.get",
        user.api_key,
        CampaignStatus="Draft",
        Date_From="2025-01-01",
        Date_To="2099-12-31",
        RecordsPerRequest=50,
        RecordsFrom=0,
        OrderField="SendDate",
        OrderType="DESC",
    )
    assert set(body) == {"Success", "ErrorCode", "ErrorText", "Campaigns", "TotalCampaigns"}
    assert body["TotalCampaigns"] == 1
    row = body["Campaigns"][0]
    assert row["CampaignID"] == campaign_id and row["CampaignStatus"] == "Draft" and "SendDate" in row


async def test_campaigns_get_filters_searches_orders_and_pages(api: Api, user: User) -> None:
    names = ["Alpha", "beta 100%", "Gamma_1", "gamma21", "Delta"]
    ids = {name: await create(api, user, name) for name in names}
    body = await api.call("campaigns.get", user.api_key, SearchKeyword="gamma")
    assert sorted(c["CampaignName"] for c in body["Campaigns"]) == ["Gamma_1", "gamma21"]
    body = await api.call("campaigns.get", user.api_key, SearchKeyword="a_1")
    assert [c["CampaignName"] for c in body["Campaigns"]] == ["Gamma_1"]  # _ is literal
    body = await api.call("campaigns.get", user.api_key, SearchKeyword="0%")
    assert [c["CampaignName"] for c in body["Campaigns"]] == ["beta 100%"]  # % is literal
    body = await api.call("campaigns.get", user.api_key, OrderField="CampaignName", OrderType="ASC")
    assert [c["CampaignName"] for c in body["Campaigns"]] == sorted(names, key=str.lower)
    page = await api.call(
        "campaigns.get",
        user.api_key,
        OrderField="CampaignID",
        OrderType="DESC",
        RecordsPerRequest=2,
        RecordsFrom=2,
    )
    assert page["TotalCampaigns"] == 5
    assert [c["CampaignID"] for c in page["Campaigns"]] == sorted(ids.values(), reverse=True)[2:4]
    beyond = await api.call("campaigns.get", user.api_key, RecordsPerRequest=2, RecordsFrom=50)
    assert beyond["Campaigns"] == [] and beyond["TotalCampaigns"] == 5
    body = await api.call("campaigns.get", user.api_key, CampaignIDs=f"{ids['Alpha']},{ids['Delta']}")
    assert sorted(c["CampaignID"] for c in body["Campaigns"]) == sorted([ids["Alpha"], ids["Delta"]])
    body = await api.call("campaigns.get", user.api_key, CampaignIDs=[ids["Alpha"]])
    assert [c["CampaignID"] for c in body["Campaigns"]] == [ids["Alpha"]]
    body = await api.call("campaigns.get", user.api_key, CampaignStatus="Sent")
    assert body["Campaigns"] == [] and body["TotalCampaigns"] == 0
    body = await api.call("campaigns.get", user.api_key, CampaignStatus="All")
    assert body["TotalCampaigns"] == 5


async def test_campaigns_get_orders_only_by_whitelisted_fields(api: Api, user: User) -> None:
    for name in ("b", "a"):
        await create(api, user, name)
    body = await api.call("campaigns.get", user.api_key, OrderField="password_hash; DROP TABLE x")
    assert body["Success"] is True and body["TotalCampaigns"] == 2


async def test_campaigns_get_rejects_malformed_parameters_with_a_list(api: Api, user: User) -> None:
    for params in (
        {"RecordsPerRequest": "many"},
        {"RecordsFrom": -1},
        {"CampaignStatus": "Bogus"},
        {"CampaignIDs": "1,x"},
    ):
        body = await api.call("campaigns.get", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == [1], (params, body)


async def test_users_cannot_see_or_change_each_others_campaigns(api: Api, make_user: Any) -> None:
    alice, bob = await make_user(), await make_user()
    campaign_id = await create(api, alice, "Alice's")
    assert (await api.call("campaign.get", bob.api_key, CampaignID=campaign_id))["ErrorCode"] == 2
    assert (await api.call("campaign.copy", bob.api_key, CampaignID=campaign_id))["ErrorCode"] == [1]
    assert (await api.call("campaigns.get", bob.api_key))["TotalCampaigns"] == 0
    body = await api.call("campaigns.get", bob.api_key, CampaignIDs=str(campaign_id))
    assert body["Campaigns"] == []
    assert (await api.call("campaigns.delete", bob.api_key, Campaigns=str(campaign_id)))["Success"] is True
    assert (await api.call("campaign.get", alice.api_key, CampaignID=campaign_id))["Success"] is True


async def test_campaign_get_survives_postgresql_dropping_its_read_connections(
    api: Api, user: User, system: System
) -> None:
    """GetCampaign reads on its own pool (herald-campaign-reads); connections PostgreSQL closed are replaced."""
    campaign_id = await create(api, user, "Read after a restart")
    for _ in range(3):
        body = await api.call("campaign.get", user.api_key, CampaignID=campaign_id)
        assert body["Success"] is True, body
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'herald-campaign-reads'"
        )
        row = await cursor.fetchone()
        assert row is not None and row[0] >= 1
    for _ in range(3):
        body = await api.call("campaign.get", user.api_key, CampaignID=campaign_id)
        assert body["Success"] is True, body
        assert body["Campaign"]["CampaignName"] == "Read after a restart"
