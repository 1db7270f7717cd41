"""campaign.recipients.get through the legacy API: who an unsent campaign would be sent to, and every error code."""

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
from google.protobuf import struct_pb2
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from tests.conftest import Admin, Api, System, User, grpc_metadata
from translator.identity import IdentityStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

NEXT_YEAR = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
SUCCESS = {"Success": True, "ErrorCode": 0}
COMMAND = "campaign.recipients.get"
SUBSCRIBED = audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED


@dataclass
class Account:
    user: User
    email_id: int


@dataclass
class World:
    owner: Account
    untrusted: Account
    other: Account
    admin: Admin
    stub: audience_pb2_grpc.AudienceServiceStub
    system: System

    def md(self, account: Account) -> tuple[tuple[str, str], ...]:
        return grpc_metadata(self.system, account.user.user_id)

    async def new_list(self, account: Account, *emails: str, **options: Any) -> int:
        created = await self.stub.CreateList(
            audience_pb2.CreateListRequest(name="list"), metadata=self.md(account)
        )
        for email in emails:
            await self.add(account, created.list_id, email, **options)
        list_id: int = created.list_id
        return list_id

    async def add(
        self,
        account: Account,
        list_id: int,
        email: str,
        *,
        status: audience_pb2.SubscriberStatus.ValueType = SUBSCRIBED,
        first: str = "",
        last: str = "",
    ) -> int:
        subscriber = audience_pb2.Subscriber(
            list_id=list_id, email_address=email, status=status, first_name=first, last_name=last
        )
        created = await self.stub.CreateSubscriber(
            audience_pb2.CreateSubscriberRequest(subscriber=subscriber), metadata=self.md(account)
        )
        subscriber_id: int = created.subscriber_id
        return subscriber_id

    async def segment(self, account: Account, list_id: int, rules: list[Any]) -> int:
        message = struct_pb2.ListValue()
        message.extend(rules)
        segment = audience_pb2.Segment(list_id=list_id, name="segment", operator="and", rules=message)
        created = await self.stub.CreateSegment(
            audience_pb2.CreateSegmentRequest(segment=segment), metadata=self.md(account)
        )
        segment_id: int = created.segment_id
        return segment_id


async def new_account(api: Api, identity: IdentityStore, *, untrusted: bool = False) -> Account:
    name = f"user-{uuid.uuid4().hex[:12]}"
    created = await identity.create_user(name, "secret-password", permissions=["*"], untrusted=untrusted)
    user = User(created["UserID"], created["APIKey"], name)
    email_id = (await api.call("email.create", user.api_key))["EmailID"]
    return Account(user, email_id)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(api: Api, identity: IdentityStore, system: System) -> AsyncIterator[World]:
    admin = await identity.create_admin(f"admin-{uuid.uuid4().hex[:12]}", "admin-password")
    async with grpc.aio.insecure_channel(system.grpc_target("audience")) as channel:
        yield World(
            owner=await new_account(api, identity),
            untrusted=await new_account(api, identity, untrusted=True),
            other=await new_account(api, identity),
            admin=Admin(admin["AdminID"], admin["AdminAPIKey"]),
            stub=audience_pb2_grpc.AudienceServiceStub(channel),
            system=system,
        )


async def campaign(api: Api, account: Account, status: str = "Draft", **targeting: Any) -> int:
    """A campaign with content, a schedule next year and the given targeting, brought to `status`."""
    body = await api.call("campaign.create", account.user.api_key, CampaignName="Recipients")
    assert body["Success"] is True, body
    campaign_id: int = body["CampaignID"]
    body = await api.call(
        "campaign.update",
        account.user.api_key,
        CampaignID=campaign_id,
        RelEmailID=account.email_id,
        ScheduleType="Future",
        SendDate=NEXT_YEAR,
        SendTime="09:00:00",
        **targeting,
    )
    assert body == SUCCESS, body
    if status != "Draft":
        body = await api.call(
            "campaign.update", account.user.api_key, CampaignID=campaign_id, CampaignStatus="Ready"
        )
        assert body == SUCCESS, body
    if status in ("Paused", "Cancelled"):
        assert await api.call("campaign.pause", account.user.api_key, CampaignID=campaign_id) == SUCCESS
    if status == "Cancelled":
        assert await api.call("campaign.cancel", account.user.api_key, CampaignID=campaign_id) == SUCCESS
    got = await api.call("campaign.get", account.user.api_key, CampaignID=campaign_id)
    assert got["Campaign"]["CampaignStatus"] == status, got
    return campaign_id


async def recipients(api: Api, account: Account, campaign_id: Any, **params: Any) -> Any:
    return await api.call(COMMAND, account.user.api_key, CampaignID=campaign_id, **params)


