"""Custom fields and the public subscription form end to end: the legacy commands, gRPC with tenant isolation,
values checked on subscriber.create and subscriber.subscribe, and the form's flow down to the SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from services.common.grpcutil import decode_error
from tests.conftest import Api, System, User, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    create_campaign,
    create_email,
    create_list,
    new_domain,
    ok,
    send,
    wait_for_status,
)
from tests.e2e.edge_helpers import api_from, own_translator
from translator.commands.audience import RATE_LIMIT

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSCRIBED = {"SubscriptionDate": "2025-01-02", "SubscriptionIP": "203.0.113.5"}
FORM_IP = "198.51.100.20"


async def new_list(api: Api, user: User, **extra: Any) -> int:
    list_id: int = (await ok(api, "list.create", user.api_key, SubscriberListName="Form list", **extra))["ListID"]
    return list_id


async def new_field(api: Api, user: User, list_id: int, name: str, **extra: Any) -> int:
    settings = {"FieldType": "Single line", **extra}
    body = await ok(api, "customfield.create", user.api_key, SubscriberListID=list_id, FieldName=name, **settings)
    field_id: int = body["CustomFieldID"]
    return field_id


async def error_of(api: Api, user: User, command: str, **params: Any) -> Any:
    body = await api.call(command, user.api_key, **params)
    assert body["Success"] is False and body["ErrorText"], (params, body)
    return body["ErrorCode"]


async def subscribe(api: Api, **params: Any) -> dict[str, Any]:
    """A subscription form's call: no credentials."""
    status, body = await api.post({"Command": "subscriber.subscribe", **params})
    assert status == 200, body
    answer: dict[str, Any] = body
    return answer


async def info_of(api: Api, user: User, list_id: int, address: str) -> dict[str, Any]:
    body = await ok(api, "subscriber.get", user.api_key, ListID=list_id, EmailAddress=address)
    info: dict[str, Any] = body["SubscriberInformation"]
    return info


# --- the legacy commands --------------------------------------------------------------------------------------


async def test_custom_fields_are_created_listed_updated_and_deleted_with_their_values(
    api: Api, user: User, make_user: Any
) -> None:
    list_id = await new_list(api, user)
    body = await api.call(
        "CustomField.Create",
        user.api_key,
        SubscriberListID=list_id,
        FieldName="Plan",
        FieldType="drop down",
        OptionLabel=["Basic plan", "Pro plan"],
        OptionValue=["basic", "pro"],
        OptionSelected=["pro"],
        IsRequired="Yes",
        Visibility="Public",
        MergeTagAlias="plan",
    )
    assert set(body) == {"Success", "ErrorCode", "ErrorText", "CustomFieldID"} and body["Success"] is True, body
    plan = body["CustomFieldID"]
    region = await new_field(api, user, list_id, "Region", IsGlobal="Yes", DefaultValue="EU")
    listed = await ok(api, "customfields.get", user.api_key, SubscriberListID=list_id)
    assert set(listed) == {"Success", "ErrorCode", "ErrorText", "TotalFieldCount", "CustomFields"}
    assert [row["CustomFieldID"] for row in listed["CustomFields"]] == [plan]
    [row] = listed["CustomFields"]
    assert row == {
        "CustomFieldID": plan,
        "RelListID": list_id,
        "RelOwnerUserID": user.user_id,
        "FieldName": "Plan",
        "FieldType": "Drop down",
        "FieldDefaultValue": "",
        "ValidationMethod": "Disabled",
        "ValidationRule": "",
        "MergeTagAlias": "plan",
        "IsRequired": "Yes",
        "IsUnique": "No",
        "Visibility": "Public",
        "IsGlobal": "No",
        "Options": [
            {"Label": "Basic plan", "Value": "basic", "Selected": False},
            {"Label": "Pro plan", "Value": "pro", "Selected": True},
        ],
        "Years": "",
        "PersonalizationTags": [f"%Subscriber:CustomField{plan}%", "%Subscriber:plan%"],
    }
    with_global = await ok(
        api,
        "customfields.get",
        user.api_key,
        SubscriberListID=list_id,
        ReturnGlobalCustomFields=True,
        OrderField="CustomFieldID",
        OrderType="DESC",
    )
    assert [(r["CustomFieldID"], r["IsGlobal"], r["RelListID"]) for r in with_global["CustomFields"]] == [
        (region, "Yes", 0),
        (plan, "No", list_id),
    ]

    # An update that does not send OptionLabel keeps the options (5.9.3).
    await ok(api, "customfield.update", user.api_key, CustomFieldID=plan, FieldName="Tier", FieldType="Drop down")
    [row] = (await ok(api, "customfields.get", user.api_key, SubscriberListID=list_id))["CustomFields"]
    assert row["FieldName"] == "Tier" and [o["Value"] for o in row["Options"]] == ["basic", "pro"]
    assert row["IsRequired"] == "Yes" and row["MergeTagAlias"] == "plan"

    # Deleting a field deletes every subscriber's value of it; another user's field is passed over.
    stranger = await make_user()
    theirs = await new_field(api, stranger, await new_list(api, stranger), "Theirs")
    await ok(
        api,
        "subscriber.create",
        user.api_key,
        ListID=list_id,
        EmailAddress="v@example.com",
        CustomFields={str(plan): "pro", str(region): "APAC"},
        **SUBSCRIBED,
    )
    body = await api.call("customfields.delete", user.api_key, CustomFields=f"{plan},{theirs}")
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    assert (await info_of(api, user, list_id, "v@example.com"))["CustomFields"] == {str(region): "APAC"}
    assert (await ok(api, "customfields.get", user.api_key, SubscriberListID=list_id))["TotalFieldCount"] == 0
    assert await error_of(api, user, "customfields.delete") == [1]
    assert await error_of(api, user, "customfields.delete", CustomFields="1,x") == [1]


