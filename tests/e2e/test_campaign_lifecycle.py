"""The campaign status machine through the legacy API: pause, resume, cancel, approve, untrusted users, isolation."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Admin, Api, User
from translator.identity import IdentityStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

NEXT_YEAR = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
UNKNOWN_ID = 987654321
SUCCESS = {"Success": True, "ErrorCode": 0}


@dataclass
class Account:
    user: User
    email_id: int
    second_email_id: int
    list_id: int
    second_list_id: int


@dataclass
class World:
    trusted: Account
    untrusted: Account
    other: Account
    admin: Admin


async def new_account(api: Api, identity: IdentityStore, *, untrusted: bool = False) -> Account:
    name = f"user-{uuid.uuid4().hex[:12]}"
    created = await identity.create_user(name, "secret-password", permissions=["*"], untrusted=untrusted)
    user = User(created["UserID"], created["APIKey"], name)
    emails = [(await api.call("email.create", user.api_key))["EmailID"] for _ in range(2)]
    lists = [
        (await api.call("list.create", user.api_key, SubscriberListName=name))["ListID"] for name in ("A", "B")
    ]
    return Account(user, *emails, *lists)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(api: Api, identity: IdentityStore) -> AsyncIterator[World]:
    admin = await identity.create_admin(f"admin-{uuid.uuid4().hex[:12]}", "admin-password")
    yield World(
        trusted=await new_account(api, identity),
        untrusted=await new_account(api, identity, untrusted=True),
        other=await new_account(api, identity),
        admin=Admin(admin["AdminID"], admin["AdminAPIKey"]),
    )


async def draft(api: Api, account: Account, name: str = "Lifecycle") -> int:
    """A Draft with content and a schedule next year, so that it may become Ready."""
    body = await api.call("campaign.create", account.user.api_key, CampaignName=name)
    assert body["Success"] is True, body
    campaign_id: int = body["CampaignID"]
    body = await api.call(
        "campaign.update",
        account.user.api_key,
        CampaignID=campaign_id,
        RelEmailID=account.email_id,
        RecipientListsAndSegments=str(account.list_id),
        ScheduleType="Future",
        SendDate=NEXT_YEAR,
        SendTime="09:00:00",
    )
    assert body == SUCCESS, body
    return campaign_id


async def ready(api: Api, account: Account) -> int:
    campaign_id = await draft(api, account)
    assert await set_status(api, account, campaign_id, "Ready") == SUCCESS
    return campaign_id


async def set_status(api: Api, account: Account, campaign_id: int, status: str) -> Any:
    return await api.call("campaign.update", account.user.api_key, CampaignID=campaign_id, CampaignStatus=status)


async def status_of(api: Api, account: Account, campaign_id: int) -> str:
    body = await api.call("campaign.get", account.user.api_key, CampaignID=campaign_id)
    assert body["Success"] is True, body
    status: str = body["Campaign"]["CampaignStatus"]
    return status


async def command(api: Api, account: Account, name: str, campaign_id: int) -> Any:
    return await api.call(name, account.user.api_key, CampaignID=campaign_id)


# The seed's examples and the transitions -----------------------------------------------------------------


async def test_the_seed_examples_of_pause_resume_and_cancel(api: Api, world: World) -> None:
    campaign_id = await ready(api, world.trusted)
    for name, status in (("campaign.pause", "Paused"), ("campaign.resume", "Ready"), ("campaign.cancel", "Draft")):
        body = await command(api, world.trusted, name, campaign_id)
        assert body == SUCCESS, (name, body)
        assert await status_of(api, world.trusted, campaign_id) == status


async def test_draft_becomes_ready_and_back(api: Api, world: World) -> None:
    campaign_id = await draft(api, world.trusted)
    assert await set_status(api, world.trusted, campaign_id, "ready") == SUCCESS
    assert await status_of(api, world.trusted, campaign_id) == "Ready"
    assert await set_status(api, world.trusted, campaign_id, "Draft") == SUCCESS
    assert await status_of(api, world.trusted, campaign_id) == "Draft"


async def test_a_campaign_without_email_cannot_become_ready(api: Api, world: World) -> None:
    body = await api.call("campaign.create", world.trusted.user.api_key, CampaignName="no content")
    body = await set_status(api, world.trusted, body["CampaignID"], "Ready")
    assert body["Success"] is False and body["ErrorCode"] == 4, body


async def test_an_untrusted_users_ready_campaign_waits_for_an_admins_approval(api: Api, world: World) -> None:
    account = world.untrusted
    campaign_id = await draft(api, account)
    assert await set_status(api, account, campaign_id, "Ready") == SUCCESS
    assert await status_of(api, account, campaign_id) == "Pending Approval"
    # Nothing but withdrawing it helps the user meanwhile.
    assert (await command(api, account, "campaign.pause", campaign_id))["ErrorCode"] == 3
    assert (await command(api, account, "campaign.cancel", campaign_id))["ErrorCode"] == [3]
    assert (await set_status(api, account, campaign_id, "Ready"))["ErrorCode"] == 3
    body = await api.call(
        "campaign.update", account.user.api_key, CampaignID=campaign_id, RelEmailID=account.second_email_id
    )
    assert body["ErrorCode"] == 3
    # The user may not approve their own campaign; an admin may.
    assert (await command(api, account, "campaign.approve", campaign_id))["ErrorCode"] == 99999
    body = await api.call("campaign.approve", world.admin.api_key, CampaignID=campaign_id)
    assert body == SUCCESS, body
    assert await status_of(api, account, campaign_id) == "Ready"
    body = await api.call("campaign.approve", world.admin.api_key, CampaignID=campaign_id)
    assert body["Success"] is False and body["ErrorCode"] == 3, body
    # Changing what recipients get asks for a new approval.
    body = await api.call(
        "campaign.update",
        account.user.api_key,
        CampaignID=campaign_id,
        RecipientListsAndSegments=str(account.second_list_id),
    )
    assert body == SUCCESS, body
    assert await status_of(api, account, campaign_id) == "Pending Approval"
    # Withdrawn, it is a Draft again.
    assert await set_status(api, account, campaign_id, "Draft") == SUCCESS
    assert await status_of(api, account, campaign_id) == "Draft"


async def test_campaign_approve_also_accepts_the_admin_key_as_apikey(api: Api, world: World) -> None:
    campaign_id = await draft(api, world.untrusted)
    await set_status(api, world.untrusted, campaign_id, "Ready")
    body = await api.post(
        {"Command": "campaign.approve", "AdminAPIKey": world.admin.api_key, "CampaignID": campaign_id}
    )
    assert body == (200, SUCCESS)


async def test_cancelling_a_ready_campaign_returns_it_to_draft_without_its_schedule(
    api: Api, world: World
) -> None:
    campaign_id = await ready(api, world.trusted)
    assert await command(api, world.trusted, "campaign.cancel", campaign_id) == SUCCESS
    body = await api.call("campaign.get", world.trusted.user.api_key, CampaignID=campaign_id)
    campaign = body["Campaign"]
    assert campaign["CampaignStatus"] == "Draft"
    assert (campaign["ScheduleType"], campaign["SendDate"], campaign["SendTime"]) == ("Not Scheduled", "", "")
    assert campaign["RelEmailID"] == world.trusted.email_id  # only the schedule goes


async def test_cancelling_a_paused_campaign_is_final(api: Api, world: World) -> None:
    account = world.trusted
    campaign_id = await ready(api, account)
    assert await command(api, account, "campaign.pause", campaign_id) == SUCCESS
    assert await command(api, account, "campaign.cancel", campaign_id) == SUCCESS
    assert await status_of(api, account, campaign_id) == "Cancelled"
    assert (await command(api, account, "campaign.resume", campaign_id))["ErrorCode"] == 3
    assert (await command(api, account, "campaign.pause", campaign_id))["ErrorCode"] == 3
    assert (await command(api, account, "campaign.cancel", campaign_id))["ErrorCode"] == [3]
    assert (await set_status(api, account, campaign_id, "Draft"))["ErrorCode"] == 3
    for status in ("Cancelled", "All"):
        body = await api.call(
            "campaigns.get", account.user.api_key, CampaignStatus=status, CampaignIDs=[campaign_id]
        )
        assert [c["CampaignID"] for c in body["Campaigns"]] == [campaign_id], status


@pytest.mark.parametrize("status", ["Sending", "Sent", "Failed", "Paused", "Pending Approval", "Cancelled"])
async def test_statuses_a_client_may_not_set_answer_3(api: Api, world: World, status: str) -> None:
    campaign_id = await draft(api, world.trusted)
    body = await set_status(api, world.trusted, campaign_id, status)
    assert body["Success"] is False and body["ErrorCode"] == 3, body
    assert await status_of(api, world.trusted, campaign_id) == "Draft"


# Each changes what the paused campaign (content, one list, a schedule next year) would send, or to whom.
CONTENT_CHANGES: dict[str, Any] = {
    "RelEmailID": lambda a: {"RelEmailID": a.second_email_id},
    "RecipientListsAndSegments": lambda a: {"RecipientListsAndSegments": str(a.second_list_id)},
    "Exclude_RecipientListsAndSegments": lambda a: {"Exclude_RecipientListsAndSegments": str(a.second_list_id)},
    "RulesJsonBundle": lambda a: {
        "RulesJsonBundle": json.dumps(
            {"operator": "and", "criteria": [{"list_id": a.list_id, "operator": "and", "rules": []}]}
        )
    },
    "ScheduleType": lambda a: {"ScheduleType": "Not Scheduled"},
    "AutoResend": lambda a: {
        "AutoResendEnabled": True,
        "AutoResendWaitDays": 2,
        "AutoResendSubject": "s",
        "AutoResendPreHeaderText": "p",
    },
    "ABTesting": lambda a: {
        "ABTesting": {
            "Variations": [{"EmailID": a.email_id, "Weight": 1}, {"EmailID": a.second_email_id, "Weight": 1}]
        }
    },
}


@pytest.mark.parametrize("change", CONTENT_CHANGES)
async def test_recipients_and_content_cannot_change_while_paused(api: Api, world: World, change: str) -> None:
    account = world.trusted
    campaign_id = await ready(api, account)
    assert await command(api, account, "campaign.pause", campaign_id) == SUCCESS
    params = CONTENT_CHANGES[change](account)
    body = await api.call("campaign.update", account.user.api_key, CampaignID=campaign_id, **params)
    assert body["Success"] is False and body["ErrorCode"] == 3, body


async def test_content_sent_again_unchanged_is_no_change_while_paused(api: Api, world: World) -> None:
    account = world.trusted
    campaign_id = await ready(api, account)
    assert await command(api, account, "campaign.pause", campaign_id) == SUCCESS
    body = await api.call(
        "campaign.update", account.user.api_key, CampaignID=campaign_id, RelEmailID=account.email_id, ABTesting={}
    )
    assert body == SUCCESS


async def test_the_name_may_change_while_paused(api: Api, world: World) -> None:
    campaign_id = await ready(api, world.trusted)
    await command(api, world.trusted, "campaign.pause", campaign_id)
    body = await api.call(
        "campaign.update", world.trusted.user.api_key, CampaignID=campaign_id, CampaignName="Renamed"
    )
    assert body == SUCCESS


# Error codes of pause, resume, cancel, approve ------------------------------------------------------------

# (command, parameters, expected code): code 3 needs a campaign in the status named by "state".
ID_ERROR_CASES: list[tuple[str, dict[str, Any], Any]] = []
for name, shape in (("campaign.pause", int), ("campaign.resume", int), ("campaign.cancel", list)):
    wrap = (lambda code: [code]) if shape is list else (lambda code: code)
    ID_ERROR_CASES += [
        (name, {}, wrap(1)),
        (name, {"CampaignID": "abc"}, wrap(1)),
        (name, {"CampaignID": 0}, wrap(1)),
        (name, {"CampaignID": UNKNOWN_ID}, wrap(2)),
    ]
ID_ERROR_CASES += [
    ("campaign.pause", {"state": "Draft"}, 3),
    ("campaign.pause", {"state": "Paused"}, 3),
    ("campaign.resume", {"state": "Draft"}, 3),
    ("campaign.resume", {"state": "Ready"}, 3),
    ("campaign.cancel", {"state": "Draft"}, [3]),
    ("campaign.approve", {}, [1]),
    ("campaign.approve", {"CampaignID": "abc"}, [1]),
    ("campaign.approve", {"CampaignID": UNKNOWN_ID}, 2),
    ("campaign.approve", {"state": "Draft"}, 3),
    ("campaign.approve", {"state": "Ready"}, 3),
]


@pytest.mark.parametrize(
    ("name", "params", "code"),
    ID_ERROR_CASES,
    ids=[f"{n}-{p.get('state') or p.get('CampaignID', 'none')}" for n, p, _ in ID_ERROR_CASES],
)
async def test_status_command_error_codes(
    api: Api, world: World, name: str, params: dict[str, Any], code: Any
) -> None:
    params = dict(params)
    state = params.pop("state", None)
    if state is not None:
        params["CampaignID"] = await (ready(api, world.trusted) if state != "Draft" else draft(api, world.trusted))
        if state == "Paused":
            assert await command(api, world.trusted, "campaign.pause", params["CampaignID"]) == SUCCESS
    key = world.admin.api_key if name == "campaign.approve" else world.trusted.user.api_key
    body = await api.call(name, key, **params)
    assert body["Success"] is False and body["ErrorCode"] == code, body
    assert isinstance(body["ErrorText"], list if isinstance(code, list) else str)


async def test_status_commands_need_the_update_permission(api: Api, make_user: Any, world: World) -> None:
    reader = await make_user(permissions=["Campaign.Get"])
    for name in ("campaign.pause", "campaign.resume", "campaign.cancel"):
        assert (await api.call(name, reader.api_key, CampaignID=1))["ErrorCode"] == 99999


# Isolation ------------------------------------------------------------------------------------------------


async def test_another_users_campaign_is_not_found_for_every_command(api: Api, world: World) -> None:
    owner, stranger = world.trusted, world.other
    campaign_id = await ready(api, owner)
    key = stranger.user.api_key
    expectations = {
        "campaign.get": 2,
        "campaign.update": 2,
        "campaign.pause": 2,
        "campaign.resume": 2,
        "campaign.cancel": [2],
        "campaign.copy": [1],
    }
    for name, code in expectations.items():
        body = await api.call(name, key, CampaignID=campaign_id, CampaignName="mine now")
        assert body["Success"] is False and body["ErrorCode"] == code, (name, body)
    body = await api.call(
        "splittest.create", key, CampaignID=campaign_id, TestSize=10, TestDuration=5, Winner="highest_open_rate"
    )
    assert body["ErrorCode"] == [6], body
    body = await api.call("campaigns.get", key, CampaignIDs=[campaign_id])
    assert body["Campaigns"] == [] and body["TotalCampaigns"] == 0
    assert (await api.call("campaigns.delete", key, Campaigns=str(campaign_id)))["Success"] is True
    # The owner's campaign is untouched by all of it.
    body = await api.call("campaign.get", owner.user.api_key, CampaignID=campaign_id)
    assert body["Campaign"]["CampaignStatus"] == "Ready" and body["Campaign"]["CampaignName"] == "Lifecycle"
    assert body["Campaign"]["SplitTest"] is None


async def test_another_users_email_is_not_found(api: Api, world: World) -> None:
    campaign_id = await draft(api, world.trusted)
    body = await api.call(
        "campaign.update", world.trusted.user.api_key, CampaignID=campaign_id, RelEmailID=world.other.email_id
    )
    assert body["ErrorCode"] == 4


# The status machine as a property ---------------------------------------------------------------------------

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["create", "ready", "draft", "pause", "resume", "cancel", "approve", "copy", "delete"]),
        st.integers(min_value=0, max_value=7),
    ),
    min_size=1,
    max_size=12,
)
DELETED = "deleted"


def expected_answer(operation: str, status: str, *, untrusted: bool) -> tuple[Any, str]:
    """What the model says an operation answers on a campaign in `status`, and the status afterwards."""
    if status == DELETED:
        # campaigns.delete ignores ids it cannot find; everything else answers "not found".
        not_found = {"cancel": [2], "copy": [1], "delete": 0}.get(operation, 2)
        return not_found, DELETED
    if operation == "draft":
        return (0, "Draft") if status in ("Draft", "Ready", "Pending Approval") else (3, status)
    if operation == "ready":
        if status == "Draft":
            return 0, "Pending Approval" if untrusted else "Ready"
        return (0, "Ready") if status == "Ready" else (3, status)
    if operation == "pause":
        return (0, "Paused") if status in ("Ready", "Sending") else (3, status)
    if operation == "resume":
        return (0, "Ready") if status == "Paused" else (3, status)
    if operation == "cancel":
        after = {"Ready": "Draft", "Sending": "Cancelled", "Paused": "Cancelled"}.get(status)
        return (0, after) if after else ([3], status)
    if operation == "approve":
        return (0, "Ready") if status == "Pending Approval" else (3, status)
    if operation in ("copy", "delete"):
        return 0, DELETED if operation == "delete" else status
    raise AssertionError(operation)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(operations=OPERATIONS, untrusted=st.booleans())
async def test_random_operation_sequences_follow_the_status_machine(
    api: Api, world: World, operations: list[tuple[str, int]], untrusted: bool
) -> None:
    account = world.untrusted if untrusted else world.trusted
    key = account.user.api_key
    model: dict[int, str] = {await draft(api, account, "Property"): "Draft"}
    for operation, pick in operations:
        if operation == "create":
            model[await draft(api, account, "Property")] = "Draft"
            continue
        campaign_id = list(model)[pick % len(model)]
        code, after = expected_answer(operation, model[campaign_id], untrusted=untrusted)
        if operation in ("ready", "draft"):
            body = await set_status(api, account, campaign_id, operation.capitalize())
        elif operation == "approve":
            body = await api.call("campaign.approve", world.admin.api_key, CampaignID=campaign_id)
        elif operation == "delete":
            body = await api.call("campaigns.delete", key, Campaigns=str(campaign_id))
        else:
            body = await api.call(f"campaign.{operation}", key, CampaignID=campaign_id)
        step = (operation, campaign_id, model[campaign_id], body)
        assert body["ErrorCode"] == code, step
        assert body["Success"] is (code == 0), step
        model[campaign_id] = after
        if operation == "copy" and code == 0:
            copy_id = body["NewCampaignID"]
            assert await status_of(api, account, copy_id) == "Draft", step
            model[copy_id] = "Draft"
        if after == DELETED:
            got = await api.call("campaign.get", key, CampaignID=campaign_id)
            assert got["ErrorCode"] == 2, step
        else:
            assert await status_of(api, account, campaign_id) == after, step
    listed = await api.call("campaigns.get", key, CampaignIDs=list(model), CampaignStatus="All")
    alive = {campaign_id: status for campaign_id, status in model.items() if status != DELETED}
    assert {c["CampaignID"]: c["CampaignStatus"] for c in listed["Campaigns"]} == alive