def emails(body: dict[str, Any]) -> list[str]:
    return [row["EmailAddress"] for row in body["Recipients"]]


# Success ------------------------------------------------------------------------------------------------------


async def test_the_seed_example_shape(api: Api, world: World) -> None:
    list_id = await world.new_list(world.owner)
    ids = [
        await world.add(world.owner, list_id, "john@example.com", first="John", last="Doe"),
        await world.add(world.owner, list_id, "ada@example.com", first="Ada", last="Lovelace"),
    ]
    campaign_id = await campaign(api, world.owner, RecipientListsAndSegments=str(list_id))
    status, body = await api.post(
        {"Command": COMMAND, "APIKey": world.owner.user.api_key, "CampaignID": campaign_id, "OnlyTotal": False}
    )
    assert status == 200
    assert body == {
        "Success": True,
        "ErrorCode": 0,
        "CampaignID": campaign_id,
        "TotalRecipients": 2,
        "Recipients": [
            {
                "SubscriberID": ids[0],
                "EmailAddress": "john@example.com",
                "FirstName": "John",
                "LastName": "Doe",
                "ListID": list_id,
            },
            {
                "SubscriberID": ids[1],
                "EmailAddress": "ada@example.com",
                "FirstName": "Ada",
                "LastName": "Lovelace",
                "ListID": list_id,
            },
        ],
    }
    # The same through /api/v1 with a form body and the CampaignID as a string.
    status, body = await api.form(
        {"APIKey": world.owner.user.api_key, "CampaignID": str(campaign_id)}, path=f"/api/v1/{COMMAND}"
    )
    assert (status, body["TotalRecipients"], emails(body)) == (200, 2, ["john@example.com", "ada@example.com"])


@pytest.mark.parametrize("value", [True, 1, "1", "true", "yes"])
async def test_only_total_answers_no_rows(api: Api, world: World, value: Any) -> None:
    list_id = await world.new_list(world.owner, "a@example.com", "b@example.com")
    campaign_id = await campaign(api, world.owner, RecipientListsAndSegments=str(list_id))
    body = await recipients(api, world.owner, campaign_id, OnlyTotal=value)
    assert body == {**SUCCESS, "CampaignID": campaign_id, "TotalRecipients": 2, "Recipients": []}
    body = await recipients(api, world.owner, campaign_id, OnlyTotal="no")
    assert len(body["Recipients"]) == 2


async def test_exclusions_suppression_and_status_are_reflected(api: Api, world: World) -> None:
    owner = world.owner
    main = await world.new_list(owner, "a@example.com", "b@example.com", "c@example.com", "d@example.com")
    await world.add(owner, main, "gone@example.com", status=audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED)
    await world.add(owner, main, "pending@example.com", status=audience_pb2.SUBSCRIBER_STATUS_OPT_IN_PENDING)
    # b is also on a second included list: one recipient, from its lowest subscriber id.
    second = await world.new_list(owner, "B@example.com", "e@example.com")
    blocked = await world.new_list(owner, "c@example.com")
    await world.stub.AddSuppressions(
        audience_pb2.AddSuppressionsRequest(email_addresses=["D@EXAMPLE.COM"]), metadata=world.md(owner)
    )
    campaign_id = await campaign(
        api,
        owner,
        RecipientListsAndSegments=f"{main},{second}",
        Exclude_RecipientListsAndSegments=str(blocked),
    )
    body = await recipients(api, owner, campaign_id)
    assert emails(body) == ["a@example.com", "b@example.com", "e@example.com"]
    assert body["TotalRecipients"] == 3
    assert [row["ListID"] for row in body["Recipients"]] == [main, main, second]
    # Counted alone (CountRecipients, not the stream), the total is the same.
    assert (await recipients(api, owner, campaign_id, OnlyTotal=True))["TotalRecipients"] == 3
    assert [row["SubscriberID"] for row in body["Recipients"]] == sorted(
        r["SubscriberID"] for r in body["Recipients"]
    )


async def test_segments_and_the_rules_bundle_narrow_the_audience(api: Api, world: World) -> None:
    owner = world.owner
    list_id = await world.new_list(owner)
    for name, email in (("vip", "v1@example.com"), ("", "n1@example.com"), ("VIP", "v2@example.com")):
        await world.add(owner, list_id, email, first=name)
    vip = [[{"type": "fields", "field_id": "FirstName", "operator": "is", "value": "vip"}]]
    segment_id = await world.segment(owner, list_id, vip)
    by_segment = await campaign(api, owner, RecipientListsAndSegments=f"{list_id}:{segment_id}")
    body = await recipients(api, owner, by_segment)
    assert (body["TotalRecipients"], emails(body)) == (2, ["v1@example.com", "v2@example.com"])
    # A bundle alone is targeting enough (its criteria name the lists).
    bundle = {"operator": "and", "criteria": [{"list_id": list_id, "operator": "and", "rules": vip}]}
    by_bundle = await campaign(api, owner, RulesJsonBundle=json.dumps(bundle))
    body = await recipients(api, owner, by_bundle)
    assert (body["TotalRecipients"], emails(body)) == (2, ["v1@example.com", "v2@example.com"])