async def test_customfield_create_and_update_answer_every_problem_with_its_code(
    api: Api, user: User, make_user: Any
) -> None:
    list_id = await new_list(api, user)
    foreign_list = await new_list(api, await make_user())
    create = {"SubscriberListID": list_id, "FieldName": "F", "FieldType": "Single line"}
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, [1, 2, 3]),
        ({"SubscriberListID": list_id}, [2, 3]),
        ({**create, "PresetName": "Country"}, [5]),
        ({**create, "FieldType": "Slider"}, [7]),
        ({**create, "DataType": "datetime"}, [7]),
        ({**create, "SubscriberListID": foreign_list}, [8]),
        ({**create, "SubscriberListID": "x"}, [8]),
        ({**create, "ValidationMethod": "Custom"}, [4]),
        ({**create, "ValidationMethod": "Custom", "ValidationRule": "(a)\\1"}, [15]),
        ({**create, "ValidationMethod": "Psychic"}, [13]),
        ({**create, "Visibility": "Everyone"}, [9]),
        ({**create, "IsRequired": "maybe", "IsUnique": "perhaps", "IsGlobal": "sometimes"}, [10, 11, 12]),
        ({**create, "FieldType": "Drop down"}, [16]),
        ({**create, "DefaultValue": "abc", "ValidationMethod": "Numbers"}, [16]),
        ({**create, "FieldName": "x" * 300}, [17]),
        ({**create, "MergeTagAlias": "first name"}, [1001]),
        ({**create, "MergeTagAlias": "EmailAddress"}, [1002]),
        ({"SubscriberListID": list_id, "FieldType": "Slider", "MergeTagAlias": "a b"}, [2, 7, 1001]),
    ]
    for params, codes in cases:
        assert await error_of(api, user, "customfield.create", **params) == codes, params
    # DataType is the simplified spelling: "number" is a Single line of Numbers.
    number = await new_field(api, user, list_id, "Count", FieldType="", DataType="number", MergeTagAlias="count")
    [row] = (await ok(api, "customfields.get", user.api_key, SubscriberListID=list_id))["CustomFields"]
    assert (row["CustomFieldID"], row["FieldType"], row["ValidationMethod"]) == (number, "Single line", "Numbers")
    # An alias is unique among the fields one list sees, case-insensitively.
    assert await error_of(api, user, "customfield.create", **create, MergeTagAlias="COUNT") == [1000]
    assert await error_of(api, user, "customfield.create", **create, MergeTagAlias="count", IsGlobal="Yes") == [
        1000
    ]
    other_list = await new_list(api, user)
    await new_field(api, user, other_list, "Count", MergeTagAlias="count")  # another list: fine

    update = {"CustomFieldID": number, "FieldName": "Count", "FieldType": "Single line"}
    foreign_field = await new_field(api, (stranger := await make_user()), await new_list(api, stranger), "F")
    update_cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, [1, 2, 3]),
        ({**update, "CustomFieldID": foreign_field}, [6]),
        ({**update, "CustomFieldID": "x"}, [6]),
        ({**update, "FieldType": "Slider"}, [7]),
        ({**update, "ValidationMethod": "Psychic"}, [8]),
        ({**update, "Visibility": "Everyone"}, [9]),
        ({**update, "IsUnique": "perhaps"}, [11]),
        ({**update, "SubscriberListID": foreign_list}, [13]),
        ({**update, "SubscriberListID": other_list}, [14]),
        ({**update, "FieldName": "", "MergeTagAlias": "Count!"}, [2, 1001]),
    ]
    for params, codes in update_cases:
        assert await error_of(api, user, "customfield.update", **params) == codes, params
    # Its own list, or a value that is no list ID, is accepted (and passed over).
    await ok(api, "customfield.update", user.api_key, **update, SubscriberListID=list_id)
    await ok(api, "customfield.update", user.api_key, **update, SubscriberListID="abc")
    # Made global, its alias would meet the other list's field of the same alias.
    assert await error_of(api, user, "customfield.update", **update, IsGlobal="Yes") == [1000]
    await ok(api, "customfield.update", user.api_key, **update, IsGlobal="Yes", MergeTagAlias="")
    assert await error_of(api, user, "customfield.update", **update, IsGlobal="No") == [12]
    assert await error_of(api, user, "customfields.get") == [1]
    assert await error_of(api, user, "customfields.get", SubscriberListID=foreign_list) == [2]


