"""campaigns.get and campaign.get with every option, and campaign.copy copying every setting, through the translator."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import Admin, Api, User
from translator.identity import IdentityStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

SEND_DAY = (datetime.now(UTC) + timedelta(days=400)).date()
SEED_LIST_KEYS = {"Success", "ErrorCode", "ErrorText", "Campaigns", "TotalCampaigns"}
STATISTICS_KEYS = {
    "TotalRecipients",
    "TotalSent",
    "TotalFailed",
    "TotalDeferred",
    "TotalOpens",
    "UniqueOpens",
    "TotalClicks",
    "UniqueClicks",
}


@dataclass
class World:
    """A user with one campaign of each kind, another user with one campaign, and an admin."""

    user: User
    other: User
    admin: Admin
    emails: list[int]
    ids: dict[str, int]
    other_campaign: int
    tag_id: int


async def new_user(identity: IdentityStore) -> User:
    name = f"user-{uuid.uuid4().hex[:12]}"
    created = await identity.create_user(name, "secret-password", permissions=["*"])
    return User(created["UserID"], created["APIKey"], name)


async def create(api: Api, user: User, name: str, **settings: Any) -> int:
    body = await api.call("campaign.create", user.api_key, CampaignName=name)
    assert body["Success"] is True, body
    campaign_id: int = body["CampaignID"]
    if settings:
        body = await api.call("campaign.update", user.api_key, CampaignID=campaign_id, **settings)
        assert body["Success"] is True, (name, body)
    return campaign_id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(api: Api, identity: IdentityStore) -> AsyncIterator[World]:
    user, other = await new_user(identity), await new_user(identity)
    created = await identity.create_admin(f"admin-{uuid.uuid4().hex[:12]}", "admin-password")
    emails = [(await api.call("email.create", user.api_key))["EmailID"] for _ in range(3)]
    future = {"ScheduleType": "Future", "SendDate": SEND_DAY.isoformat(), "SendTime": "12:00:00"}
    recursive = {
        "ScheduleType": "Recursive",
        "ScheduleRecDaysOfWeek": "1",
        "ScheduleRecMonths": "*",
        "ScheduleRecHours": "6",
        "ScheduleRecMinutes": "0",
        "ScheduleRecSendMaxInstance": 2,
    }
    ids = {
        "draft": await create(api, user, "Plain draft 100%"),
        "future draft": await create(api, user, "Future_draft", RelEmailID=emails[0], **future),
        "future ready": await create(
            api, user, "Future ready", RelEmailID=emails[0], CampaignStatus="Ready", **future
        ),
        "recursive ready": await create(
            api, user, "Recursive ready", RelEmailID=emails[0], CampaignStatus="Ready", **recursive
        ),
        "unscheduled ready": await create(
            api, user, "Unscheduled ready", RelEmailID=emails[0], CampaignStatus="Ready"
        ),
        "paused": await create(api, user, "Paused one", RelEmailID=emails[0], CampaignStatus="Ready", **future),
    }
    assert (await api.call("campaign.pause", user.api_key, CampaignID=ids["paused"]))["Success"] is True
    ids["auto-resend"] = await create(api, user, "Auto-resend child", OriginalCampaignID=ids["future ready"])
    tag = await api.call("tag.create", user.api_key, Tag=f"t{uuid.uuid4().hex[:8]}")
    tagged = f"{ids['draft']},{ids['paused']}"
    assert (await api.call("tag.assigntocampaigns", user.api_key, TagID=tag["TagID"], CampaignIDs=tagged))[
        "Success"
    ]
    yield World(
        user,
        other,
        Admin(created["AdminID"], created["AdminAPIKey"]),
        emails,
        ids,
        await create(api, other, "Other user's"),
        tag["TagID"],
    )


async def listed(api: Api, user: User, **params: Any) -> list[int]:
    body = await api.call("campaigns.get", user.api_key, **params)
    assert body["Success"] is True, (params, body)
    return sorted(c["CampaignID"] for c in body["Campaigns"])


def ids_of(world: World, *names: str) -> list[int]:
    return sorted(world.ids[name] for name in names)


ALL_BUT_CHILD = ("draft", "future draft", "future ready", "recursive ready", "unscheduled ready", "paused")


# campaigns.get ------------------------------------------------------------------------------------------


async def test_the_seed_example_answers_the_seed_shape(api: Api, world: World) -> None:
    body = await api.call(
        "campaigns.get",
        world.user.api_key,
        CampaignStatus="Paused",
        Date_From=SEND_DAY.replace(month=1, day=1).isoformat(),
        Date_To=SEND_DAY.replace(month=12, day=31).isoformat(),
        RecordsPerRequest=50,
        RecordsFrom=0,
        OrderField="SendDate",
        OrderType="DESC",
        RetrieveStatistics=True,
    )
    assert set(body) == SEED_LIST_KEYS and body["ErrorText"] == ""
    assert [c["CampaignID"] for c in body["Campaigns"]] == [world.ids["paused"]]
    row = body["Campaigns"][0]
    assert row["CampaignStatus"] == "Paused" and row["SendDate"] == SEND_DAY.isoformat()
    assert {key: row[key] for key in STATISTICS_KEYS} == dict.fromkeys(STATISTICS_KEYS, 0)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Draft", ("draft", "future draft")),
        ("Ready", ("future ready", "recursive ready", "unscheduled ready")),
        ("Scheduled", ("future ready", "recursive ready")),
        ("Paused", ("paused",)),
        ("paused", ("paused",)),
        ("Sent", ()),
        ("Pending Approval", ()),
        ("Cancelled", ()),
        ("All", ALL_BUT_CHILD),
        ("Draft,Paused", ("draft", "future draft", "paused")),
    ],
)
async def test_filter_by_status(api: Api, world: World, status: str, expected: tuple[str, ...]) -> None:
    assert await listed(api, world.user, CampaignStatus=status) == ids_of(world, *expected)


@pytest.mark.parametrize(
    ("schedule_type", "expected"),
    [
        ("Future", ("future draft", "future ready", "paused")),
        ("recursive", ("recursive ready",)),
        (["Recursive", "Not Scheduled"], ("draft", "recursive ready", "unscheduled ready")),
        ("Immediate", ()),
    ],
)
async def test_filter_by_schedule_type_as_string_or_list(
    api: Api, world: World, schedule_type: Any, expected: tuple[str, ...]
) -> None:
    assert await listed(api, world.user, ScheduleType=schedule_type) == ids_of(world, *expected)


async def test_search_treats_percent_and_underscore_literally(api: Api, world: World) -> None:
    assert await listed(api, world.user, SearchKeyword="%") == ids_of(world, "draft")
    assert await listed(api, world.user, SearchKeyword="e_d") == ids_of(world, "future draft")
    assert await listed(api, world.user, SearchKeyword="READY") == ids_of(
        world, "future ready", "recursive ready", "unscheduled ready"
    )


async def test_filter_by_campaign_ids_as_list_or_comma_string(api: Api, world: World) -> None:
    wanted = ids_of(world, "draft", "paused")
    assert await listed(api, world.user, CampaignIDs=wanted) == wanted
    assert await listed(api, world.user, CampaignIDs=",".join(map(str, wanted))) == wanted


async def test_filter_by_send_date_range_with_inclusive_days(api: Api, world: World) -> None:
    day = SEND_DAY.isoformat()
    scheduled_then = ids_of(world, "future draft", "future ready", "paused")
    assert await listed(api, world.user, Date_From=day, Date_To=day) == scheduled_then
    assert await listed(api, world.user, Date_From=day) == scheduled_then
    assert await listed(api, world.user, Date_From=(SEND_DAY + timedelta(days=1)).isoformat()) == []
    # The recursive campaign is due within the week; nothing else is due before the send day.
    before = (SEND_DAY - timedelta(days=1)).isoformat()
    assert await listed(api, world.user, Date_To=before) == ids_of(world, "recursive ready")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert await listed(api, world.user, Date_To=yesterday) == []


async def test_filter_by_tags_and_retrieve_tags(api: Api, world: World) -> None:
    assert await listed(api, world.user, Tags=str(world.tag_id)) == ids_of(world, "draft", "paused")
    body = await api.call("campaigns.get", world.user.api_key, RetrieveTags=True, CampaignIDs=[world.ids["draft"]])
    tags = body["Campaigns"][0]["Tags"]
    assert [tag["TagID"] for tag in tags] == [world.tag_id] and isinstance(tags[0]["Tag"], str)
    body = await api.call("campaigns.get", world.user.api_key, CampaignIDs=[world.ids["draft"]])
    assert "Tags" not in body["Campaigns"][0]


async def test_statistics_are_retrieved_by_default_and_zero_before_sending(api: Api, world: World) -> None:
    body = await api.call("campaigns.get", world.user.api_key)
    assert body["TotalCampaigns"] == len(ALL_BUT_CHILD)
    for row in body["Campaigns"]:
        assert {key: row[key] for key in STATISTICS_KEYS} == dict.fromkeys(STATISTICS_KEYS, 0)
    body = await api.call("campaigns.get", world.user.api_key, RetrieveStatistics=False)
    assert all(not STATISTICS_KEYS & set(row) for row in body["Campaigns"])


async def test_split_ab_test_statistics_are_a_list_per_campaign(api: Api, world: World) -> None:
    body = await api.call("campaigns.get", world.user.api_key, SplitABTestStatistics=True)
    assert all(row["SplitABTestStatistics"] == [] for row in body["Campaigns"])


async def test_include_total_recipients_adds_the_sums_only_when_asked(api: Api, world: World) -> None:
    body = await api.call("campaigns.get", world.user.api_key, IncludeTotalRecipients=True, RecordsPerRequest=1)
    assert set(body) == SEED_LIST_KEYS | {"TotalRecipients", "TotalSent", "TotalFailed", "TotalDeferred"}
    assert (body["TotalRecipients"], body["TotalSent"], body["TotalFailed"], body["TotalDeferred"]) == (0, 0, 0, 0)
    body = await api.call("campaigns.get", world.user.api_key)
    assert set(body) == SEED_LIST_KEYS


async def test_auto_resend_children_are_listed_only_when_asked(api: Api, world: World) -> None:
    assert world.ids["auto-resend"] not in await listed(api, world.user)
    assert world.ids["auto-resend"] in await listed(api, world.user, Include_AutoResend=True)


async def test_exclude_columns_drops_columns_but_never_the_id(api: Api, world: World) -> None:
    for exclude in (
        ["CampaignName", "sendtime", "NoSuchColumn", "CampaignID"],
        "CampaignName,SendTime,CampaignID",
    ):
        body = await api.call(
            "campaigns.get", world.user.api_key, ExcludeColumns=exclude, RetrieveStatistics=False
        )
        for row in body["Campaigns"]:
            assert "CampaignName" not in row and "SendTime" not in row
            assert "CampaignID" in row and "CampaignStatus" in row


async def test_total_campaigns_counts_every_match_not_the_page(api: Api, world: World) -> None:
    body = await api.call(
        "campaigns.get", world.user.api_key, RecordsPerRequest=2, RecordsFrom=1, OrderType="DESC"
    )
    assert body["TotalCampaigns"] == len(ALL_BUT_CHILD)
    assert [c["CampaignID"] for c in body["Campaigns"]] == ids_of(world, *ALL_BUT_CHILD)[::-1][1:3]
    body = await api.call("campaigns.get", world.user.api_key, RecordsPerRequest=0)
    assert len(body["Campaigns"]) == len(ALL_BUT_CHILD)


async def test_ordering_by_whitelisted_fields_only(api: Api, world: World, make_user: Any) -> None:
    body = await api.call("campaigns.get", world.user.api_key, OrderField="CampaignName", RetrieveStatistics=False)
    names = [c["CampaignName"] for c in body["Campaigns"]]
    assert names == sorted(names, key=str.lower)
    body = await api.call("campaigns.get", world.user.api_key, OrderField="1; DROP TABLE campaign.campaigns")
    assert [c["CampaignID"] for c in body["Campaigns"]] == ids_of(world, *ALL_BUT_CHILD)
    user = await make_user()
    email_id = (await api.call("email.create", user.api_key))["EmailID"]
    days = [SEND_DAY + timedelta(days=offset) for offset in (2, 0, 1)]
    for day in days:
        await create(
            api,
            user,
            f"on {day}",
            RelEmailID=email_id,
            ScheduleType="Future",
            SendDate=day.isoformat(),
            SendTime="10:00",
        )
    for order, newest_first in (("ASC", False), ("DESC", True)):
        body = await api.call("campaigns.get", user.api_key, OrderField="SendDate", OrderType=order)
        assert [c["SendDate"] for c in body["Campaigns"]] == sorted(
            (d.isoformat() for d in days), reverse=newest_first
        )


@pytest.mark.parametrize(
    "params",
    [
        {"CampaignStatus": "Bogus"},
        {"ScheduleType": "Weekly"},
        {"ScheduleType": ["Future", "Sometimes"]},
        {"Date_From": "2025-13-01"},
        {"Date_To": "yesterday"},
        {"Tags": "a,b"},
        {"CampaignIDs": "1,x"},
        {"RecordsPerRequest": "many"},
        {"RecordsFrom": -1},
        {"FilterByUserID": "me"},
    ],
    ids=lambda params: next(iter(params)),
)
async def test_malformed_parameters_answer_a_list(api: Api, world: World, params: dict[str, Any]) -> None:
    body = await api.call("campaigns.get", world.user.api_key, **params)
    assert body["Success"] is False and body["ErrorCode"] == [1], body
    assert isinstance(body["ErrorText"], list)


async def test_filter_by_user_id_is_for_admins(api: Api, world: World) -> None:
    both = [*ids_of(world, "draft"), world.other_campaign]
    body = await api.call("campaigns.get", world.admin.api_key, CampaignIDs=both)
    assert sorted(c["CampaignID"] for c in body["Campaigns"]) == sorted(both)
    body = await api.call(
        "campaigns.get", world.admin.api_key, CampaignIDs=both, FilterByUserID=world.other.user_id
    )
    assert [c["CampaignID"] for c in body["Campaigns"]] == [world.other_campaign]
    body = await api.call("campaigns.get", world.admin.api_key, FilterByUserID=world.user.user_id)
    assert body["TotalCampaigns"] == len(ALL_BUT_CHILD)
    # A user may name only themself.
    assert await listed(api, world.user, FilterByUserID=world.user.user_id) == ids_of(world, *ALL_BUT_CHILD)
    body = await api.call("campaigns.get", world.user.api_key, FilterByUserID=world.other.user_id)
    assert body["Success"] is False and body["ErrorCode"] == [1], body


async def test_another_users_campaigns_never_show(api: Api, world: World) -> None:
    assert world.other_campaign not in await listed(api, world.user, CampaignStatus="All", Include_AutoResend=True)
    assert await listed(api, world.other, CampaignIDs=ids_of(world, *ALL_BUT_CHILD)) == []
    assert await listed(api, world.other, Tags=str(world.tag_id)) == []
    assert await listed(api, world.other, Include_AutoResend=True) == [world.other_campaign]


# campaign.get --------------------------------------------------------------------------------------------


async def test_campaign_get_with_every_option(api: Api, world: World) -> None:
    body = await api.call(
        "campaign.get",
        world.user.api_key,
        CampaignID=world.ids["paused"],
        RetrieveStatistics=True,
        RetrieveTags=True,
        SplitABTestStatistics=True,
        RetrieveRecipientDomains=True,
    )
    assert set(body) == {"Success", "ErrorCode", "Campaign", "CampaignThroughput"}
    campaign = body["Campaign"]
    assert {key: campaign[key] for key in STATISTICS_KEYS} == dict.fromkeys(STATISTICS_KEYS, 0)
    assert [tag["TagID"] for tag in campaign["Tags"]] == [world.tag_id]
    assert campaign["SplitABTestStatistics"] == [] and campaign["RecipientDomains"] == []
    assert body["CampaignThroughput"] == {"EmailsPerSecond": 0, "Duration": 0}
    assert (campaign["SendDate"], campaign["SendTime"], campaign["SendTimeZone"]) == (
        SEND_DAY.isoformat(),
        "12:00:00",
        "UTC",
    )


async def test_campaign_get_returns_only_what_was_asked(api: Api, world: World) -> None:
    body = await api.call("campaign.get", world.user.api_key, CampaignID=world.ids["paused"])
    campaign = body["Campaign"]
    assert not STATISTICS_KEYS & set(campaign)
    assert (
        "Tags" not in campaign and "SplitABTestStatistics" not in campaign and "RecipientDomains" not in campaign
    )
    body = await api.call(
        "campaign.get",
        world.user.api_key,
        CampaignID=world.ids["paused"],
        RetrieveStatistics=True,
        RetrieveRecipientDomains=False,
    )
    assert "RecipientDomains" not in body["Campaign"] and "TotalSent" in body["Campaign"]


async def test_campaign_get_shows_a_recursive_schedule(api: Api, world: World) -> None:
    campaign = (await api.call("campaign.get", world.user.api_key, CampaignID=world.ids["recursive ready"]))[
        "Campaign"
    ]
    assert campaign["ScheduleType"] == "Recursive"
    assert (campaign["ScheduleRecDaysOfWeek"], campaign["ScheduleRecHours"], campaign["ScheduleRecMinutes"]) == (
        "1",
        "6",
        "0",
    )
    assert campaign["ScheduleRecMonths"] == ",".join(map(str, range(1, 13)))
    assert campaign["ScheduleRecSendMaxInstance"] == 2 and campaign["SendTimeZone"] == "UTC"


async def test_an_admin_key_may_get_any_campaign_in_full(api: Api, world: World) -> None:
    body = await api.call("campaign.get", world.admin.api_key, CampaignID=world.ids["draft"], RetrieveTags=True)
    assert body["Success"] is True and [t["TagID"] for t in body["Campaign"]["Tags"]] == [world.tag_id]


# campaign.copy --------------------------------------------------------------------------------------------


async def test_campaign_copy_copies_every_setting_into_a_draft(api: Api, world: World) -> None:
    first, second, third = [
        (await api.call("list.create", world.user.api_key, SubscriberListName=name))["ListID"]
        for name in ("one", "two", "three")
    ]
    first_segment, third_segment = [
        (
            await api.call(
                "segment.create",
                world.user.api_key,
                SubscriberListID=list_id,
                SegmentName="all",
                SegmentOperator="and",
            )
        )["SegmentID"]
        for list_id in (first, third)
    ]
    rules = {"operator": "or", "criteria": [{"list_id": first, "operator": "and", "rules": []}]}
    source = await create(
        api,
        world.user,
        "Copy source",
        RelEmailID=world.emails[0],
        ScheduleType="Future",
        SendDate=SEND_DAY.isoformat(),
        SendTime="08:15:00",
        SendTimeZone="Asia/Tokyo",
        RecipientListsAndSegments=f"{first}:{first_segment},{second}",
        Exclude_RecipientListsAndSegments=f"{third}:{third_segment}",
        RulesJsonBundle=json.dumps(rules),
        AutoResendEnabled=True,
        AutoResendWaitDays=4,
        AutoResendSubject="again",
        AutoResendPreHeaderText="pre",
        PublishOnRSS="Enabled",
        ApprovalUserExplanation="why",
        ABTesting={
            "Variations": [{"EmailID": world.emails[1], "Weight": 3}, {"EmailID": world.emails[2], "Weight": 7}]
        },
        CampaignStatus="Ready",
    )
    body = await api.call("campaign.copy", world.user.api_key, CampaignID=source)
    assert set(body) == {"Success", "ErrorCode", "NewCampaignID"} and body["Success"] is True
    original = (await api.call("campaign.get", world.user.api_key, CampaignID=source))["Campaign"]
    copy = (await api.call("campaign.get", world.user.api_key, CampaignID=body["NewCampaignID"]))["Campaign"]
    assert copy["CampaignStatus"] == "Draft" and copy["CampaignName"] == "Copy source (Copy)"
    same = [
        "ScheduleType",
        "SendDate",
        "SendTime",
        "SendTimeZone",
        "RecipientListsAndSegments",
        "Exclude_RecipientListsAndSegments",
        "RulesJsonBundle",
        "AutoResendEnabled",
        "AutoResendWaitDays",
        "AutoResendSubject",
        "AutoResendPreHeaderText",
        "GoogleAnalyticsDomains",
        "PublishOnRSS",
        "S2SEnabled",
    ]
    assert {key: copy[key] for key in same} == {key: original[key] for key in same}
    assert copy["RelEmailID"] != 0
    assert [v["Weight"] for v in copy["ABTesting"]["Variations"]] == [3, 7]
    # The variation emails are duplicated: the copy's can change without touching the original's.
    copied_emails = [v["EmailID"] for v in copy["ABTesting"]["Variations"]]
    assert not set(copied_emails) & {world.emails[1], world.emails[2]}
    for email_id in copied_emails:
        assert (await api.call("email.get", world.user.api_key, EmailID=email_id))["Success"] is True
    stats = await api.call(
        "campaign.get", world.user.api_key, CampaignID=body["NewCampaignID"], RetrieveStatistics=True
    )
    assert stats["Campaign"]["TotalSent"] == 0 and stats["Campaign"]["SendStartDateTime"] == ""