@pytest.mark.parametrize("status", ["Draft", "Ready"])
async def test_draft_and_ready_campaigns_are_answered(api: Api, world: World, status: str) -> None:
    list_id = await world.new_list(world.owner, "a@example.com")
    campaign_id = await campaign(api, world.owner, status, RecipientListsAndSegments=str(list_id))
    body = await recipients(api, world.owner, campaign_id)
    assert (body["Success"], body["TotalRecipients"], emails(body)) == (True, 1, ["a@example.com"])


async def test_a_pending_approval_campaign_is_answered(api: Api, world: World) -> None:
    list_id = await world.new_list(world.untrusted, "a@example.com", "b@example.com")
    campaign_id = await campaign(api, world.untrusted, "Pending Approval", RecipientListsAndSegments=str(list_id))
    body = await recipients(api, world.untrusted, campaign_id)
    assert (body["Success"], body["TotalRecipients"], len(body["Recipients"])) == (True, 2, 2)


async def test_an_admin_key_sees_any_users_campaign(api: Api, world: World) -> None:
    list_id = await world.new_list(world.owner, "a@example.com", "b@example.com")
    campaign_id = await campaign(api, world.owner, RecipientListsAndSegments=str(list_id))
    expected = await recipients(api, world.owner, campaign_id)
    for key in ("AdminAPIKey", "APIKey"):
        status, body = await api.post({"Command": COMMAND, key: world.admin.api_key, "CampaignID": campaign_id})
        assert (status, body) == (200, expected), key


async def test_at_most_ten_thousand_recipients_are_listed_but_all_are_counted(api: Api, world: World) -> None:
    list_id = await world.new_list(world.owner)
    total = 10_005
    data = "email,first_name\n" + "".join(f"r{i:05d}@example.com,R{i}\n" for i in range(total))

    async def chunks() -> AsyncIterator[audience_pb2.StreamImportRequest]:
        yield audience_pb2.StreamImportRequest(list_id=list_id, format=audience_pb2.CsvFormat(header=True))
        yield audience_pb2.StreamImportRequest(chunk=data.encode())

    done = await world.stub.StreamImport(chunks(), metadata=world.md(world.owner), timeout=60)
    assert done.imported == total, done
    campaign_id = await campaign(api, world.owner, RecipientListsAndSegments=str(list_id))
    body = await recipients(api, world.owner, campaign_id)
    assert body["TotalRecipients"] == total
    ids = [row["SubscriberID"] for row in body["Recipients"]]
    assert len(ids) == 10_000 and ids == sorted(ids)
    assert emails(body)[0] == "r00000@example.com" and emails(body)[-1] == "r09999@example.com"


# Errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"CampaignID": ""}, {"CampaignID": None}])
async def test_a_missing_campaign_id_is_1(api: Api, world: World, params: dict[str, Any]) -> None:
    body = await api.call(COMMAND, world.owner.user.api_key, **params)
    assert body == {"Success": False, "ErrorCode": 1, "ErrorText": "Missing required parameter (CampaignID)"}


@pytest.mark.parametrize("value", ["abc", 0, -1, 1.5, "12x", [1], True, "99999999999999999999"])
async def test_a_campaign_id_that_is_no_positive_integer_is_2(api: Api, world: World, value: Any) -> None:
    body = await recipients(api, world.owner, value)
    assert body == {"Success": False, "ErrorCode": 2, "ErrorText": "Invalid CampaignID (must be numeric)"}


async def test_an_unknown_or_another_users_campaign_is_3(api: Api, world: World) -> None:
    list_id = await world.new_list(world.other, "a@example.com")
    theirs = await campaign(api, world.other, RecipientListsAndSegments=str(list_id))
    for campaign_id in (theirs, 987654321):
        body = await recipients(api, world.owner, campaign_id)
        assert body == {"Success": False, "ErrorCode": 3, "ErrorText": "Campaign not found or access denied"}