# --- gRPC, tenant isolation -----------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def stub(system: System) -> AsyncIterator[audience_pb2_grpc.AudienceServiceStub]:
    async with grpc.aio.insecure_channel(system.grpc_target("audience")) as channel:
        yield audience_pb2_grpc.AudienceServiceStub(channel)


async def failure_of(call: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return decode_error(raised.value)


async def test_grpc_custom_field_crud_sees_only_the_callers_fields(
    system: System, stub: audience_pb2_grpc.AudienceServiceStub, make_user: Any
) -> None:
    owner, stranger = await make_user(), await make_user()
    mine, theirs = grpc_metadata(system, owner.user_id), grpc_metadata(system, stranger.user_id)
    list_id = (await stub.CreateList(audience_pb2.CreateListRequest(name="grpc"), metadata=mine)).list_id
    created = await stub.CreateCustomField(
        audience_pb2.CreateCustomFieldRequest(
            custom_field=audience_pb2.CustomField(
                list_id=list_id,
                name="Colour",
                type=audience_pb2.CUSTOM_FIELD_TYPE_CHECKBOXES,
                options=[
                    audience_pb2.CustomFieldOption(value="red"),
                    audience_pb2.CustomFieldOption(value="blue"),
                ],
                merge_tag_alias="colour",
            )
        ),
        metadata=mine,
    )
    assert created.custom_field_id > 0 and created.owner_user_id == owner.user_id and created.list_id == list_id
    assert [o.label for o in created.options] == ["red", "blue"]  # labels default to the values
    assert created.visibility == audience_pb2.CUSTOM_FIELD_VISIBILITY_USER_ONLY
    field_id = created.custom_field_id
    assert (
        await stub.GetCustomField(audience_pb2.GetCustomFieldRequest(custom_field_id=field_id), metadata=mine)
        == created
    )

    # The stranger sees nothing of it: another user's field and list are not found, and a delete passes them over.
    for call in (
        stub.GetCustomField(audience_pb2.GetCustomFieldRequest(custom_field_id=field_id), metadata=theirs),
        stub.UpdateCustomField(
            audience_pb2.UpdateCustomFieldRequest(
                custom_field=audience_pb2.CustomField(custom_field_id=field_id, name="x")
            ),
            metadata=theirs,
        ),
        stub.ListCustomFields(audience_pb2.ListCustomFieldsRequest(list_id=list_id), metadata=theirs),
        stub.CreateCustomField(
            audience_pb2.CreateCustomFieldRequest(
                custom_field=audience_pb2.CustomField(list_id=list_id, name="x")
            ),
            metadata=theirs,
        ),
    ):
        failure = await failure_of(call)
        assert failure.code == grpc.StatusCode.NOT_FOUND, failure
        assert failure.reason in ("CUSTOM_FIELD_NOT_FOUND", "LIST_NOT_FOUND"), failure
    await stub.DeleteCustomFields(
        audience_pb2.DeleteCustomFieldsRequest(custom_field_ids=[field_id]), metadata=theirs
    )
    listed = await stub.ListCustomFields(audience_pb2.ListCustomFieldsRequest(list_id=list_id), metadata=mine)
    assert [f.custom_field_id for f in listed.custom_fields] == [field_id]
    # Nor may the stranger store a value under it on a list of their own.
    their_list = (await stub.CreateList(audience_pb2.CreateListRequest(name="x"), metadata=theirs)).list_id
    failure = await failure_of(
        stub.CreateSubscriber(
            audience_pb2.CreateSubscriberRequest(
                subscriber=audience_pb2.Subscriber(
                    list_id=their_list, email_address="s@example.com", custom_fields={str(field_id): "red"}
                )
            ),
            metadata=theirs,
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CUSTOM_FIELD_NOT_FOUND")

    # An update with a mask changes what it names; the rest stays.
    updated = await stub.UpdateCustomField(
        audience_pb2.UpdateCustomFieldRequest(
            custom_field=audience_pb2.CustomField(custom_field_id=field_id, name="Colours", required=True),
            update_mask={"paths": ["name", "required"]},
        ),
        metadata=mine,
    )
    assert (updated.name, updated.required, updated.merge_tag_alias, len(updated.options)) == (
        "Colours",
        True,
        "colour",
        2,
    )
    # The permission table holds: a token without CustomField.Create may list but not create.
    narrow = grpc_metadata(system, owner.user_id, permissions=["CustomFields.Get"])
    await stub.ListCustomFields(audience_pb2.ListCustomFieldsRequest(list_id=list_id), metadata=narrow)
    failure = await failure_of(
        stub.CreateCustomField(
            audience_pb2.CreateCustomFieldRequest(
                custom_field=audience_pb2.CustomField(list_id=list_id, name="y")
            ),
            metadata=narrow,
        )
    )
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    await stub.DeleteCustomFields(
        audience_pb2.DeleteCustomFieldsRequest(custom_field_ids=[field_id]), metadata=mine
    )
    failure = await failure_of(
        stub.GetCustomField(audience_pb2.GetCustomFieldRequest(custom_field_id=field_id), metadata=mine)
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND


# --- subscriber.create ---------------------------------------------------------------------------------------


async def test_subscriber_create_checks_values_against_the_definitions_and_enforces_rules_when_asked(
    api: Api, user: User, make_user: Any
) -> None:
    list_id = await new_list(api, user)
    company = await new_field(api, user, list_id, "Company", IsRequired="Yes")
    code = await new_field(api, user, list_id, "Code", IsUnique="Yes", ValidationMethod="Numbers")
    plan = await new_field(api, user, list_id, "Plan", FieldType="Drop down", OptionLabel=["basic", "pro"])
    city = await new_field(api, user, list_id, "City", DefaultValue="Berlin")
    stranger = await make_user()
    foreign = await new_field(api, stranger, await new_list(api, stranger), "Theirs")
    base = {"ListID": list_id, **SUBSCRIBED}

    async def create_code(address: str, custom: dict[int | str, str], **extra: Any) -> Any:
        body = await api.call(
            "subscriber.create",
            user.api_key,
            EmailAddress=address,
            CustomFields={str(k): v for k, v in custom.items()},
            **base,
            **extra,
        )
        return body["ErrorCode"] if body["Success"] is False else 0

    # Every key must name a field of the list; another user's field id is unknown here.
    assert await create_code("a@example.com", {foreign: "x"}) == 17
    assert await create_code("a@example.com", {999999999: "x"}) == 17
    assert await create_code("a@example.com", {"nickname": "x"}) == 17
    assert await create_code("a@example.com", {plan: "gold"}) == 17
    # Without EnforceRequiredFields the field's own rules are not checked (the legacy default).
    assert await create_code("lax@example.com", {code: "abc"}) == 0
    enforce = {"EnforceRequiredFields": True}
    assert await create_code("b@example.com", {code: "12"}, **enforce) == 26  # Company omitted
    assert await create_code("b@example.com", {company: " ", code: "12"}, **enforce) == 26
    assert await create_code("b@example.com", {company: "Acme", code: "x12"}, **enforce) == 28
    await ok(
        api,
        "subscriber.create",
        user.api_key,
        EmailAddress="holder@example.com",
        CustomFields={str(company): "Acme", str(code): "12"},
        **base,
        **enforce,
    )
    assert await create_code("b@example.com", {company: "Acme", code: " 12 "}, **enforce) == 27
    body = await api.call(
        "subscriber.create",
        user.api_key,
        EmailAddress="b@example.com",
        CustomFields={str(company): "Acme", str(code): "x"},
        **base,
        **enforce,
    )
    assert body["Errors"] == [{"Code": 28, "Message": body["ErrorText"]}], body
    # Precedence per field: required, then validation, then uniqueness; the lowest field id first.
    assert await create_code("b@example.com", {company: "", code: "x"}, **enforce) == 26
    info = await info_of(api, user, list_id, "holder@example.com")
    # A new subscriber gets the list fields' defaults for the values not given.
    assert info["CustomFields"] == {str(company): "Acme", str(code): "12", str(city): "Berlin"}
    assert info[f"CustomField{city}"] == "Berlin"
    # The holder updating itself keeps its own unique value.
    await ok(
        api,
        "subscriber.create",
        user.api_key,
        EmailAddress="holder@example.com",
        UpdateIfDuplicate=True,
        CustomFields={str(company): "Acme", str(code): "12", str(plan): "pro"},
        **base,
        **enforce,
    )


# --- subscriber.subscribe -------------------------------------------------------------------------------------


async def test_subscribe_without_credentials_adds_the_address_as_the_lists_opt_in_mode_says(
    system: System, user: User
) -> None:
    async with api_from(system.base_url, "127.0.0.51") as form:
        single = await new_list(form, user)
        double = await new_list(form, user, OptInMode="Double")
        company = await new_field(form, user, single, "Company", MergeTagAlias="company", Visibility="Public")
        internal = await new_field(form, user, single, "Score", DefaultValue="0")
        body = await subscribe(
            form,
            ListID=single,
            EmailAddress="Ann@Example.com",
            IPAddress=FORM_IP,
            **{f"CustomField{company}": "Acme"},
        )
        assert set(body) == {"Success", "ErrorCode", "SubscriberID", "RedirectURL", "Subscriber"}, body
        assert body["Subscriber"] == {
            "SubscriberID": body["SubscriberID"],
            "EmailAddress": "Ann@example.com",
            "SubscriptionStatus": "Subscribed",
        }
        info = await info_of(form, user, single, "ann@example.com")
        # The list field's default is written for the field the form has not (a User Only one).
        assert info["CustomFields"] == {str(company): "Acme", str(internal): "0"}
        assert info["SubscriptionIP"] == FORM_IP
        assert info["SubscriptionStatus"] == "Subscribed" and info["OptInDate"] and info["Source"] == "API"

        # A double opt-in list keeps the subscriber Opt-In Pending until it confirms.
        body = await subscribe(form, ListID=f"{double},", EmailAddress="bob@example.com", IPAddress=FORM_IP)
        assert body["Subscriber"]["SubscriptionStatus"] == "Opt-In Pending", body
        info = await info_of(form, user, double, "bob@example.com")
        assert info["SubscriptionStatus"] == "Opt-In Pending" and info["OptInDate"] == ""
        # Form fields (urlencoded) work too, checkboxes as CustomFieldN[].
        topics = await new_field(
            form,
            user,
            single,
            "Topics",
            FieldType="Checkboxes",
            OptionLabel=["news", "offers"],
            Visibility="Public",
        )
        _, body = await form.form(
            [
                ("Command", "subscriber.subscribe"),
                ("ListID", str(single)),
                ("EmailAddress", "cid@example.com"),
                ("IPAddress", FORM_IP),
                (f"customfield{topics}[]", "offers"),
                (f"customfield{topics}[]", "news"),
            ]
        )
        assert body["Success"] is True, body
        assert (await info_of(form, user, single, "cid@example.com"))["CustomFields"] == {
            str(topics): "offers, news",
            str(internal): "0",
        }


async def test_subscribe_answers_the_forms_codes_and_no_more(system: System, user: User, make_user: Any) -> None:
    async with api_from(system.base_url, "127.0.0.52") as form:
        list_id = await new_list(form, user)
        company = await new_field(form, user, list_id, "Company", IsRequired="Yes", Visibility="Public")
        code = await new_field(
            form, user, list_id, "Code", IsUnique="Yes", ValidationMethod="Numbers", Visibility="Public"
        )
        internal = await new_field(form, user, list_id, "Score")
        stranger = await make_user()
        foreign = await new_field(form, stranger, await new_list(form, stranger), "Theirs")
        base = {"ListID": list_id, "EmailAddress": "new@example.com", "IPAddress": FORM_IP}
        await ok(
            form,
            "subscriber.create",
            user.api_key,
            ListID=list_id,
            EmailAddress="member@example.com",
            CustomFields={str(company): "Acme", str(code): "42"},
            **SUBSCRIBED,
        )
        cases: list[tuple[dict[str, Any], int]] = [
            ({"EmailAddress": "x@example.com", "IPAddress": FORM_IP}, 1),
            ({"ListID": list_id, "IPAddress": FORM_IP}, 2),
            ({"ListID": list_id, "EmailAddress": "x@example.com"}, 3),
            ({**base, "IPAddress": "not-an-ip"}, 3),
            ({**base, "ListID": "x"}, 4),
            ({**base, "ListID": f"{list_id},{list_id + 1}"}, 4),
            ({**base, "ListID": 999999999}, 4),
            ({**base, "EmailAddress": "nope"}, 5),
            ({**base, "EmailAddress": "nope", "ListID": 999999999}, 4),
            ({**base, f"CustomField{company}": " "}, 6),
            ({**base, f"CustomField{company}": "Acme", f"CustomField{code}": "42"}, 7),
            ({**base, f"CustomField{code}": "4x2"}, 8),
            ({**base, f"CustomField{foreign}": "x"}, 8),
            # A field the form does not have (User Only) is no field to a stranger.
            ({**base, f"CustomField{internal}": "99"}, 8),
            ({**base, "CustomField999999999": "x"}, 8),
            ({**base, f"CustomField{company}": {"nested": "x"}}, 8),
            ({**base, "EnforceRequiredFields": "yes"}, 6),
        ]
        for params, expected in cases:
            body = await subscribe(form, **params)
            assert body["Success"] is False and body["ErrorCode"] == expected, (params, body)
            assert isinstance(body["ErrorText"], str) and body["ErrorText"], body
        # A required field names itself, as the form shows it.
        body = await subscribe(form, **base, EnforceRequiredFields=True)
        assert body == {
            "Success": False,
            "ErrorCode": 6,
            "ErrorText": "Required custom field is missing",
            "ErrorCustomFieldID": company,
            "ErrorCustomFieldTitle": "Company",
        }
        # Not given at all is fine without EnforceRequiredFields (the legacy default).
        assert (await subscribe(form, **base))["Success"] is True
        # An address already on the list answers 9, whatever its status, and nothing about it changes.
        await ok(
            form,
            "subscriber.unsubscribe",
            user.api_key,
            ListID=list_id,
            EmailAddress="member@example.com",
            IPAddress=FORM_IP,
        )
        for address in ("member@example.com", "NEW@example.com"):
            body = await subscribe(form, **{**base, "EmailAddress": address, f"CustomField{company}": "Other"})
            assert body == {"Success": False, "ErrorCode": 9, "ErrorText": "Duplicate email address"}, body
        member = await info_of(form, user, list_id, "member@example.com")
        assert member["SubscriptionStatus"] == "Unsubscribed" and member["CustomFields"][str(company)] == "Acme"


async def test_subscribe_is_rate_limited_per_client_address(system: System, user: User) -> None:
    async with api_from(system.base_url, "127.0.0.53") as form, api_from(system.base_url, "127.0.0.54") as other:
        list_id = await new_list(other, user)

        async def call(client: Api, address: str) -> tuple[int, Any, str | None]:
            body = {
                "Command": "subscriber.subscribe",
                "ListID": list_id,
                "EmailAddress": address,
                "IPAddress": FORM_IP,
            }
            async with client.session.post(client.base_url + "/api.php", json=body) as response:
                return response.status, await response.json(content_type=None), response.headers.get("Retry-After")

        answers = await asyncio.gather(*(call(form, f"n{n}@example.com") for n in range(RATE_LIMIT[0])))
        assert {(status, body["Success"]) for status, body, _ in answers} == {(200, True)}
        status, body, retry_after = await call(form, "late@example.com")
        assert status == 429 and body["ErrorCode"] == 429 and retry_after is not None
        assert 1 <= int(retry_after) <= RATE_LIMIT[1]
        # Another client address has a window of its own.
        assert (await call(other, "late@example.com"))[1]["Success"] is True


async def test_behind_a_trusted_proxy_subscribe_counts_the_forwarded_address(system: System, user: User) -> None:
    async with own_translator(system, {"HERALD_TRUSTED_PROXIES": "127.0.0.1"}) as base_url:
        async with api_from(base_url, "127.0.0.1") as proxy:
            list_id = await new_list(proxy, user)

            async def call(client_address: str, n: int) -> int:
                body = {
                    "Command": "subscriber.subscribe",
                    "ListID": list_id,
                    "EmailAddress": f"{client_address.replace('.', '-')}-{n}@example.com",
                    "IPAddress": FORM_IP,
                }
                headers = {"X-Forwarded-For": client_address}
                async with proxy.session.post(base_url + "/api.php", json=body, headers=headers) as response:
                    await response.read()
                    return response.status

            statuses = await asyncio.gather(*(call("192.0.2.1", n) for n in range(RATE_LIMIT[0])))
            assert set(statuses) == {200}
            assert await call("192.0.2.1", RATE_LIMIT[0]) == 429
            assert await call("192.0.2.2", 0) == 200


# --- the subscription form's flow, down to the SMTP server ------------------------------------------------------


async def test_a_subscription_forms_values_reach_the_personalized_campaign(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    api, user = herald.api, await herald.new_user()
    list_id = await create_list(api, user, "Form subscribers")
    company = await new_field(
        api, user, list_id, "Company", MergeTagAlias="company", IsRequired="Yes", Visibility="Public"
    )
    plan = await new_field(
        api,
        user,
        list_id,
        "Plan",
        FieldType="Drop down",
        OptionLabel=["Basic", "Pro"],
        OptionValue=["basic", "pro"],
        Visibility="Public",
    )
    city = await new_field(api, user, list_id, "City", MergeTagAlias="town", DefaultValue="Berlin")
    region = await new_field(
        api, user, list_id, "Region", IsGlobal="Yes", DefaultValue="EU", MergeTagAlias="region"
    )

    # The form draws itself from CustomFields.Get, then posts what the visitor typed, without credentials.
    drawn = await ok(
        api, "CustomFields.Get", user.api_key, SubscriberListID=list_id, ReturnGlobalCustomFields=True
    )
    public = {row["CustomFieldID"]: row for row in drawn["CustomFields"] if row["Visibility"] == "Public"}
    assert set(public) == {company, plan}
    assert [option["Value"] for option in public[plan]["Options"]] == ["basic", "pro"]
    domain = new_domain()
    visitor = f"grace@{domain}"
    status, body = await api.post(
        {
            "Command": "Subscriber.Subscribe",
            "ListID": list_id,
            "EmailAddress": visitor,
            "IPAddress": FORM_IP,
            f"CustomField{company}": "Hopper & Co",
            f"CustomField{plan}": "pro",
            "EnforceRequiredFields": True,
        }
    )
    assert (
        status == 200 and body["Success"] is True and body["Subscriber"]["SubscriptionStatus"] == "Subscribed"
    ), body
    info = await info_of(api, user, list_id, visitor)
    assert info["SubscriptionStatus"] == "Subscribed"
    assert info["CustomFields"] == {str(company): "Hopper & Co", str(plan): "pro", str(city): "Berlin"}

    email_id = await create_email(
        api,
        user,
        subject=f"Hello %Subscriber:company% on %Subscriber:CustomField{plan}%",
        html=(
            "<html><body><p>Company: {{ Subscriber:company }}; plan: %Subscriber:CustomField" + str(plan) + "%; "
            "town: {{ Subscriber:town }}; region: %Subscriber:region%; city: %Subscriber:CustomField"
            + str(city)
            + '%.</p><a href="{{ Link:Unsubscribe }}">Unsubscribe</a></body></html>'
        ),
        plain=f"Company: %Subscriber:company%, region %Subscriber:CustomField{region}%. {{{{ Link:Unsubscribe }}}}",
    )
    campaign_id = await create_campaign(api, user, email_id, [list_id], name="Form flow")
    await send(api, user, campaign_id)
    await wait_for_status(api, user, campaign_id, "Sent", within=30)

    [received] = herald.recorder.messages_to(domain)
    assert received.recipient.lower() == visitor
    assert received.header("Subject") == "Hello Hopper & Co on pro"
    text = received.text()
    assert "Company: Hopper &amp; Co; plan: pro; town: Berlin; region: EU; city: Berlin." in text, text
    assert "Company: Hopper & Co, region EU." in text, text
