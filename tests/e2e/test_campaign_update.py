"""campaign.update and splittest.create end to end: every parameter stored and returned, every error code provoked."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.grpcutil import decode_error
from tests.conftest import Api, System, User, grpc_metadata
from translator.identity import IdentityStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

NEXT_YEAR = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
UNKNOWN_ID = 987654321


@dataclass
class World:
    """Two users; the first with six emails, four lists and a segment of the first list, the second with one
    campaign, one email and one list (with a segment) of its own."""

    user: User
    other: User
    emails: list[int]
    other_email: int
    other_campaign: int
    lists: list[int]
    segment: int
    other_list: int
    other_segment: int


async def new_user(identity: IdentityStore) -> User:
    name = f"user-{uuid.uuid4().hex[:12]}"
    created = await identity.create_user(name, "secret-password", permissions=["*"])
    return User(created["UserID"], created["APIKey"], name)


async def create_campaign(api: Api, user: User, name: str = "Summer Sale 2025") -> int:
    body = await api.call("campaign.create", user.api_key, CampaignName=name)
    assert body["Success"] is True, body
    campaign_id: int = body["CampaignID"]
    return campaign_id


async def create_email(api: Api, user: User) -> int:
    body = await api.call("email.create", user.api_key)
    assert body["Success"] is True, body
    email_id: int = body["EmailID"]
    return email_id


async def get(api: Api, user: User, campaign_id: int, **params: Any) -> dict[str, Any]:
    body = await api.call("campaign.get", user.api_key, CampaignID=campaign_id, **params)
    assert body["Success"] is True, body
    campaign: dict[str, Any] = body["Campaign"]
    return campaign


async def create_list(api: Api, user: User) -> int:
    body = await api.call("list.create", user.api_key, SubscriberListName="Readers")
    assert body["Success"] is True, body
    list_id: int = body["ListID"]
    return list_id


async def create_segment(api: Api, user: User, list_id: int) -> int:
    rules = [[{"type": "fields", "field_id": "EmailAddress", "operator": "contains", "value": "@"}]]
    body = await api.call(
        "segment.create",
        user.api_key,
        SubscriberListID=list_id,
        SegmentName="Everyone",
        SegmentOperator="and",
        RulesJson=json.dumps(rules),
    )
    assert body["Success"] is True, body
    segment_id: int = body["SegmentID"]
    return segment_id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(api: Api, identity: IdentityStore) -> AsyncIterator[World]:
    user, other = await new_user(identity), await new_user(identity)
    emails = [await create_email(api, user) for _ in range(6)]
    lists = [await create_list(api, user) for _ in range(4)]
    other_list = await create_list(api, other)
    yield World(
        user,
        other,
        emails,
        await create_email(api, other),
        await create_campaign(api, other),
        lists,
        await create_segment(api, user, lists[0]),
        other_list,
        await create_segment(api, other, other_list),
    )


async def update(api: Api, user: User, campaign_id: int, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = await api.call("campaign.update", user.api_key, CampaignID=campaign_id, **params)
    return body


# The seed's example -----------------------------------------------------------------------------


async def test_the_seed_example_with_a_future_date_succeeds_and_round_trips(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    body = await update(
        api,
        world.user,
        campaign_id,
        CampaignName="Updated Summer Sale",
        RelEmailID=world.emails[0],
        CampaignStatus="Ready",
        ScheduleType="Future",
        SendDate=NEXT_YEAR,
        SendTime="10:00:00",
        SendTimeZone="America/New_York",
    )
    assert body == {"Success": True, "ErrorCode": 0}
    campaign = await get(api, world.user, campaign_id)
    assert campaign["CampaignName"] == "Updated Summer Sale"
    assert campaign["CampaignStatus"] == "Ready"
    assert campaign["ScheduleType"] == "Future"
    assert (campaign["SendDate"], campaign["SendTime"], campaign["SendTimeZone"]) == (
        NEXT_YEAR,
        "10:00:00",
        "America/New_York",
    )


async def test_the_seed_example_verbatim_answers_6_as_its_date_lies_in_the_past(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    # With content, so that Ready's own requirement (code 4, an email) is met and the date decides.
    assert (await update(api, world.user, campaign_id, RelEmailID=world.emails[0]))["Success"] is True
    body = await update(
        api,
        world.user,
        campaign_id,
        CampaignName="Updated Summer Sale",
        CampaignStatus="Ready",
        ScheduleType="Future",
        SendDate="2025-06-15",
        SendTime="10:00:00",
        SendTimeZone="America/New_York",
    )
    assert body["Success"] is False and body["ErrorCode"] == 6, body
    assert "past" in body["ErrorText"].lower()
    campaign = await get(api, world.user, campaign_id)
    assert campaign["CampaignName"] == "Summer Sale 2025"  # nothing was applied


# Every parameter, stored and returned ------------------------------------------------------------


async def test_every_parameter_is_stored_and_returned(api: Api, world: World) -> None:
    original = await create_campaign(api, world.user, "Original")
    campaign_id = await create_campaign(api, world.user)
    first, second, third, _ = world.lists
    rules = {
        "operator": "and",
        "criteria": [
            {
                "list_id": first,
                "operator": "and",
                "rules": [[{"type": "segments", "operator": "belongs to", "value": world.segment}]],
            }
        ],
    }
    body = await update(
        api,
        world.user,
        campaign_id,
        CampaignName="Everything",
        CampaignStatusReason="because",
        RelEmailID=world.emails[0],
        ScheduleType="recursive",
        ScheduleRecDaysOfWeek="1,3",
        ScheduleRecMonths="*",
        ScheduleRecHours="9",
        ScheduleRecMinutes=[0, 30],
        ScheduleRecSendMaxInstance=5,
        SendTimeZone="Europe/Paris",
        ApprovalUserExplanation="please",
        GoogleAnalyticsDomains="",
        PublishOnRSS="Enabled",
        AutoResendEnabled=True,
        AutoResendWaitDays=3,
        AutoResendSubject="Did you miss it?",
        AutoResendPreHeaderText="Last chance",
        OriginalCampaignID=original,
        RecipientListsAndSegments=f"{second},{first}:{world.segment}",
        Exclude_RecipientListsAndSegments=f"{third}:0",
        RulesJsonBundle=json.dumps(rules),
        S2SEnabled="no",
        ABTesting={
            "Variations": [
                {"EmailID": world.emails[1], "Weight": 60},
                {"emailid": world.emails[2], "weight": "40"},
            ]
        },
    )
    assert body == {"Success": True, "ErrorCode": 0}
    campaign = await get(api, world.user, campaign_id)
    expected = {
        "CampaignName": "Everything",
        "CampaignStatusReason": "because",
        "RelEmailID": world.emails[0],
        "ScheduleType": "Recursive",
        "ScheduleRecDaysOfWeek": "1,3",
        "ScheduleRecDaysOfMonth": "",
        "ScheduleRecMonths": ",".join(str(m) for m in range(1, 13)),
        "ScheduleRecHours": "9",
        "ScheduleRecMinutes": "0,30",
        "ScheduleRecSendMaxInstance": 5,
        "SendTimeZone": "Europe/Paris",
        "ApprovalUserExplanation": "please",
        "GoogleAnalyticsDomains": "",
        "PublishOnRSS": "Enabled",
        "AutoResendEnabled": True,
        "AutoResendWaitDays": 3,
        "AutoResendSubject": "Did you miss it?",
        "AutoResendPreHeaderText": "Last chance",
        "OriginalCampaignID": original,
        "RecipientListsAndSegments": f"{second}:0,{first}:{world.segment}",
        "Exclude_RecipientListsAndSegments": f"{third}:0",
        "S2SEnabled": False,
        "ABTesting": {
            "Enabled": True,
            "Variations": [
                {"EmailID": world.emails[1], "Weight": 60},
                {"EmailID": world.emails[2], "Weight": 40},
            ],
        },
    }
    assert {key: campaign[key] for key in expected} == expected
    assert json.loads(campaign["RulesJsonBundle"]) == rules


async def test_settings_herald_does_not_implement_are_refused(api: Api, world: World) -> None:
    """Issue 14: GoogleAnalyticsDomains and S2SEnabled promise behaviour Herald does not have, so a value other
    than the default answers 26 with a text that says so, and nothing is changed."""
    campaign_id = await create_campaign(api, world.user)
    for name, value in (("GoogleAnalyticsDomains", "example.com"), ("S2SEnabled", True), ("S2SEnabled", "yes")):
        body = await update(api, world.user, campaign_id, CampaignName="Changed", **{name: value})
        assert (body["Success"], body["ErrorCode"]) == (False, 26), body
        assert "not supported" in body["ErrorText"], body
    campaign = await get(api, world.user, campaign_id)
    assert (campaign["CampaignName"], campaign["GoogleAnalyticsDomains"], campaign["S2SEnabled"]) == (
        "Summer Sale 2025",
        "",
        False,
    )


async def test_parameters_not_given_keep_their_values(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    await update(
        api,
        world.user,
        campaign_id,
        AutoResendEnabled=True,
        AutoResendWaitDays=2,
        AutoResendSubject="s",
        AutoResendPreHeaderText="p",
        RecipientListsAndSegments=f"{world.lists[0]}:{world.segment}",
        Exclude_RecipientListsAndSegments=str(world.lists[2]),
    )
    body = await update(
        api,
        world.user,
        campaign_id,
        AutoResendSubject="new subject",
        RecipientListsAndSegments=str(world.lists[3]),
    )
    assert body["Success"] is True, body
    campaign = await get(api, world.user, campaign_id)
    assert (campaign["AutoResendEnabled"], campaign["AutoResendWaitDays"], campaign["AutoResendSubject"]) == (
        True,
        2,
        "new subject",
    )
    assert campaign["AutoResendPreHeaderText"] == "p"
    assert (campaign["RecipientListsAndSegments"], campaign["Exclude_RecipientListsAndSegments"]) == (
        f"{world.lists[3]}:0",
        f"{world.lists[2]}:0",
    )
    assert campaign["CampaignName"] == "Summer Sale 2025"


async def test_ab_testing_disabled_or_empty_clears_the_variations(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    variations = [{"EmailID": world.emails[0], "Weight": 1}, {"EmailID": world.emails[1], "Weight": 1}]
    for clearing in ({"Enabled": False, "Variations": variations}, {}):
        assert (await update(api, world.user, campaign_id, ABTesting={"Variations": variations}))["Success"]
        assert len((await get(api, world.user, campaign_id))["ABTesting"]["Variations"]) == 2
        assert (await update(api, world.user, campaign_id, ABTesting=clearing))["Success"]
        assert (await get(api, world.user, campaign_id))["ABTesting"] == {"Enabled": False, "Variations": []}


async def test_ab_testing_in_form_fields_with_brackets(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    status, body = await api.form(
        [
            ("Command", "campaign.update"),
            ("APIKey", world.user.api_key),
            ("CampaignID", str(campaign_id)),
            ("ABTesting[Variations][0][emailid]", str(world.emails[0])),
            ("ABTesting[Variations][0][weight]", "50"),
            ("ABTesting[Variations][1][emailid]", str(world.emails[1])),
            ("ABTesting[Variations][1][weight]", "50"),
            ("PublishOnRSS", "Disabled"),
            ("S2SEnabled", "0"),
        ]
    )
    assert status == 200 and body == {"Success": True, "ErrorCode": 0}, body
    campaign = await get(api, world.user, campaign_id)
    assert [v["EmailID"] for v in campaign["ABTesting"]["Variations"]] == world.emails[:2]
    assert campaign["PublishOnRSS"] == "Disabled" and campaign["S2SEnabled"] is False


async def test_schedule_types_round_trip_case_insensitively(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    for asked, shown in (
        ("immediate", "Immediate"),
        ("NOT SCHEDULED", "Not Scheduled"),
        ("Not_Scheduled", "Not Scheduled"),
    ):
        assert (await update(api, world.user, campaign_id, ScheduleType=asked))["Success"] is True
        campaign = await get(api, world.user, campaign_id)
        assert campaign["ScheduleType"] == shown and campaign["SendDate"] == ""
    # HH:MM is accepted; UTC is the default zone.
    body = await update(api, world.user, campaign_id, ScheduleType="Future", SendDate=NEXT_YEAR, SendTime="07:30")
    assert body["Success"] is True, body
    campaign = await get(api, world.user, campaign_id)
    assert (campaign["SendDate"], campaign["SendTime"], campaign["SendTimeZone"]) == (NEXT_YEAR, "07:30:00", "UTC")


async def test_an_update_naming_only_the_campaign_changes_nothing(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    before = await get(api, world.user, campaign_id)
    assert await update(api, world.user, campaign_id) == {"Success": True, "ErrorCode": 0}
    assert await get(api, world.user, campaign_id) == before


# Every error code -----------------------------------------------------------------------------------


def two(world: World, *weights: Any) -> dict[str, Any]:
    return {"Variations": [{"EmailID": world.emails[i], "Weight": w} for i, w in enumerate(weights)]}


FUTURE = {"ScheduleType": "Future", "SendDate": NEXT_YEAR, "SendTime": "10:00:00"}
RECURSIVE = {
    "ScheduleType": "Recursive",
    "ScheduleRecDaysOfMonth": "1,15",
    "ScheduleRecMonths": "*",
    "ScheduleRecHours": "8",
    "ScheduleRecMinutes": "0",
    "ScheduleRecSendMaxInstance": 3,
}
AUTO_RESEND = {
    "AutoResendEnabled": True,
    "AutoResendWaitDays": 2,
    "AutoResendSubject": "again",
    "AutoResendPreHeaderText": "pre",
}


def without(params: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key not in names}


# (code, parameters or a function of the world giving them); CampaignID is the user's fresh campaign
# unless the parameters name one.
ERROR_CASES: list[tuple[str, int, Any]] = [
    ("no CampaignID", 1, {"CampaignID": None}),
    ("CampaignID not a number", 1, {"CampaignID": "abc"}),
    ("CampaignID zero", 1, {"CampaignID": 0}),
    ("unknown campaign", 2, {"CampaignID": UNKNOWN_ID, "CampaignName": "x"}),
    ("another user's campaign", 2, lambda w: {"CampaignID": w.other_campaign, "CampaignName": "x"}),
    ("unknown original campaign", 2, {"OriginalCampaignID": UNKNOWN_ID}),
    ("another user's original campaign", 2, lambda w: {"OriginalCampaignID": w.other_campaign}),
    ("unknown status", 3, {"CampaignStatus": "Bogus"}),
    ("status Sending", 3, {"CampaignStatus": "Sending"}),
    ("status Sent", 3, {"CampaignStatus": "Sent"}),
    ("status Failed", 3, {"CampaignStatus": "Failed"}),
    ("status Cancelled", 3, {"CampaignStatus": "Cancelled"}),
    ("unknown email", 4, {"RelEmailID": UNKNOWN_ID}),
    ("another user's email", 4, lambda w: {"RelEmailID": w.other_email}),
    ("email not a number", 4, {"RelEmailID": "abc"}),
    ("unknown schedule type", 5, {"ScheduleType": "Weekly"}),
    ("unknown time zone", 5, FUTURE | {"SendTimeZone": "Mars/Olympus"}),
    ("unknown recursive time zone", 5, RECURSIVE | {"SendTimeZone": "Not/AZone"}),
    ("Future without SendDate", 6, without(FUTURE, "SendDate")),
    ("Future without SendDate nor SendTime", 6, without(FUTURE, "SendDate", "SendTime")),
    ("malformed SendDate", 6, FUTURE | {"SendDate": "2027-13-45"}),
    ("SendDate in the past", 6, FUTURE | {"SendDate": "2020-01-01"}),
    ("Future without SendTime", 7, without(FUTURE, "SendTime")),
    ("malformed SendTime", 7, FUTURE | {"SendTime": "25:00:00"}),
    ("Recursive without days", 8, without(RECURSIVE, "ScheduleRecDaysOfMonth")),
    ("day of week out of range", 8, without(RECURSIVE, "ScheduleRecDaysOfMonth") | {"ScheduleRecDaysOfWeek": "7"}),
    ("day of month out of range", 8, RECURSIVE | {"ScheduleRecDaysOfMonth": "32"}),
    ("malformed days", 8, RECURSIVE | {"ScheduleRecDaysOfMonth": "first"}),
    ("Recursive without months", 9, without(RECURSIVE, "ScheduleRecMonths")),
    ("month out of range", 9, RECURSIVE | {"ScheduleRecMonths": "0,13"}),
    ("Recursive without hours", 10, without(RECURSIVE, "ScheduleRecHours")),
    ("hour out of range", 10, RECURSIVE | {"ScheduleRecHours": "24"}),
    ("Recursive without minutes", 11, without(RECURSIVE, "ScheduleRecMinutes")),
    ("minute out of range", 11, RECURSIVE | {"ScheduleRecMinutes": "60"}),
    ("Recursive without max instances", 12, without(RECURSIVE, "ScheduleRecSendMaxInstance")),
    ("malformed max instances", 12, RECURSIVE | {"ScheduleRecSendMaxInstance": "many"}),
    ("auto-resend without wait days", 14, without(AUTO_RESEND, "AutoResendWaitDays")),
    ("auto-resend wait days not a number", 14, AUTO_RESEND | {"AutoResendWaitDays": "soon"}),
    ("auto-resend wait days zero", 14, AUTO_RESEND | {"AutoResendWaitDays": 0}),
    ("auto-resend without subject", 15, without(AUTO_RESEND, "AutoResendSubject")),
    ("auto-resend without preheader", 16, without(AUTO_RESEND, "AutoResendPreHeaderText")),
    ("ABTesting not an object", 17, {"ABTesting": "yes please"}),
    ("ABTesting a list", 17, {"ABTesting": [1, 2]}),
    ("Variations not a list", 18, {"ABTesting": {"Variations": "two"}}),
    ("a variation not an object", 18, {"ABTesting": {"Variations": [5, 6]}}),
    ("enabled without variations", 18, {"ABTesting": {"Enabled": True}}),
    (
        "another user's variation email",
        19,
        lambda w: {
            "ABTesting": {
                "Variations": [{"EmailID": w.emails[0], "Weight": 1}, {"EmailID": w.other_email, "Weight": 1}]
            }
        },
    ),
    ("one variation", 21, lambda w: {"ABTesting": two(w, 1)}),
    ("six variations", 22, lambda w: {"ABTesting": two(w, 1, 1, 1, 1, 1, 1)}),
    (
        "a variation without Weight",
        23,
        lambda w: {"ABTesting": {"Variations": [{"EmailID": w.emails[0]}, {"EmailID": w.emails[1], "Weight": 1}]}},
    ),
    ("a variation without EmailID", 23, {"ABTesting": {"Variations": [{"Weight": 1}, {"Weight": 1}]}}),
    ("a Weight not a number", 24, lambda w: {"ABTesting": two(w, "heavy", 1)}),
    ("a fractional Weight", 24, lambda w: {"ABTesting": two(w, 1.5, 1)}),
    (
        "an EmailID not a number",
        24,
        {"ABTesting": {"Variations": [{"EmailID": "x", "Weight": 1}, {"EmailID": "y", "Weight": 1}]}},
    ),
    ("a share below 1%", 25, lambda w: {"ABTesting": two(w, 1, 1000)}),
    ("blank name", 26, {"CampaignName": "  "}),
    ("empty name", 26, {"CampaignName": ""}),
    ("name too long", 26, {"CampaignName": "x" * 300}),
    ("name not a string", 26, {"CampaignName": ["x"]}),
    ("malformed recipients", 26, {"RecipientListsAndSegments": "a:b"}),
    ("malformed exclusions", 26, {"Exclude_RecipientListsAndSegments": "1:2:3"}),
    ("RulesJsonBundle not JSON", 26, {"RulesJsonBundle": "{bad"}),
    ("RulesJsonBundle not an object", 26, {"RulesJsonBundle": "[1, 2]"}),
]


@pytest.mark.parametrize(
    ("code", "params"),
    [(code, params) for _, code, params in ERROR_CASES],
    ids=[name for name, _, _ in ERROR_CASES],
)
async def test_campaign_update_error_code(api: Api, world: World, code: int, params: Any) -> None:
    params = params(world) if callable(params) else dict(params)
    if "CampaignID" not in params:
        params["CampaignID"] = await create_campaign(api, world.user)
    body = await api.call(
        "campaign.update", world.user.api_key, **{k: v for k, v in params.items() if v is not None}
    )
    assert body["Success"] is False and body["ErrorCode"] == code, body
    assert isinstance(body["ErrorText"], str) and body["ErrorText"]
    assert set(body) == {"Success", "ErrorCode", "ErrorText"}


@pytest.mark.parametrize("schedule", [FUTURE, RECURSIVE], ids=["Future", "Recursive"])
async def test_an_unknown_time_zone_answers_5_saying_the_zone_is_the_problem(
    api: Api, world: World, schedule: dict[str, Any]
) -> None:
    campaign_id = await create_campaign(api, world.user)
    body = await update(api, world.user, campaign_id, **schedule, SendTimeZone="Mars/Olympus")
    assert (body["Success"], body["ErrorCode"]) == (False, 5)
    assert "SendTimeZone" in body["ErrorText"] and "time zone" in body["ErrorText"], body


# RULINGS 15: lists and segments are checked when they are set ----------------------------------------

SOURCE_NOT_FOUND = "Recipient list or segment not found or doesn't belong to user"


def bundle_of(list_id: int, *rules: dict[str, Any]) -> str:
    return json.dumps(
        {"operator": "and", "criteria": [{"list_id": list_id, "operator": "and", "rules": [list(rules)]}]}
    )


FOREIGN_SOURCES: list[tuple[str, Any]] = [
    ("another user's list", lambda w: {"RecipientListsAndSegments": str(w.other_list)}),
    (
        "another user's list beside an own one",
        lambda w: {"RecipientListsAndSegments": f"{w.lists[1]},{w.other_list}:0"},
    ),
    ("an unknown list", {"RecipientListsAndSegments": str(UNKNOWN_ID)}),
    ("another user's list excluded", lambda w: {"Exclude_RecipientListsAndSegments": str(w.other_list)}),
    ("another user's segment", lambda w: {"RecipientListsAndSegments": f"{w.other_list}:{w.other_segment}"}),
    ("another list's segment", lambda w: {"RecipientListsAndSegments": f"{w.lists[1]}:{w.segment}"}),
    ("an unknown segment", lambda w: {"RecipientListsAndSegments": f"{w.lists[0]}:{UNKNOWN_ID}"}),
    ("another user's list in the bundle", lambda w: {"RulesJsonBundle": bundle_of(w.other_list)}),
    (
        "another user's segment in a bundle rule",
        lambda w: {
            "RulesJsonBundle": bundle_of(
                w.lists[0], {"type": "segments", "operator": "belongs to", "value": w.other_segment}
            )
        },
    ),
]


@pytest.mark.parametrize("params", [p for _, p in FOREIGN_SOURCES], ids=[n for n, _ in FOREIGN_SOURCES])
async def test_lists_and_segments_not_the_users_are_refused_when_set(api: Api, world: World, params: Any) -> None:
    campaign_id = await create_campaign(api, world.user)
    before = {"RecipientListsAndSegments": str(world.lists[0]), "Exclude_RecipientListsAndSegments": ""}
    assert (await update(api, world.user, campaign_id, RecipientListsAndSegments=str(world.lists[0])))["Success"]
    params = params(world) if callable(params) else params
    body = await update(api, world.user, campaign_id, CampaignName="Changed", **params)
    assert body == {"Success": False, "ErrorCode": 26, "ErrorText": SOURCE_NOT_FOUND}
    campaign = await get(api, world.user, campaign_id)
    assert campaign["CampaignName"] == "Summer Sale 2025"  # nothing was changed
    assert campaign["RecipientListsAndSegments"] == f"{before['RecipientListsAndSegments']}:0"
    assert campaign["RulesJsonBundle"] in ("", None)


async def test_rules_the_audience_cannot_read_are_refused_when_set(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    bundle = bundle_of(world.lists[0], {"type": "fields", "field_id": "EmailAddress", "operator": "sounds like"})
    body = await update(api, world.user, campaign_id, RulesJsonBundle=bundle)
    assert (body["Success"], body["ErrorCode"]) == (False, 26)
    assert "sounds like" in body["ErrorText"]


async def test_an_admin_setting_a_users_lists_is_held_to_that_users_lists(
    api: Api, world: World, system: System
) -> None:
    campaign_id = await create_campaign(api, world.user)
    request = campaign_pb2.UpdateCampaignRequest(
        campaign=campaign_pb2.Campaign(
            campaign_id=campaign_id,
            targeting=campaign_pb2.Targeting(included=[campaign_pb2.RecipientSource(list_id=world.other_list)]),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["targeting"]),
    )
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        admin = grpc_metadata(system, 0, is_admin=True)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.UpdateCampaign(request, metadata=admin)
        failure = decode_error(refused.value)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.field_reasons() == [("targeting.included[0].list_id", "LIST_NOT_FOUND")]
        # The owner's own list passes.
        request.campaign.targeting.included[0].list_id = world.lists[0]
        updated = await stub.UpdateCampaign(request, metadata=admin)
        assert [s.list_id for s in updated.targeting.included] == [world.lists[0]]


async def test_update_masks_follow_aip_134_in_either_spelling(api: Api, world: World, system: System) -> None:
    campaign_id = await create_campaign(api, world.user)
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        mine = grpc_metadata(system, world.user.user_id)
        # No mask: every populated updatable field changes (campaign_id names the campaign; the output-only
        # schedule_type is ignored).
        omitted = await stub.UpdateCampaign(
            campaign_pb2.UpdateCampaignRequest(
                campaign=campaign_pb2.Campaign(
                    campaign_id=campaign_id,
                    name="renamed without a mask",
                    email_id=world.emails[0],
                    schedule_type=campaign_pb2.SCHEDULE_TYPE_FUTURE,
                )
            ),
            metadata=mine,
        )
        assert (omitted.name, omitted.email_id) == ("renamed without a mask", world.emails[0])
        assert omitted.schedule_type == campaign_pb2.SCHEDULE_TYPE_NOT_SCHEDULED
        # lowerCamelCase paths, as the proto3 JSON mapping writes them, name the same fields as snake_case.
        camel = await stub.UpdateCampaign(
            campaign_pb2.UpdateCampaignRequest(
                campaign=campaign_pb2.Campaign(
                    campaign_id=campaign_id, email_id=world.emails[1], approval_user_explanation="camel"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["emailId", "approvalUserExplanation"]),
            ),
            metadata=mine,
        )
        assert (camel.email_id, camel.approval_user_explanation) == (world.emails[1], "camel")
        # schedule_type and schedule.type are refused with the path that changes the schedule.
        for path in ("schedule_type", "scheduleType", "schedule.type"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.UpdateCampaign(
                    campaign_pb2.UpdateCampaignRequest(
                        campaign=campaign_pb2.Campaign(campaign_id=campaign_id),
                        update_mask=field_mask_pb2.FieldMask(paths=[path]),
                    ),
                    metadata=mine,
                )
            failure = decode_error(refused.value)
            assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPDATE_MASK_INVALID")
            assert "'schedule'" in failure.violations[0].description, failure


# RULINGS 2: an int command answers the first failing check in the seed's order.
ORDER_CASES: list[tuple[str, int, dict[str, Any]]] = [
    ("unknown campaign before a missing SendDate", 2, {"CampaignID": UNKNOWN_ID, **without(FUTURE, "SendDate")}),
    ("unknown campaign before a malformed schedule type", 2, {"CampaignID": UNKNOWN_ID, "ScheduleType": "x"}),
    ("bad status before a bad schedule", 3, {"CampaignStatus": "Sending", **without(FUTURE, "SendDate")}),
    ("unknown email before a missing SendTime", 4, {"RelEmailID": UNKNOWN_ID, **without(FUTURE, "SendTime")}),
    ("missing SendDate before missing SendTime", 6, without(FUTURE, "SendDate", "SendTime")),
    ("bad zone before a date in the past", 5, FUTURE | {"SendDate": "2020-01-01", "SendTimeZone": "Nowhere"}),
    ("missing months before a bad variation", 9, without(RECURSIVE, "ScheduleRecMonths") | {"ABTesting": "x"}),
]


@pytest.mark.parametrize(
    ("code", "params"), [(c, p) for _, c, p in ORDER_CASES], ids=[n for n, _, _ in ORDER_CASES]
)
async def test_campaign_update_answers_the_first_failing_check(
    api: Api, world: World, code: int, params: Any
) -> None:
    params = dict(params)
    if "CampaignID" not in params:
        params["CampaignID"] = await create_campaign(api, world.user)
    body = await api.call("campaign.update", world.user.api_key, **params)
    assert body["Success"] is False and body["ErrorCode"] == code, body


async def test_a_failed_update_changes_nothing(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    before = await get(api, world.user, campaign_id)
    body = await update(api, world.user, campaign_id, CampaignName="changed", RelEmailID=UNKNOWN_ID)
    assert body["ErrorCode"] == 4
    assert await get(api, world.user, campaign_id) == before


async def test_campaign_update_needs_the_update_permission(api: Api, make_user: Any) -> None:
    reader = await make_user(permissions=["Campaign.Create", "Campaign.Get"])
    campaign_id = await create_campaign(api, reader)
    body = await update(api, reader, campaign_id, CampaignName="x")
    assert body["ErrorCode"] == 99999


# splittest.create -----------------------------------------------------------------------------------


async def test_splittest_create_answers_the_seed_shape_and_is_stored(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    body = await api.call(
        "splittest.create",
        world.user.api_key,
        CampaignID=campaign_id,
        TestSize=20,
        TestDuration=24,
        Winner="highest_open_rate",
    )
    assert set(body) == {"Success", "ErrorCode", "SplitTestID"} and body["Success"] is True, body
    assert isinstance(body["SplitTestID"], int)
    split_test = (await get(api, world.user, campaign_id))["SplitTest"]
    assert split_test == {
        "SplitTestID": body["SplitTestID"],
        "TestSize": 20,
        "TestDuration": 24,
        "Winner": "highest_open_rate",
    }
    body = await api.call(
        "splittest.create",
        world.user.api_key,
        CampaignID=campaign_id,
        TestSize="30",
        TestDuration="2",
        Winner="Most Unique Clicks",
    )
    assert body["Success"] is True, body
    split_test = (await get(api, world.user, campaign_id))["SplitTest"]
    assert (split_test["TestSize"], split_test["TestDuration"], split_test["Winner"]) == (
        30,
        2,
        "most_unique_clicks",
    )


async def test_splittest_create_accepts_every_winner_spelling(api: Api, world: World) -> None:
    campaign_id = await create_campaign(api, world.user)
    for winner in (
        "highest_open_rate",
        "Highest Open Rate",
        "HIGHEST_OPEN_RATE",
        "most_unique_clicks",
        "Most Unique Clicks",
    ):
        body = await api.call(
            "splittest.create",
            world.user.api_key,
            CampaignID=campaign_id,
            TestSize=10,
            TestDuration=1,
            Winner=winner,
        )
        assert body["Success"] is True, (winner, body)


async def test_splittest_create_has_no_v1_alias(api: Api, world: World) -> None:
    status, body = await api.post({"APIKey": world.user.api_key}, path="/api/v1/splittest.create")
    assert status == 400 and body["ErrorCode"] == 100003


GOOD_SPLIT = {"TestSize": 20, "TestDuration": 24, "Winner": "highest_open_rate"}
SPLIT_CASES: list[tuple[str, list[int], dict[str, Any]]] = [
    ("no CampaignID", [1], GOOD_SPLIT),
    ("CampaignID not a number", [1], GOOD_SPLIT | {"CampaignID": "x"}),
    ("no TestSize", [2], without(GOOD_SPLIT, "TestSize")),
    ("TestSize not a number", [2], GOOD_SPLIT | {"TestSize": "big"}),
    ("TestSize 0", [2], GOOD_SPLIT | {"TestSize": 0}),
    ("TestSize 100", [2], GOOD_SPLIT | {"TestSize": 100}),
    ("no TestDuration", [4], without(GOOD_SPLIT, "TestDuration")),
    ("TestDuration not a number", [4], GOOD_SPLIT | {"TestDuration": "a day"}),
    ("TestDuration 0", [4], GOOD_SPLIT | {"TestDuration": 0}),
    ("no Winner", [5], without(GOOD_SPLIT, "Winner")),
    ("unknown Winner", [5], GOOD_SPLIT | {"Winner": "most_opens"}),
    ("unknown campaign", [6], GOOD_SPLIT | {"CampaignID": UNKNOWN_ID}),
    ("everything missing", [1, 2, 4, 5], {}),
    (
        "unknown campaign and bad values",
        [2, 4, 5, 6],
        {"CampaignID": UNKNOWN_ID, "TestSize": -1, "TestDuration": "x", "Winner": "?"},
    ),
]


@pytest.mark.parametrize(
    ("codes", "params"), [(c, p) for _, c, p in SPLIT_CASES], ids=[n for n, _, _ in SPLIT_CASES]
)
async def test_splittest_create_error_codes(
    api: Api, world: World, codes: list[int], params: dict[str, Any]
) -> None:
    params = dict(params)
    if "CampaignID" not in params and codes != [1] and 1 not in codes:
        params["CampaignID"] = await create_campaign(api, world.user)
    body = await api.call("splittest.create", world.user.api_key, **params)
    assert body["Success"] is False and body["ErrorCode"] == codes, body
    assert isinstance(body["ErrorText"], list) and len(body["ErrorText"]) == len(codes)


async def test_splittest_create_on_another_users_campaign_is_not_found(api: Api, world: World) -> None:
    body = await api.call("splittest.create", world.user.api_key, CampaignID=world.other_campaign, **GOOD_SPLIT)
    assert body["ErrorCode"] == [6], body
    split_test = (await get(api, world.other, world.other_campaign))["SplitTest"]
    assert split_test is None


# Fuzzing -------------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(
        ["*", "1,2", "7:0,8", "Future", "Recursive", "2030-01-01", "10:00", "UTC", "{}", '{"a": 1}']
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
FUZZ_COMMANDS = st.sampled_from(
    [
        "campaign.update",
        "campaign.get",
        "campaign.pause",
        "campaign.resume",
        "campaign.cancel",
        "campaign.approve",
        "splittest.create",
        "campaigns.get",
    ]
)
FUZZ_PARAMS = st.sampled_from(
    [
        "CampaignName",
        "CampaignStatus",
        "CampaignStatusReason",
        "RelEmailID",
        "ScheduleType",
        "SendDate",
        "SendTime",
        "SendTimeZone",
        "ScheduleRecDaysOfWeek",
        "ScheduleRecDaysOfMonth",
        "ScheduleRecMonths",
        "ScheduleRecHours",
        "ScheduleRecMinutes",
        "ScheduleRecSendMaxInstance",
        "PublishOnRSS",
        "AutoResendEnabled",
        "AutoResendWaitDays",
        "AutoResendSubject",
        "OriginalCampaignID",
        "RecipientListsAndSegments",
        "Exclude_RecipientListsAndSegments",
        "RulesJsonBundle",
        "S2SEnabled",
        "ABTesting",
        "TestSize",
        "TestDuration",
        "Winner",
        "RetrieveStatistics",
        "ScheduleType",
        "Date_From",
        "Date_To",
        "Tags",
        "ExcludeColumns",
        "FilterByUserID",
        "IncludeTotalRecipients",
    ]
)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(command=FUZZ_COMMANDS, params=st.dictionaries(FUZZ_PARAMS, JSON_VALUES, max_size=6), own=st.booleans())
async def test_fuzzed_campaign_commands_answer_in_their_envelope_never_a_fault(
    api: Api, world: World, command: str, params: dict[str, Any], own: bool
) -> None:
    campaign_id = world.other_campaign if not own else await create_campaign(api, world.user)
    status, body = await api.post(
        {"Command": command, "APIKey": world.user.api_key, "CampaignID": campaign_id, **params}
    )
    assert status == 200, body
    assert isinstance(body["Success"], bool)
    if not body["Success"]:
        assert body["ErrorCode"] not in (100005, 100004), body
        assert isinstance(body["ErrorCode"], int | list) and "ErrorText" in body