@pytest.mark.parametrize("status", ["Paused", "Cancelled"])
async def test_a_campaign_past_approval_is_4_with_its_status(api: Api, world: World, status: str) -> None:
    list_id = await world.new_list(world.owner, "a@example.com")
    campaign_id = await campaign(api, world.owner, status, RecipientListsAndSegments=str(list_id))
    body = await recipients(api, world.owner, campaign_id)
    assert body == {
        "Success": False,
        "ErrorCode": 4,
        "ErrorText": "This endpoint only works for unsent campaigns",
        "ErrorMessage": "This endpoint only works for unsent campaigns",
        "CampaignStatus": status,
    }
    # Code 4 comes before 5: the status is judged first.
    assert (await recipients(api, world.owner, campaign_id, OnlyTotal=True))["ErrorCode"] == 4


async def test_a_campaign_without_targeting_is_5(api: Api, world: World) -> None:
    list_id = await world.new_list(world.owner, "a@example.com")
    expected = {
        "Success": False,
        "ErrorCode": 5,
        "ErrorText": "Campaign has no RulesJsonBundle or criteria defined",
    }
    nothing = await campaign(api, world.owner)
    assert await recipients(api, world.owner, nothing) == expected
    # Exclusions alone select nobody; nor does a bundle without criteria.
    only_excluded = await campaign(api, world.owner, Exclude_RecipientListsAndSegments=str(list_id))
    assert await recipients(api, world.owner, only_excluded) == expected
    empty_bundle = await campaign(api, world.owner, RulesJsonBundle='{"operator": "and", "criteria": []}')
    assert await recipients(api, world.owner, empty_bundle) == expected


async def test_targeting_the_audience_cannot_resolve_is_10(api: Api, world: World) -> None:
    owner = world.owner
    deleted = await world.new_list(owner, "a@example.com")
    gone = await campaign(api, owner, RecipientListsAndSegments=str(deleted))
    assert (await recipients(api, owner, gone))["TotalRecipients"] == 1
    assert (await api.call("lists.delete", owner.user.api_key, Lists=str(deleted)))["Success"] is True
    kept = await world.new_list(owner, "b@example.com")
    segment_id = await world.segment(owner, kept, [])
    gone_segment = await campaign(api, owner, RecipientListsAndSegments=f"{kept}:{segment_id}")
    await world.stub.DeleteSegments(
        audience_pb2.DeleteSegmentsRequest(segment_ids=[segment_id]), metadata=world.md(owner)
    )
    prefix = "Error retrieving campaign recipients: "
    cases = {
        gone: f"{prefix}list {deleted} not found",
        gone_segment: f"{prefix}segment {segment_id} not found",
    }
    for campaign_id, text in cases.items():
        for only_total in (False, True):
            body = await recipients(api, owner, campaign_id, OnlyTotal=only_total)
            assert set(body) == {"Success", "ErrorCode", "ErrorText"}, body
            assert (body["Success"], body["ErrorCode"]) == (False, 10), body
            assert body["ErrorText"] == text or body["ErrorText"].startswith(f"{text}: "), body
    # An admin sees what the campaign's owner would send to: a deleted list is no recipient source.
    status, body = await api.post({"Command": COMMAND, "AdminAPIKey": world.admin.api_key, "CampaignID": gone})
    assert (status, body["ErrorCode"]) == (200, 10), body
    # Another user's list, or rules the audience cannot read, never get that far: campaign.update refuses them
    # when they are set (RULINGS 15).
    foreign = await world.new_list(world.other, "x@example.com")
    bad_rules = [[{"type": "no-such-rule", "operator": "is", "value": "x"}]]
    bundle = {"operator": "and", "criteria": [{"list_id": kept, "operator": "and", "rules": bad_rules}]}
    for targeting in ({"RecipientListsAndSegments": str(foreign)}, {"RulesJsonBundle": json.dumps(bundle)}):
        body = await api.call("campaign.update", owner.user.api_key, CampaignID=gone, **targeting)
        assert (body["Success"], body["ErrorCode"]) == (False, 26), body


async def test_credentials_and_permission(api: Api, world: World, make_user: Any) -> None:
    list_id = await world.new_list(world.owner, "a@example.com")
    campaign_id = await campaign(api, world.owner, RecipientListsAndSegments=str(list_id))
    status, body = await api.post({"Command": COMMAND, "CampaignID": campaign_id})
    assert (status, body["ErrorCode"]) == (200, 99998)
    status, body = await api.post({"Command": COMMAND, "APIKey": "NOPE-NOPE-NOPE-NOPE", "CampaignID": campaign_id})
    assert (status, body["ErrorCode"]) == (200, 99998)
    limited = await make_user(permissions=["Campaign.Update"])
    body = await api.call(COMMAND, limited.api_key, CampaignID=campaign_id)
    assert body["ErrorCode"] == 99999 and body["Success"] is False
