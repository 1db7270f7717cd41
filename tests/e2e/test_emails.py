"""Email content end to end: email.create/get/update/delete and emails.get through the translator, and EmailService."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from herald.campaign.v1 import email_pb2, email_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.grpcutil import decode_error
from tests.conftest import Api, System, User, grpc_metadata
from tests.e2e.template_helpers import new_template

pytestmark = pytest.mark.asyncio(loop_scope="session")

INFORMATION_KEYS = {
    "EmailID",
    "EmailName",
    "Subject",
    "HTMLContent",
    "PlainContent",
    "FromName",
    "FromEmail",
    "ReplyToName",
    "ReplyToEmail",
    "PreHeaderText",
    "ContentType",
    "Mode",
    "FetchURL",
    "FetchPlainURL",
    "RelTemplateID",
    "ImageEmbedding",
    "IsEmailTemplate",
    "ExtraContent1",
    "ExtraContent2",
    "RelUserID",
    "CreatedAt",
    "UpdatedAt",
    "Options",
    "Attachments",
}
OPTION_KEYS = {
    "OpenTracking",
    "LinkTracking",
    "UTMTracking",
    "UTMSource",
    "UTMMedium",
    "UTMCampaign",
    "UTMTerm",
    "UTMContent",
    "UTMMergeTags",
}


async def create(api: Api, user: User) -> int:
    body = await api.call("email.create", user.api_key)
    assert body["Success"] is True, body
    email_id: int = body["EmailID"]
    return email_id


async def filled(api: Api, user: User, **params: Any) -> int:
    email_id = await create(api, user)
    body = await api.call(
        "email.update",
        user.api_key,
        EmailID=email_id,
        ValidateScope="Campaign",
        HTMLContent="<p>Hello</p>",
        **params,
    )
    assert body == {"Success": True, "ErrorCode": 0}, body
    return email_id


async def get(api: Api, key: str, email_id: int) -> dict[str, Any]:
    body = await api.call("email.get", key, EmailID=email_id)
    assert body["Success"] is True, body
    information: dict[str, Any] = body["EmailInformation"]
    return information


async def update_error(api: Api, user: User, **params: Any) -> tuple[Any, Any]:
    body = await api.call("email.update", user.api_key, **params)
    assert body["Success"] is False, (params, body)
    return body["ErrorCode"], body["ErrorText"]


# --- email.create / email.get -------------------------------------------------------------------------------


async def test_email_create_answers_the_new_email_id(api: Api, user: User) -> None:
    body = await api.call("email.create", user.api_key)
    assert set(body) == {"Success", "ErrorCode", "EmailID"}
    assert body["Success"] is True and body["ErrorCode"] == 0 and isinstance(body["EmailID"], int)


async def test_a_new_email_is_an_empty_shell(api: Api, user: User) -> None:
    email_id = await create(api, user)
    body = await api.call("email.get", user.api_key, EmailID=email_id)
    assert set(body) == {"Success", "ErrorCode", "EmailInformation"}
    information = body["EmailInformation"]
    assert set(information) == INFORMATION_KEYS
    assert information["EmailID"] == email_id and information["RelUserID"] == user.user_id
    assert information["EmailName"] == "" and information["HTMLContent"] == ""
    assert information["ContentType"] == "HTML" and information["Mode"] == "Empty"
    assert information["ImageEmbedding"] is False and information["IsEmailTemplate"] is False
    assert information["RelTemplateID"] == 0
    assert len(information["CreatedAt"]) == 19 and len(information["UpdatedAt"]) == 19
    assert information["Attachments"] == []
    options = information["Options"]
    assert set(options) == OPTION_KEYS
    assert options["OpenTracking"] is True and options["LinkTracking"] is True and options["UTMTracking"] is False


async def test_email_get_error_codes(api: Api, user: User) -> None:
    for params in ({}, {"EmailID": ""}, {"EmailID": "abc"}, {"EmailID": 0}, {"EmailID": -4}):
        body = await api.call("email.get", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == [1], (params, body)
        assert body["ErrorText"] == ["Missing EmailID"]
    body = await api.call("email.get", user.api_key, EmailID=987654321)
    assert body == {"Success": False, "ErrorCode": 2, "ErrorText": "Email not found or doesn't belong to user"}


async def test_email_commands_need_credentials(api: Api) -> None:
    for command in ("email.create", "email.get", "email.update", "email.delete", "emails.get"):
        status, body = await api.post({"Command": command, "EmailID": 1})
        assert status == 200 and body["ErrorCode"] == 99998, (command, body)


# --- email.update -------------------------------------------------------------------------------------------


async def test_email_update_stores_every_parameter(api: Api, system: System, user: User) -> None:
    email_id = await create(api, user)
    # Template mode with every content field given: the template is checked, and the given content kept.
    template = await new_template(system, user.user_id, subject="From the template")
    params = {
        "EmailName": "Welcome",
        "Subject": 'Hi {{ Subscriber:FirstName | "there" }}',
        "PreHeaderText": "Read me",
        "FromName": "Acme",
        "FromEmail": "news@example.com",
        "ReplyToName": "Support",
        "ReplyToEmail": "help@example.com",
        "HTMLContent": '<p>Hi %Subscriber:FirstName%</p><a href="{{ Link:Unsubscribe }}">x</a>',
        "PlainContent": "Hi {{{ Subscriber:FirstName }}}",
        "Mode": "template",
        "RelTemplateID": template.template_id,
        "FetchURL": "",
        "FetchPlainURL": "",
        "ImageEmbedding": "no",
        "IsEmailTemplate": 0,
        "ExtraContent1": "one",
        "ExtraContent2": "two",
        "OpenTracking": False,
        "LinkTracking": "0",
        "UTMTracking": True,
        "UTMSource": "newsletter",
        "UTMMedium": "email",
        "UTMCampaign": "summer",
        "UTMTerm": "t",
        "UTMContent": "c",
        "UTMMergeTags": "off",
        "SenderDomain": "",
    }
    body = await api.call("email.update", user.api_key, EmailID=email_id, ValidateScope="Campaign", **params)
    assert body == {"Success": True, "ErrorCode": 0}
    information = await get(api, user.api_key, email_id)
    for name in ("EmailName", "Subject", "PreHeaderText", "FromName", "FromEmail", "ReplyToName"):
        assert information[name] == params[name], name
    for name in ("ReplyToEmail", "HTMLContent", "PlainContent", "FetchURL", "FetchPlainURL", "ExtraContent1"):
        assert information[name] == params[name], name
    assert information["ExtraContent2"] == "two"
    assert information["Mode"] == "Template" and information["RelTemplateID"] == template.template_id
    assert information["ContentType"] == "Both"
    assert information["ImageEmbedding"] is False and information["IsEmailTemplate"] is False
    assert information["Options"] == {
        "OpenTracking": False,
        "LinkTracking": False,
        "UTMTracking": True,
        "UTMSource": "newsletter",
        "UTMMedium": "email",
        "UTMCampaign": "summer",
        "UTMTerm": "t",
        "UTMContent": "c",
        "UTMMergeTags": False,
    }


async def test_email_update_changes_only_what_is_sent(api: Api, user: User) -> None:
    email_id = await filled(api, user, Subject="First", FromEmail="a@example.com")
    body = await api.call("email.update", user.api_key, EmailID=email_id, ValidateScope="OptIn", Subject="Second")
    assert body == {"Success": True, "ErrorCode": 0}
    information = await get(api, user.api_key, email_id)
    assert information["Subject"] == "Second" and information["FromEmail"] == "a@example.com"
    assert information["HTMLContent"] == "<p>Hello</p>"
    # A parameter sent empty clears its field.
    await api.call("email.update", user.api_key, EmailID=email_id, ValidateScope="autoresponder", FromEmail="")
    assert (await get(api, user.api_key, email_id))["FromEmail"] == ""


async def test_the_content_type_follows_the_content(api: Api, user: User) -> None:
    email_id = await filled(api, user)
    assert (await get(api, user.api_key, email_id))["ContentType"] == "HTML"
    await api.call(
        "email.update", user.api_key, EmailID=email_id, ValidateScope="Campaign", HTMLContent="", PlainContent="x"
    )
    assert (await get(api, user.api_key, email_id))["ContentType"] == "Plain"


async def test_email_update_takes_form_fields_and_an_options_object(api: Api, user: User) -> None:
    email_id = await create(api, user)
    status, body = await api.form(
        [
            ("Command", "Email.Update"),
            ("apikey", user.api_key),
            ("emailid", str(email_id)),
            ("validatescope", "campaign"),
            ("HTMLContent", "<p>x</p>"),
            ("Options[UTMTracking]", "1"),
            ("Options[UTMSource]", "src"),
            ("Options[UTMMedium]", "med"),
            ("Options[UTMCampaign]", "camp"),
            ("Options[OpenTracking]", "false"),
            ("LinkTracking", "no"),
        ]
    )
    assert status == 200 and body == {"Success": True, "ErrorCode": 0}, body
    options = (await get(api, user.api_key, email_id))["Options"]
    assert options["UTMTracking"] is True and options["UTMSource"] == "src" and options["UTMCampaign"] == "camp"
    assert options["OpenTracking"] is False and options["LinkTracking"] is False
    # A JSON body may send Options too (the shape email.get answers); flat parameters win.
    body = await api.call(
        "email.update",
        user.api_key,
        EmailID=email_id,
        ValidateScope="Campaign",
        Options={"UTMSource": "from-options", "OpenTracking": True},
        UTMSource="flat",
    )
    assert body == {"Success": True, "ErrorCode": 0}
    options = (await get(api, user.api_key, email_id))["Options"]
    assert options["UTMSource"] == "flat" and options["OpenTracking"] is True


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"EmailID": None}, [1]),
        ({"EmailID": "abc"}, [1]),
        ({"Mode": "Fancy"}, [4]),
        ({"Mode": 3}, [4]),
        ({"Mode": "Template"}, [5]),
        ({"Mode": "Template", "RelTemplateID": "x"}, [5]),
        ({"FromEmail": "not-an-address"}, [6]),
        ({"FromEmail": True}, [6]),
        ({"ReplyToEmail": "a@b@c"}, [7]),
        ({"HTMLContent": "   "}, [8]),
        ({"ValidateScope": None}, [9]),
        ({"ValidateScope": ""}, [9]),
        ({"ValidateScope": "Newsletter"}, [10]),
        ({"UTMTracking": 1, "UTMMedium": "m", "UTMCampaign": "c"}, [18]),
        ({"UTMTracking": 1, "UTMSource": "s", "UTMCampaign": "c"}, [19]),
        ({"UTMTracking": 1, "UTMSource": "s", "UTMMedium": "m"}, [20]),
        ({"UTMTracking": "true"}, [18, 19, 20]),
        ({"Subject": "Hi {{ Subscriber:FirstName"}, [21]),
        ({"HTMLContent": "<p>{{ Nobody:Field }}</p>"}, [21]),
        ({"Subject": "%Link:Unsubscribe%"}, [21]),
        ({"EmailName": "x" * 256}, [21]),
        ({"EmailName": {"a": 1}}, [21]),
        ({"Options": "not json"}, [21]),
        # Issue 14: settings Herald does not implement are refused unless left at their defaults.
        ({"FetchURL": "https://example.com/a.html"}, [21]),
        ({"FetchPlainURL": "https://example.com/a.txt"}, [21]),
        ({"ImageEmbedding": "yes"}, [21]),
        ({"IsEmailTemplate": 1}, [21]),
        ({"UTMMergeTags": True}, [21]),
        ({"Options": {"UTMMergeTags": "on"}}, [21]),
        ({"SenderDomain": "mail.example.com"}, [21]),
        ({"SenderDomain": ["mail.example.com"]}, [21]),
    ],
)
async def test_email_update_error_codes(api: Api, user: User, params: dict[str, Any], code: list[int]) -> None:
    email_id = await filled(api, user)
    request: dict[str, Any] = {"EmailID": email_id, "ValidateScope": "Campaign", **params}
    body = await api.call("email.update", user.api_key, **{k: v for k, v in request.items() if v is not None})
    assert body["Success"] is False and body["ErrorCode"] == code, (params, body)
    assert isinstance(body["ErrorText"], list) and len(body["ErrorText"]) == len(code)


async def test_unsupported_settings_answer_21_saying_so(api: Api, user: User) -> None:
    email_id = await filled(api, user)
    codes, texts = await update_error(
        api, user, EmailID=email_id, ValidateScope="Campaign", ImageEmbedding=True, FetchURL="https://example.com/"
    )
    assert codes == [21] and "not supported" in texts[0], texts


async def test_sender_domain_must_be_a_sending_domain_of_the_owner_with_the_from_address_at_it(
    api: Api, system: System, user: User, make_user: Any
) -> None:
    """Issue 14: SenderDomain is checked as the legacy sender-domain check does: one of the owner's DKIM sending
    domains (so the email's messages are signed for it), with the From address at it; else 21 and nothing changes."""
    stranger = await make_user()
    mine, theirs = f"mail-{user.user_id}-a.example", f"mail-{stranger.user_id}-b.example"
    channel = grpc.aio.insecure_channel(system.grpc_target("delivery"))
    async with channel:
        delivery = delivery_pb2_grpc.DeliveryServiceStub(channel)
        for owner, domain in ((user, mine), (stranger, theirs)):
            await delivery.CreateSendingDomain(
                delivery_pb2.CreateSendingDomainRequest(domain=domain, selector="s1"),
                metadata=grpc_metadata(system, owner.user_id),
                wait_for_ready=True,
                timeout=60,
            )
    email_id = await filled(api, user, FromEmail=f"news@{mine}", Subject="First")
    update = {"EmailID": email_id, "ValidateScope": "Campaign"}
    # The stored From is at the domain (a FromEmail in the same call would count instead); case and a final dot
    # do not matter.
    body = await api.call("email.update", user.api_key, **update, SenderDomain=mine.upper() + ".", Subject="Two")
    assert body == {"Success": True, "ErrorCode": 0}, body
    for params, text in (
        ({"SenderDomain": theirs, "FromEmail": f"news@{theirs}"}, f"SenderDomain {theirs} is not one of your"),
        ({"SenderDomain": "nowhere.example"}, "SenderDomain nowhere.example is not one of your"),
        ({"SenderDomain": mine, "FromEmail": "news@elsewhere.example"}, f"SenderDomain {mine} needs a FromEmail"),
        ({"SenderDomain": "not a domain"}, "SenderDomain must be a domain name"),
    ):
        codes, texts = await update_error(api, user, **update, Subject="Refused", **params)
        assert codes == [21] and texts[0].startswith(text), (params, texts)
    information = await get(api, user.api_key, email_id)
    assert (information["Subject"], information["FromEmail"]) == ("Two", f"news@{mine}")
    # Another user's email is not found (3), whatever the SenderDomain.
    other = await filled(api, stranger, FromEmail=f"news@{theirs}")
    body = await api.call("email.update", user.api_key, EmailID=other, ValidateScope="Campaign", SenderDomain=mine)
    assert body["ErrorCode"] == 3, body


async def test_an_empty_sender_domain_is_no_sender_domain(api: Api, user: User) -> None:
    """Issue 14: an empty SenderDomain checks nothing and the rest is applied."""
    email_id = await filled(api, user)
    body = await api.call(
        "email.update", user.api_key, EmailID=email_id, ValidateScope="Campaign", SenderDomain=" ", Subject="Kept"
    )
    assert body["Success"] is True, body
    got = await api.call("email.get", user.api_key, EmailID=email_id)
    assert got["EmailInformation"]["Subject"] == "Kept", got


async def test_email_update_names_every_problem_at_once(api: Api, user: User) -> None:
    email_id = await filled(api, user)
    # Found by the service alone.
    codes, texts = await update_error(
        api, user, EmailID=email_id, ValidateScope="Campaign", FromEmail="x", ReplyToEmail="y", HTMLContent=""
    )
    assert codes == [6, 7, 8] and len(texts) == 3
    # Found by the translator (Mode, ValidateScope) and by the service (FromEmail, tags) together.
    codes, _ = await update_error(
        api, user, EmailID=email_id, ValidateScope="Nope", Mode="Fancy", FromEmail="x", Subject="{{ X:Y }}"
    )
    assert codes == [4, 6, 10, 21]
    codes, _ = await update_error(api, user, FromEmail="x")
    assert codes == [1, 6, 9]


async def test_email_update_on_an_unknown_email_answers_3(api: Api, user: User) -> None:
    codes, texts = await update_error(api, user, EmailID=987654321, ValidateScope="Campaign", Subject="x")
    assert codes == 3 and texts == "Email not found or doesn't belong to user"
    # A malformed parameter is a parameter problem first (RULINGS 2: a list).
    codes, _ = await update_error(api, user, EmailID=987654321, ValidateScope="Campaign", Mode="Fancy")
    assert codes == [4]


async def test_a_failed_update_changes_nothing(api: Api, user: User) -> None:
    email_id = await filled(api, user, Subject="Kept")
    await update_error(api, user, EmailID=email_id, ValidateScope="Campaign", Subject="New", FromEmail="bad")
    await update_error(api, user, EmailID=email_id, ValidateScope="Campaign", Subject="New", Mode="Fancy")
    assert (await get(api, user.api_key, email_id))["Subject"] == "Kept"


# --- email.delete -------------------------------------------------------------------------------------------


async def test_email_delete_is_soft_and_hides_the_email(api: Api, user: User) -> None:
    email_id = await filled(api, user)
    body = await api.call("email.delete", user.api_key, EmailID=email_id)
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    assert (await api.call("email.get", user.api_key, EmailID=email_id))["ErrorCode"] == 2
    listed = await api.call("emails.get", user.api_key)
    assert email_id not in [row["EmailID"] for row in listed["Emails"]]
    assert (await api.call("emails.get", user.api_key, EmailIDs=str(email_id)))["TotalEmailCount"] == 0
    codes, _ = await update_error(api, user, EmailID=email_id, ValidateScope="Campaign")
    assert codes == 3


async def test_email_delete_error_codes(api: Api, user: User) -> None:
    for params in ({}, {"EmailID": "abc"}, {"EmailID": 0}):
        body = await api.call("email.delete", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == [1], (params, body)
    email_id = await create(api, user)
    await api.call("email.delete", user.api_key, EmailID=email_id)
    body = await api.call("email.delete", user.api_key, EmailID=email_id)
    assert body == {"Success": False, "ErrorCode": 2, "ErrorText": "Email not found or doesn't belong to user"}


# --- emails.get ---------------------------------------------------------------------------------------------


async def test_emails_get_lists_raw_rows_by_name(api: Api, user: User) -> None:
    ids = {}
    for name in ("charlie", "Alpha", "bravo"):
        ids[name] = await filled(api, user, EmailName=name)
    body = await api.call("emails.get", user.api_key)
    assert set(body) == {"Success", "ErrorCode", "TotalEmailCount", "Emails"}
    assert body["TotalEmailCount"] == 3
    assert [row["EmailName"] for row in body["Emails"]] == ["Alpha", "bravo", "charlie"]
    row = body["Emails"][0]
    assert set(row) == INFORMATION_KEYS - {"Attachments"}
    assert isinstance(row["Options"], str) and json.loads(row["Options"])["OpenTracking"] is True
    assert row["RelUserID"] == user.user_id and row["EmailID"] == ids["Alpha"]


async def test_emails_get_with_ids_answers_the_email_get_shape(api: Api, user: User, make_user: Any) -> None:
    mine = [await filled(api, user) for _ in range(2)]
    other = await create(api, await make_user())
    csv = f" {mine[0]}, ,abc,{other},{mine[1]},{mine[0]},-3,987654321"
    body = await api.call("emails.get", user.api_key, EmailIDs=csv)
    assert body["Success"] is True and body["TotalEmailCount"] == 2
    assert sorted(row["EmailID"] for row in body["Emails"]) == sorted(mine)
    assert all(set(row) == INFORMATION_KEYS and isinstance(row["Options"], dict) for row in body["Emails"])
    listed = await api.call("emails.get", user.api_key, EmailIDs=[mine[1], str(mine[0])])
    assert listed["TotalEmailCount"] == 2


async def test_emails_get_fields_pick_columns(api: Api, user: User) -> None:
    email_id = await filled(api, user, EmailName="picked", Subject="s")
    body = await api.call("emails.get", user.api_key, Fields="emailname, Subject,Nonsense")
    assert body["Emails"] == [{"EmailID": email_id, "EmailName": "picked", "Subject": "s"}]
    body = await api.call("emails.get", user.api_key, EmailIDs=str(email_id), Fields=["Attachments", "bogus"])
    assert body["Emails"] == [{"EmailID": email_id, "Attachments": []}]
    body = await api.call("emails.get", user.api_key, Fields=" , ")
    assert set(body["Emails"][0]) == INFORMATION_KEYS - {"Attachments"}
    status, form = await api.form(
        {"Command": "emails.get", "APIKey": user.api_key, "EmailIDs": str(email_id), "Fields": "Mode"}
    )
    assert status == 200 and form["Emails"] == [{"EmailID": email_id, "Mode": "Empty"}]


async def test_emails_get_error_codes(api: Api, user: User) -> None:
    for value in ("abc", ",,", "0,-1", "x,y"):
        body = await api.call("emails.get", user.api_key, EmailIDs=value)
        assert body["Success"] is False and body["ErrorCode"] == [1], (value, body)
    too_many = ",".join(str(n) for n in range(1, 102))
    body = await api.call("emails.get", user.api_key, EmailIDs=too_many)
    assert body["Success"] is False and body["ErrorCode"] == [3]
    exactly = ",".join(str(n) for n in range(1, 101))
    assert (await api.call("emails.get", user.api_key, EmailIDs=exactly))["Success"] is True


async def test_emails_get_of_a_new_user_is_empty(api: Api, user: User) -> None:
    body = await api.call("emails.get", user.api_key)
    assert body == {"Success": True, "ErrorCode": 0, "TotalEmailCount": 0, "Emails": []}


# --- ownership ----------------------------------------------------------------------------------------------


async def test_another_users_email_is_not_found(api: Api, user: User, make_user: Any) -> None:
    email_id = await filled(api, user, Subject="mine")
    intruder = await make_user()
    assert (await api.call("email.get", intruder.api_key, EmailID=email_id))["ErrorCode"] == 2
    codes, _ = await update_error(api, intruder, EmailID=email_id, ValidateScope="Campaign", Subject="theirs")
    assert codes == 3
    assert (await api.call("email.delete", intruder.api_key, EmailID=email_id))["ErrorCode"] == 2
    assert (await api.call("emails.get", intruder.api_key))["Emails"] == []
    assert (await api.call("emails.get", intruder.api_key, EmailIDs=str(email_id)))["TotalEmailCount"] == 0
    assert (await get(api, user.api_key, email_id))["Subject"] == "mine"


async def test_an_admin_key_may_read_and_update_any_users_email(api: Api, user: User, admin: Any) -> None:
    email_id = await filled(api, user, Subject="by the user")
    information = await get(api, admin.api_key, email_id)
    assert information["RelUserID"] == user.user_id
    body = await api.call("email.update", admin.api_key, EmailID=email_id, ValidateScope="Campaign", Subject="x")
    assert body == {"Success": True, "ErrorCode": 0}
    assert (await get(api, user.api_key, email_id))["Subject"] == "x"
    listed = await api.call("emails.get", admin.api_key, EmailIDs=str(email_id))
    assert [row["RelUserID"] for row in listed["Emails"]] == [user.user_id]
    body = await api.call("email.delete", admin.api_key, EmailID=email_id)
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}


async def test_an_admin_key_cannot_create_an_email(api: Api, admin: Any) -> None:
    body = await api.call("email.create", admin.api_key)
    assert body["Success"] is False and body["ErrorCode"] == 99999


# --- EmailService over gRPC ---------------------------------------------------------------------------------


async def test_email_service_is_served_next_to_campaigns(system: System, user: User) -> None:
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        names: list[str] = []
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([request])
        ):
            names = [s.name for s in response.list_services_response.service]
        assert "herald.campaign.v1.EmailService" in names
        stub = email_pb2_grpc.EmailServiceStub(channel)
        metadata = grpc_metadata(system, user.user_id)
        email = await stub.CreateEmail(email_pb2.CreateEmailRequest(), metadata=metadata)
        update = email_pb2.UpdateEmailRequest(
            email=email_pb2.Email(
                email_id=email.email_id,
                plain_content="Hi",
                content_type=email_pb2.CONTENT_TYPE_PLAIN,
                utm=email_pb2.UtmTracking(source="s"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["plain_content", "content_type", "utm.source"]),
            validate_scope=email_pb2.VALIDATE_SCOPE_CAMPAIGN,
        )
        updated = await stub.UpdateEmail(update, metadata=metadata)
        assert updated.content_type == email_pb2.CONTENT_TYPE_PLAIN and updated.utm.source == "s"
        assert updated.open_tracking is True and updated.owner_user_id == user.user_id


async def test_email_service_errors_carry_reasons(system: System, user: User) -> None:
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        stub = email_pb2_grpc.EmailServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateEmail(
                email_pb2.CreateEmailRequest(), metadata=grpc_metadata(system, 0, is_admin=True)
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert decode_error(raised.value).reason == "ADMIN_CANNOT_OWN_EMAILS"

        metadata = grpc_metadata(system, user.user_id)
        email = await stub.CreateEmail(email_pb2.CreateEmailRequest(), metadata=metadata)
        bad = email_pb2.UpdateEmailRequest(
            email=email_pb2.Email(email_id=email.email_id, from_email="nope"),
            update_mask=field_mask_pb2.FieldMask(paths=["from_email", "owner_user_id"]),
            validate_scope=email_pb2.VALIDATE_SCOPE_CAMPAIGN,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.UpdateEmail(bad, metadata=metadata)
        failure = decode_error(raised.value)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [(v.field, v.reason) for v in failure.violations] == [
            ("from_email", "FROM_EMAIL_INVALID"),
            ("update_mask", "UPDATE_MASK_INVALID"),
            ("html_content", "EMAIL_CONTENT_REQUIRED"),
        ]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetEmail(
                email_pb2.GetEmailRequest(email_id=email.email_id), metadata=grpc_metadata(system, 1)
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert decode_error(raised.value).reason == "EMAIL_NOT_FOUND"
