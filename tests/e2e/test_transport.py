"""The legacy transport through the real path: bodies, methods, hard failures, XML, credentials and login."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api, System, User

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_invalid_json_answers_100000_with_http_400(api: Api) -> None:
    status, content_type, text = await api.raw(
        "POST", "/api.php", data=b'{"Command": "tags.get",', headers={"Content-Type": "application/json"}
    )
    body = json.loads(text)
    assert status == 400 and content_type == "application/json"
    assert body["Success"] is False and body["ErrorCode"] == 100000
    assert body["Errors"][0]["Code"] == 100000


async def test_a_json_array_body_is_invalid_json_for_the_api(api: Api) -> None:
    status, _, text = await api.raw(
        "POST", "/api.php", data=b"[1, 2]", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and json.loads(text)["ErrorCode"] == 100000


async def test_get_answers_100001_with_http_400(api: Api) -> None:
    status, _, text = await api.raw("GET", "/api.php?Command=tags.get")
    body = json.loads(text)
    assert status == 400 and body["ErrorCode"] == 100001 and body["Errors"][0]["Code"] == 100001


async def test_unknown_command_answers_100003_naming_it(api: Api, user: User) -> None:
    status, body = await api.post({"Command": "campaign.explode", "APIKey": user.api_key})
    assert status == 400
    assert body["ErrorCode"] == 100003
    assert body["ErrorText"] == 'Invalid API command: "campaign.explode" not found.'
    assert body["Errors"] == [{"Code": 100003, "Message": body["ErrorText"]}]


async def test_missing_command_answers_100003(api: Api, user: User) -> None:
    status, body = await api.post({"APIKey": user.api_key})
    assert status == 400 and body["ErrorCode"] == 100003


async def test_commands_herald_does_not_serve_are_not_pretended(api: Api, user: User) -> None:
    for command in ("subscribers.import.prepare", "journey.create", "autoresponder.create", "user.create"):
        status, body = await api.post({"Command": command, "APIKey": user.api_key})
        assert (status, body["ErrorCode"]) == (400, 100003), command


async def test_command_and_parameter_names_match_case_insensitively(api: Api, user: User) -> None:
    status, body = await api.post({"COMMAND": "Tag.Create", "apikey": user.api_key, "TAG": "Case Test"})
    assert status == 200 and body["Success"] is True
    status, body = await api.post({"command": "TAGS.GET", "ApiKey": user.api_key})
    assert [t["Tag"] for t in body["Tags"]] == ["Case Test"]


async def test_form_bodies_work_like_json(api: Api, user: User) -> None:
    status, body = await api.form({"Command": "tag.create", "APIKey": user.api_key, "Tag": "from a form"})
    assert status == 200 and body["Success"] is True and isinstance(body["TagID"], int)
    status, body = await api.form({"Command": "tags.get", "APIKey": user.api_key})
    assert body["Tags"][0]["TagID"] == body["Tags"][0]["TagID"] and body["TotalTagCount"] == 1


async def test_multipart_bodies_work_like_json(api: Api, user: User) -> None:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("Command", "tag.create")
    form.add_field("APIKey", user.api_key)
    form.add_field("Tag", "multipart")
    status, _, text = await api.raw("POST", "/api.php", data=form)
    assert status == 200 and json.loads(text)["Success"] is True


async def test_xml_is_answered_when_response_format_is_exactly_xml(api: Api, user: User) -> None:
    status, content_type, text = await api.raw(
        "POST", "/api.php", json={"Command": "tags.get", "APIKey": user.api_key, "ResponseFormat": "XML"}
    )
    assert status == 200 and content_type == "text/xml"
    assert text.startswith("<?xml") and "<response><Success><![CDATA[true]]></Success>" in text
    _, content_type, _ = await api.raw(
        "POST", "/api.php", json={"Command": "tags.get", "APIKey": user.api_key, "ResponseFormat": "xml"}
    )
    assert content_type == "application/json"


async def test_invalid_json_is_answered_in_json_even_when_xml_was_asked(api: Api) -> None:
    status, content_type, _ = await api.raw(
        "POST", "/api.php?ResponseFormat=XML", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and content_type == "application/json"


async def test_v1_alias_serves_commands_that_have_one(api: Api, user: User) -> None:
    status, body = await api.post(
        {"APIKey": user.api_key, "CampaignName": "via v1"}, path="/api/v1/campaign.create"
    )
    assert status == 200 and body["Success"] is True


async def test_v1_alias_refuses_commands_documented_without_one(api: Api, user: User) -> None:
    status, body = await api.post({"APIKey": user.api_key}, path="/api/v1/tags.get")
    assert status == 400 and body["ErrorCode"] == 100003


async def test_unknown_paths_answer_json_not_html(api: Api) -> None:
    status, content_type, _ = await api.raw("GET", "/nothing-here")
    assert status == 404 and content_type == "application/json"


async def test_oversized_body_is_refused_in_the_envelope(api: Api) -> None:
    status, content_type, text = await api.raw(
        "POST",
        "/api.php",
        data=b"{" + b" " * (17 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and content_type == "application/json" and json.loads(text)["Success"] is False


async def test_missing_credentials_answer_99998(api: Api) -> None:
    status, body = await api.post({"Command": "tags.get"})
    assert status == 200 and body["ErrorCode"] == 99998 and body["Success"] is False
    assert isinstance(body["ErrorText"], str)


async def test_unknown_api_key_answers_99998(api: Api) -> None:
    _, body = await api.post({"Command": "campaign.create", "APIKey": "AAAA-BBBB-CCCC-DDDD", "CampaignName": "x"})
    assert body["ErrorCode"] == 99998


async def test_a_non_string_api_key_answers_99998(api: Api) -> None:
    _, body = await api.post({"Command": "tags.get", "APIKey": {"a": 1}})
    assert body["ErrorCode"] == 99998


async def test_missing_permission_answers_99999(api: Api, make_user: Any) -> None:
    reader = await make_user(permissions=["Campaigns.Get"])
    _, body = await api.post({"Command": "campaign.create", "APIKey": reader.api_key, "CampaignName": "nope"})
    assert body == {
        "Success": False,
        "ErrorCode": 99999,
        "ErrorText": "User lacks required permission (Campaign.Create)",
    }
    _, body = await api.post({"Command": "campaigns.get", "APIKey": reader.api_key})
    assert body["Success"] is True


async def test_an_admin_key_cannot_use_user_only_commands(api: Api, admin: Any) -> None:
    _, body = await api.post({"Command": "tag.create", "APIKey": admin.api_key, "Tag": "x"})
    assert body["ErrorCode"] == 99999


async def test_user_login_returns_a_session_that_authenticates(api: Api, user: User) -> None:
    status, body = await api.post(
        {"Command": "user.login", "Username": user.username, "Password": "secret-password"}
    )
    assert status == 200 and body["Success"] is True and body["ErrorCode"] == 0 and body["ErrorText"] == ""
    assert body["UserInfo"]["UserID"] == user.user_id and body["UserInfo"]["Username"] == user.username
    session = body["SessionID"]
    _, body = await api.post({"Command": "campaign.create", "SessionID": session, "CampaignName": "by session"})
    assert body["Success"] is True


async def test_user_login_with_an_api_key_needs_no_password(api: Api, user: User) -> None:
    _, body = await api.post({"Command": "user.login", "APIKey": user.api_key})
    assert body["Success"] is True and body["UserInfo"]["UserID"] == user.user_id


async def test_user_login_errors(api: Api, user: User) -> None:
    _, body = await api.post({"Command": "user.login"})
    assert body["ErrorCode"] == [1, 2] and len(body["ErrorText"]) == 2
    _, body = await api.post({"Command": "user.login", "Username": user.username})
    assert body["ErrorCode"] == [2]
    _, body = await api.post({"Command": "user.login", "Username": user.username, "Password": "wrong"})
    assert body == {"Success": False, "ErrorCode": [3], "ErrorText": ["Invalid login information"]}


async def test_an_expired_session_answers_99998(api: Api, user: User, system: System) -> None:
    _, body = await api.post({"Command": "user.login", "Username": user.username, "Password": "secret-password"})
    session = body["SessionID"]
    url = system.env["DATABASE_URL"]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE identity.sessions SET expires_at = now() - interval '1 second' WHERE user_id = %s",
            (user.user_id,),
        )
    # The translator caches a key for up to 5 s; a fresh session id is never cached as valid.
    _, body = await api.post({"Command": "tags.get", "SessionID": session + "0"})
    assert body["ErrorCode"] == 99998
    import asyncio

    await asyncio.sleep(5.2)
    _, body = await api.post({"Command": "tags.get", "SessionID": session})
    assert body["ErrorCode"] == 99998


async def test_admin_login_with_key_and_with_password(api: Api, admin: Any) -> None:
    _, body = await api.post({"Command": "admin.login", "AdminAPIKey": admin.api_key})
    assert body["Success"] is True and body["AdminInfo"]["AdminID"] == admin.admin_id
    _, body = await api.post({"Command": "admin.login", "Username": "nobody", "Password": "x"})
    assert body == {"Success": False, "ErrorCode": 3, "ErrorText": "Invalid login information"}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
COMMANDS = st.sampled_from(
    [
        "tags.get",
        "tag.create",
        "tag.update",
        "tags.delete",
        "tag.assigntocampaigns",
        "tag.unassignfromcampaigns",
        "campaign.create",
        "campaign.get",
        "campaign.copy",
        "campaigns.delete",
        "campaigns.get",
        "user.login",
        "no.such.command",
    ]
)
PARAM_NAMES = st.sampled_from(
    [
        "Tag",
        "TagID",
        "Tags",
        "CampaignIDs",
        "CampaignID",
        "CampaignName",
        "Campaigns",
        "CampaignStatus",
        "RecordsPerRequest",
        "RecordsFrom",
        "OrderField",
        "OrderType",
        "SearchKeyword",
        "Username",
        "Password",
        "ResponseFormat",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(command=COMMANDS, params=st.dictionaries(PARAM_NAMES, JSON_VALUES, max_size=5))
async def test_fuzzed_requests_always_get_an_envelope_never_a_fault(
    api: Api, user: User, command: str, params: dict[str, Any]
) -> None:
    status, content_type, text = await api.raw(
        "POST", "/api.php", json={"Command": command, "APIKey": user.api_key, **params}
    )
    assert status in (200, 400), text
    if content_type == "text/xml":
        assert "<response>" in text
        return
    body = json.loads(text)
    assert isinstance(body["Success"], bool)
    assert "Traceback" not in text
    if not body["Success"]:
        assert isinstance(body["ErrorCode"], int | list) and "ErrorText" in body


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=200))
async def test_arbitrary_bytes_never_cause_a_fault(api: Api, body: bytes) -> None:
    status, content_type, text = await api.raw(
        "POST", "/api.php", data=body, headers={"Content-Type": "application/json"}
    )
    assert status in (200, 400) and content_type == "application/json"
    assert "Traceback" not in text
