"""Audience end to end: list, subscriber and segment commands through the translator, and targeting over gRPC."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from services.common.grpcutil import decode_error
from tests.conftest import Api, System, User, grpc_metadata
from tests.e2e.edge_helpers import api_from
from translator.commands.audience import RATE_LIMIT

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSCRIBED = {"SubscriptionDate": "2025-01-02", "SubscriptionIP": "203.0.113.5"}
CONFIRMATION = {
    "Subject": "Please confirm",
    "FromName": "Ada",
    "FromEmail": "ada@example.com",
    "ContentType": "HTML",
    "HTMLContent": "<p>Confirm: %Link:Confirm%</p>",
}


async def new_list(api: Api, user: User, name: str = "Newsletter", **extra: Any) -> int:
    body = await api.call("list.create", user.api_key, SubscriberListName=name, **extra)
    assert body["Success"] is True, body
    list_id: int = body["ListID"]
    return list_id


async def add(api: Api, user: User, list_id: int, email: str, **extra: Any) -> dict[str, Any]:
    params = {**SUBSCRIBED, **extra}
    body: dict[str, Any] = await api.call(
        "subscriber.create", user.api_key, ListID=list_id, EmailAddress=email, **params
    )
    assert body["Success"] is True, body
    return body


async def new_field(api: Api, user: User, list_id: int, name: str = "Field", **extra: Any) -> int:
    """A custom field of the list (customfield.create): a Single line unless `extra` says otherwise."""
    body = await api.call(
        "customfield.create",
        user.api_key,
        SubscriberListID=list_id,
        FieldName=name,
        **{"FieldType": "Single line", **extra},
    )
    assert body["Success"] is True, body
    field_id: int = body["CustomFieldID"]
    return field_id


async def code_of(api: Api, user: User, command: str, **params: Any) -> Any:
    body = await api.call(command, user.api_key, **params)
    assert body["Success"] is False, (params, body)
    assert body["ErrorText"], body
    return body["ErrorCode"]


@dataclass
class Audience:
    """The audience service as a gRPC caller sees it, on one user's behalf."""

    stub: audience_pb2_grpc.AudienceServiceStub
    system: System

    def md(self, user: User) -> tuple[tuple[str, str], ...]:
        return grpc_metadata(self.system, user.user_id)

    def as_delivery(self, user: User) -> tuple[tuple[str, str], ...]:
        """The token delivery presents for a user's campaign: CountRecipients and StreamRecipients are internal."""
        return grpc_metadata(self.system, user.user_id, service="delivery")

    async def list(self, user: User, name: str = "list") -> int:
        created = await self.stub.CreateList(audience_pb2.CreateListRequest(name=name), metadata=self.md(user))
        return created.list_id

    async def add(
        self,
        user: User,
        list_id: int,
        email: str,
        *,
        status: int = audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED,
        first_name: str = "",
        custom: dict[str, str] | None = None,
    ) -> int:
        subscriber = audience_pb2.Subscriber(
            list_id=list_id, email_address=email, status=status, first_name=first_name, custom_fields=custom or {}
        )
        created = await self.stub.CreateSubscriber(
            audience_pb2.CreateSubscriberRequest(subscriber=subscriber), metadata=self.md(user)
        )
        return created.subscriber_id

    async def field(self, user: User, list_id: int, name: str = "field", **settings: Any) -> int:
        """A custom field of the list (CreateCustomField): a Single line unless `settings` say otherwise."""
        created = await self.stub.CreateCustomField(
            audience_pb2.CreateCustomFieldRequest(
                custom_field=audience_pb2.CustomField(list_id=list_id, name=name, **settings)
            ),
            metadata=self.md(user),
        )
        return created.custom_field_id

    async def segment(
        self, user: User, list_id: int, rules: list[Any], operator: str = "and", **extra: Any
    ) -> int:
        message = struct_pb2.ListValue()
        message.extend(rules)
        segment = audience_pb2.Segment(list_id=list_id, name="segment", operator=operator, rules=message, **extra)
        created = await self.stub.CreateSegment(
            audience_pb2.CreateSegmentRequest(segment=segment), metadata=self.md(user)
        )
        return created.segment_id

    @staticmethod
    def request(
        included: Sequence[tuple[int, int]], excluded: Sequence[tuple[int, int]], bundle: dict[str, Any] | None
    ) -> audience_pb2.CountRecipientsRequest:
        request = audience_pb2.CountRecipientsRequest(
            included=[audience_pb2.ListSegment(list_id=i, segment_id=s) for i, s in included],
            excluded=[audience_pb2.ListSegment(list_id=i, segment_id=s) for i, s in excluded],
        )
        if bundle is not None:
            request.rules_bundle.update(bundle)
        return request

    async def count(
        self,
        user: User,
        included: Sequence[tuple[int, int]] = (),
        excluded: Sequence[tuple[int, int]] = (),
        bundle: dict[str, Any] | None = None,
    ) -> int:
        response = await self.stub.CountRecipients(
            self.request(included, excluded, bundle), metadata=self.as_delivery(user)
        )
        return response.total

    async def emails(
        self,
        user: User,
        included: Sequence[tuple[int, int]] = (),
        excluded: Sequence[tuple[int, int]] = (),
        bundle: dict[str, Any] | None = None,
        **options: int,
    ) -> list[str]:
        """The streamed recipients' addresses, checking they come in subscriber id order; count agrees."""
        spec = self.request(included, excluded, bundle)
        targeting = audience_pb2.TargetingSpec(included=spec.included, excluded=spec.excluded)
        if bundle is not None:
            targeting.rules_bundle.CopyFrom(spec.rules_bundle)
        request = audience_pb2.StreamRecipientsRequest(targeting=targeting, **options)
        ids: list[int] = []
        emails: list[str] = []
        async for chunk in self.stub.StreamRecipients(request, metadata=self.as_delivery(user)):
            assert chunk.recipients, "no empty chunks"
            for recipient in chunk.recipients:
                ids.append(recipient.subscriber_id)
                emails.append(recipient.email_address)
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert len(set(emails)) == len(emails), "each address once"
        if not options:
            assert len(emails) == await self.count(user, included, excluded, bundle)
        return emails

    async def failure(self, call: Any) -> Any:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        return raised.value


@pytest_asyncio.fixture(loop_scope="session")
async def audience(system: System) -> AsyncIterator[Audience]:
    async with grpc.aio.insecure_channel(system.grpc_target("audience")) as channel:
        yield Audience(audience_pb2_grpc.AudienceServiceStub(channel), system)


# --- lists --------------------------------------------------------------------------------------------------


async def test_list_create_answers_the_seed_shape_and_list_get_shows_the_list(api: Api, user: User) -> None:
    body = await api.call(
        "List.Create",
        user.api_key,
        SubscriberListName="Newsletter",
        Description="Weekly news",
        SenderName="Ada",
        SenderEmailAddress="ada@example.com",
    )
    assert set(body) == {"Success", "ErrorCode", "ListID"} and body["Success"] is True
    body = await api.call("list.get", user.api_key, ListID=body["ListID"], GetStats=True)
    assert set(body) == {"Success", "ErrorCode", "List"}
    row = body["List"]
    assert row["ListID"] > 0 and row["Name"] == "Newsletter" and row["RelOwnerUserID"] == user.user_id
    assert row["OptInMode"] == "Single" and row["Description"] == "Weekly news"
    assert row["SenderEmailAddress"] == "ada@example.com" and isinstance(row["Options"], dict)
    assert row["SubscriberCount"] == 0 and row["ArchivedAt"] == "" and len(row["CreatedOn"]) == 19
    assert row["Statistics"] == {"TotalSubscribers": 0, "ActiveSubscribers": 0, "Segments": 0}


async def test_list_create_and_get_error_codes(api: Api, user: User) -> None:
    assert await code_of(api, user, "list.create") == [1]
    assert await code_of(api, user, "list.create", SubscriberListName="   ") == [1]
    assert await code_of(api, user, "list.create", SubscriberListName="x", OptInMode="Triple") == [20]
    assert await code_of(api, user, "list.create", OptInMode="Triple") == [1, 20]
    assert await code_of(api, user, "list.create", SubscriberListName="x" * 300) == [1]
    assert await code_of(api, user, "list.get") == [1]
    assert await code_of(api, user, "list.get", ListID="abc") == [1]
    assert await code_of(api, user, "list.get", ListID=999999999) == 1


async def test_list_create_with_a_confirmation_email_creates_both(api: Api, user: User) -> None:
    body = await api.call(
        "list.create",
        user.api_key,
        SubscriberListName="Double",
        OptInMode="Single",
        ConfirmationEmail=CONFIRMATION,
    )
    assert set(body) == {"Success", "ErrorCode", "ListID", "ConfirmationEmailID"}, body
    row = (await api.call("list.get", user.api_key, ListID=body["ListID"]))["List"]
    assert row["OptInMode"] == "Double" and row["OptInConfirmationEmailID"] == body["ConfirmationEmailID"]
    email = (await api.call("email.get", user.api_key, EmailID=body["ConfirmationEmailID"]))["EmailInformation"]
    assert email["Subject"] == "Please confirm" and email["EmailName"] == f"Confirmation email: {body['ListID']}"


async def test_list_create_checks_the_confirmation_email(api: Api, user: User) -> None:
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, [21]),
        ({**CONFIRMATION, "Subject": ""}, [21]),
        ({**CONFIRMATION, "ContentType": "Rich"}, [22]),
        ({**CONFIRMATION, "HTMLContent": ""}, [23]),
        ({**CONFIRMATION, "ContentType": "Plain"}, [24]),
        ({**CONFIRMATION, "ContentType": "Both", "HTMLContent": ""}, [23, 24]),
        ({**CONFIRMATION, "Mode": "Crayon"}, [25]),
        ({**CONFIRMATION, "Mode": "Template"}, [26]),
    ]
    before = (await api.call("lists.get", user.api_key))["TotalListCount"]
    for confirmation, codes in cases:
        assert (
            await code_of(api, user, "list.create", SubscriberListName="x", ConfirmationEmail=confirmation)
            == codes
        )
    assert await code_of(api, user, "list.create", ConfirmationEmail={}) == [1, 21]
    # The email service refuses the sender address: nothing is left behind (code 30).
    bad_sender = {**CONFIRMATION, "FromEmail": "not an address"}
    assert await code_of(api, user, "list.create", SubscriberListName="x", ConfirmationEmail=bad_sender) == 30
    assert (await api.call("lists.get", user.api_key))["TotalListCount"] == before


async def test_form_bodies_nest_with_brackets(api: Api, user: User) -> None:
    status, body = await api.form(
        {
            "Command": "list.create",
            "APIKey": user.api_key,
            "SubscriberListName": "Form list",
            "ConfirmationEmail[Subject]": "Confirm",
            "ConfirmationEmail[FromName]": "Ada",
            "ConfirmationEmail[FromEmail]": "ada@example.com",
            "ConfirmationEmail[ContentType]": "Plain",
            "ConfirmationEmail[PlainContent]": "Confirm: %Link:Confirm%",
        }
    )
    assert status == 200 and body["Success"] is True and body["ConfirmationEmailID"] > 0, body
    list_id = body["ListID"]
    score = await new_field(api, user, list_id, "Score")
    city = await new_field(api, user, list_id, "City", MergeTagAlias="city")
    status, body = await api.form(
        {
            "Command": "subscriber.create",
            "APIKey": user.api_key,
            "ListID": str(list_id),
            "EmailAddress": "form@example.com",
            "SubscriptionDate": "2025-01-02 10:00:00",
            "SubscriptionIP": "203.0.113.5",
            "OptInDate": "2025-01-03",
            f"CustomFields[{score}]": "42",
            "CustomFields[city]": "Paris",  # a field's alias names it too; the value is stored by id
        },
        path="/api/v1/subscriber.create",
    )
    assert body["Success"] is True, body
    info = body["SubscriberInformation"]
    assert info["CustomFields"] == {str(score): "42", str(city): "Paris"} and info[f"CustomField{score}"] == "42"
    assert info["SubscriptionDate"] == "2025-01-02 10:00:00" and info["OptInDate"] == "2025-01-03 00:00:00"
    status, body = await api.form(
        [
            ("Command", "segment.create"),
            ("APIKey", user.api_key),
            ("SubscriberListID", str(list_id)),
            ("SegmentName", "Parisians"),
            ("SegmentOperator", "and"),
            ("SegmentRuleField[]", str(city)),
            ("SegmentRuleOperator[]", "is"),
            ("SegmentRuleFilter[]", "paris"),
            ("SegmentRuleField[]", f"CustomField{score}"),
            ("SegmentRuleOperator[]", ">"),
            ("SegmentRuleFilter[]", "40"),
        ]
    )
    assert body["Success"] is True, body
    segment_id = body["SegmentID"]
    status, body = await api.form(
        {
            "Command": "subscriber.get",
            "APIKey": user.api_key,
            "ListID": str(list_id),
            "EmailAddress": "FORM@example.com",
            "Include[Tags]": "false",
            "Include[Journeys]": "0",
        }
    )
    assert body["SubscriberSegments"] == [{"SegmentID": segment_id, "SegmentName": "Parisians"}], body
    assert "SubscriberTags" not in body and "SubscriberJourneys" not in body and body["TotalRevenue"] == 0


async def test_lists_get_filters_orders_and_pages(api: Api, user: User) -> None:
    ids = [
        await new_list(api, user, name, Description=desc)
        for name, desc in [("b-news", ""), ("a-promo", "NEWS inside"), ("c", "")]
    ]
    body = await api.call("lists.get", user.api_key)
    assert set(body) == {"Success", "ErrorCode", "TotalListCount", "Lists"}
    assert body["TotalListCount"] == 3 and [row["ListID"] for row in body["Lists"]] == ids
    body = await api.call("lists.get", user.api_key, Search="news", OrderField="Name", OrderType="DESC")
    assert body["TotalListCount"] == 2 and [row["Name"] for row in body["Lists"]] == ["b-news", "a-promo"]
    body = await api.call("lists.get", user.api_key, RecordsPerRequest=1, RecordsFrom=1, OrderField="Nonsense")
    assert body["TotalListCount"] == 3 and [row["ListID"] for row in body["Lists"]] == [ids[1]]
    assert (await api.call("lists.get", user.api_key, Archived="true"))["TotalListCount"] == 0
    assert (await api.call("lists.get", user.api_key, Archived="all"))["TotalListCount"] == 3
    await add(api, user, ids[2], "one@example.com")
    body = await api.call("lists.get", user.api_key, OrderField="ActiveSubscriberCount", OrderType="DESC")
    assert body["Lists"][0]["ListID"] == ids[2] and body["Lists"][0]["SubscriberCount"] == 1


async def test_lists_delete_removes_lists_with_their_subscribers(api: Api, user: User, make_user: Any) -> None:
    list_id = await new_list(api, user)
    await add(api, user, list_id, "gone@example.com")
    other = await make_user()
    foreign = await new_list(api, other)
    assert await code_of(api, user, "lists.delete") == [1]
    assert await code_of(api, user, "lists.delete", Lists="1,x") == [1]
    body = await api.call("lists.delete", user.api_key, Lists=f"{list_id},{foreign}")
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    assert await code_of(api, user, "list.get", ListID=list_id) == 1
    assert (await api.call("list.get", other.api_key, ListID=foreign))["Success"] is True


# --- subscribers --------------------------------------------------------------------------------------------


async def test_subscriber_create_answers_both_shapes_and_normalises_the_address(api: Api, user: User) -> None:
    list_id = await new_list(api, user)
    status, body = await api.post(
        {"APIKey": user.api_key, "ListID": list_id, "EmailAddress": " Ada.Lovelace@EXAMPLE.com ", **SUBSCRIBED},
        path="/api/v1/subscriber.create",
    )
    assert status == 200 and set(body) == {
        "Success",
        "ErrorCode",
        "SubscriberInformation",
        "Suppressed",
        "SubscriberTags",
        "SubscriberSegments",
        "SubscriberJourneys",
        "SubscriberWebsiteEvents",
    }, body
    info = body["SubscriberInformation"]
    assert info["EmailAddress"] == "Ada.Lovelace@example.com" and info["SubscriptionStatus"] == "Subscribed"
    assert info["SubscriptionIP"] == "203.0.113.5" and info["Source"] == "API" and body["Suppressed"] is False
    status, body = await api.post({"APIKey": user.api_key, "ListID": list_id}, path="/api/v1/subscriber.create")
    assert body["Success"] is False and body["ErrorCode"] == 2
    assert body["Errors"] == [{"Code": 2, "Message": body["ErrorText"]}]
    # The same address in another case is the same subscriber.
    status, body = await api.post(
        {"APIKey": user.api_key, "ListID": list_id, "EmailAddress": "ada.lovelace@example.com", **SUBSCRIBED},
        path="/api/v1/subscriber.create",
    )
    assert body["ErrorCode"] == 20 and body["Errors"][0]["Code"] == 20


async def test_subscriber_create_error_codes_are_the_first_failing_check(
    api: Api, user: User, make_user: Any
) -> None:
    list_id = await new_list(api, user)
    foreign = await new_list(api, await make_user())
    base = {"ListID": list_id, "EmailAddress": "x@example.com", **SUBSCRIBED}
    cases: list[tuple[dict[str, Any], int]] = [
        ({"EmailAddress": "x@example.com"}, 1),
        ({"ListID": list_id}, 2),
        ({**base, "EmailAddress": "not-an-address"}, 3),
        ({**base, "EmailAddress": "bad", "Status": "Weird"}, 3),
        ({**base, "ListID": "abc"}, 4),
        ({**base, "BounceType": "Bouncy"}, 5),
        ({**base, "Status": "Sleeping"}, 6),
        ({**base, "SubscriptionDate": "yesterday"}, 7),
        ({"ListID": list_id, "EmailAddress": "x@example.com", "SubscriptionIP": "203.0.113.5"}, 8),
        ({"ListID": list_id, "EmailAddress": "x@example.com", "SubscriptionDate": "2025-01-01"}, 9),
        ({**base, "SubscriptionIP": "999.1.1.1"}, 10),
        ({"ListID": list_id, "EmailAddress": "x@example.com", "Status": "Unsubscribed"}, 11),
        (
            {
                "ListID": list_id,
                "EmailAddress": "x@example.com",
                "Status": "Unsubscribed",
                "UnsubscriptionDate": "2025-01-01",
            },
            12,
        ),
        (
            {
                "ListID": list_id,
                "EmailAddress": "x@example.com",
                "Status": "Opt-Out Pending",
                "UnsubscriptionDate": "soon",
                "UnsubscriptionIP": "::1",
            },
            13,
        ),
        (
            {
                "ListID": list_id,
                "EmailAddress": "x@example.com",
                "Status": "Unsubscribed",
                "UnsubscriptionDate": "2025-01-01",
                "UnsubscriptionIP": "nope",
            },
            14,
        ),
        ({**base, "OptInDate": "2025-13-45"}, 16),
        ({**base, "CustomFields": {"12": {"nested": 1}}}, 17),
        ({**base, "CustomFields": {"bad key!": "x"}}, 17),
        ({**base, "CustomFields": {"12": [1]}, "OptInDate": "never"}, 16),
        ({**base, "ListID": foreign}, 23),
        ({**base, "OptInConfirmationEmailID": "abc"}, 24),
        ({**base, "OptInConfirmationEmailID": 999999999}, 25),
    ]
    for params, code in cases:
        body = await api.call("subscriber.create", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == code, (params, body)
        assert body["Errors"] == [{"Code": code, "Message": body["ErrorText"]}]
    # Nothing was added by any of them.
    assert (await api.call("list.get", user.api_key, ListID=list_id))["List"]["SubscriberCount"] == 0


async def test_subscriber_create_updates_duplicates_only_when_asked(api: Api, user: User) -> None:
    list_id = await new_list(api, user)
    first, second = await new_field(api, user, list_id, "First"), await new_field(api, user, list_id, "Second")
    await add(api, user, list_id, "dup@example.com", CustomFields={str(first): "a"})
    assert (
        await api.call(
            "subscriber.create", user.api_key, ListID=list_id, EmailAddress="dup@example.com", **SUBSCRIBED
        )
    )["ErrorCode"] == 20
    body = await add(
        api, user, list_id, "DUP@example.com", UpdateIfDuplicate=True, CustomFields={str(second): "b"}
    )
    assert body["SubscriberInformation"]["CustomFields"] == {str(first): "a", str(second): "b"}
    unsubscribed = {"Status": "Unsubscribed", "UnsubscriptionDate": "2025-02-01", "UnsubscriptionIP": "::1"}
    await add(api, user, list_id, "dup@example.com", UpdateIfDuplicate=True, **unsubscribed)
    again = {"ListID": list_id, "EmailAddress": "dup@example.com", **SUBSCRIBED}
    assert (await api.call("subscriber.create", user.api_key, **again, UpdateIfDuplicate=True))["ErrorCode"] == 21
    body = await add(api, user, list_id, "dup@example.com", UpdateIfUnsubscribed=True)
    assert body["SubscriberInformation"]["SubscriptionStatus"] == "Subscribed"


async def test_double_opt_in_lists_need_an_opt_in_date_and_a_confirmation_email_must_be_owned(
    api: Api, user: User
) -> None:
    list_id = await new_list(api, user, OptInMode="Double")
    body = await api.call(
        "subscriber.create", user.api_key, ListID=list_id, EmailAddress="d@example.com", **SUBSCRIBED
    )
    assert body["ErrorCode"] == 15, body
    email_id = (await api.call("email.create", user.api_key))["EmailID"]
    body = await add(
        api, user, list_id, "d@example.com", OptInDate="2025-01-03", OptInConfirmationEmailID=email_id
    )
    assert body["SubscriberInformation"]["OptInDate"] == "2025-01-03 00:00:00"
    pending = {"Status": "Opt-In Pending"}
    assert (await add(api, user, list_id, "p@example.com", **pending))["SubscriberInformation"][
        "SubscriptionStatus"
    ] == "Opt-In Pending"


async def test_subscriber_create_and_get_are_rate_limited_per_key(api: Api, make_user: Any) -> None:
    user = await make_user()
    for _ in range(100):
        body = await api.call("subscriber.create", user.api_key)
        assert body["ErrorCode"] == 1
    async with api.session.post(
        api.base_url + "/api.php", json={"Command": "subscriber.create", "APIKey": user.api_key}
    ) as response:
        body = await response.json()
        assert response.status == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
    assert body["ErrorCode"] == 429 and body["Errors"] == [{"Code": 429, "Message": body["ErrorText"]}]
    # Another command, and another key, have windows of their own.
    assert (await api.call("subscriber.get", user.api_key))["ErrorCode"] == [1, 2]
    other = await make_user()
    assert (await api.call("subscriber.create", other.api_key))["ErrorCode"] == 1


async def test_subscriber_get_by_id_or_address_and_its_codes(api: Api, user: User, make_user: Any) -> None:
    list_id = await new_list(api, user)
    field_id = await new_field(api, user, list_id)
    created = await add(api, user, list_id, "get@example.com", CustomFields={str(field_id): "x"})
    subscriber_id = created["SubscriberInformation"]["SubscriberID"]
    body = await api.call("subscriber.get", user.api_key, ListID=list_id, SubscriberID=subscriber_id)
    assert set(body) == {
        "Success",
        "ErrorCode",
        "SubscriberInformation",
        "Suppressed",
        "SubscriberTags",
        "SubscriberSegments",
        "SubscriberJourneys",
        "SubscriberWebsiteEvents",
        "SubscriberActivity",
        "TotalRevenue",
    }
    assert body["SubscriberInformation"] == created["SubscriberInformation"]
    assert body["SubscriberJourneys"] == {"InProgress": [], "Completed": []}
    by_address = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="GET@example.com")
    assert by_address["SubscriberInformation"]["SubscriberID"] == subscriber_id
    foreign = await new_list(api, await make_user())
    assert await code_of(api, user, "subscriber.get", ListID=list_id) == [1]
    assert await code_of(api, user, "subscriber.get", SubscriberID=subscriber_id) == [2]
    assert await code_of(api, user, "subscriber.get", ListID=list_id, EmailAddress="nobody@example.com") == 3
    assert await code_of(api, user, "subscriber.get", ListID="x", SubscriberID=1) == [4]
    assert await code_of(api, user, "subscriber.get", ListID=foreign, SubscriberID=subscriber_id) == 4


async def test_subscribers_get_segments_searches_and_records_per_request(
    api: Api, user: User, audience: Audience
) -> None:
    list_id = await new_list(api, user)
    rank = await audience.field(user, list_id, "rank")
    for i in range(30):
        await audience.add(user, list_id, f"user{i:02d}@example.com", custom={str(rank): str(i)})
    await audience.add(user, list_id, "gone@example.com", status=audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED)
    await audience.add(user, list_id, "wait@example.com", status=audience_pb2.SUBSCRIBER_STATUS_OPT_IN_PENDING)
    base = {"SubscriberListID": list_id}
    body = await api.call("subscribers.get", user.api_key, **base, SubscriberSegment="Active")
    assert set(body) == {"Success", "ErrorCode", "ErrorText", "Subscribers", "TotalSubscribers"}
    assert body["TotalSubscribers"] == 30 and len(body["Subscribers"]) == 25
    assert body["Subscribers"][0]["EmailAddress"] == "user00@example.com"
    body = await api.call("subscribers.get", user.api_key, **base, SubscriberSegment="Active", RecordsPerRequest=0)
    assert len(body["Subscribers"]) == 25  # a JSON 0 is the default
    body = await api.call(
        "subscribers.get", user.api_key, **base, SubscriberSegment="active", RecordsPerRequest="0"
    )
    assert len(body["Subscribers"]) == 30  # a string "0" is no limit for a named segment
    body = await api.call(
        "subscribers.get",
        user.api_key,
        **base,
        SubscriberSegment="Active",
        RecordsFrom=28,
        OrderType="DESC",
        OrderField="SubscriberID",
    )
    assert [s["EmailAddress"] for s in body["Subscribers"]] == ["user01@example.com", "user00@example.com"]
    for name, total in [("Unsubscribed", 1), ("Opt-in pending", 1), ("Suppressed", 0), ("Hard bounced", 0)]:
        assert (await api.call("subscribers.get", user.api_key, **base, SubscriberSegment=name))[
            "TotalSubscribers"
        ] == total
    segment_id = await audience.segment(
        user, list_id, [[{"type": "fields", "field_id": str(rank), "operator": ">=", "value": 27}]]
    )
    body = await api.call("subscribers.get", user.api_key, **base, SubscriberSegment=segment_id)
    assert body["TotalSubscribers"] == 3
    body = await api.call(
        "subscribers.get", user.api_key, **base, SubscriberSegment=str(segment_id), RecordsPerRequest="0"
    )
    assert body["TotalSubscribers"] == 3 and body["Subscribers"] == []  # no rows for a segment id
    body = await api.call(
        "subscribers.get",
        user.api_key,
        **base,
        SubscriberSegment="Active",
        SearchField="EmailAddress",
        SearchKeyword="USER1",
    )
    assert body["TotalSubscribers"] == 10
    body = await api.call(
        "subscribers.get",
        user.api_key,
        **base,
        SubscriberSegment="Active",
        SearchField=str(rank),
        SearchKeyword="29",
    )
    assert [s["EmailAddress"] for s in body["Subscribers"]] == ["user29@example.com"]
    assert await code_of(api, user, "subscribers.get", SubscriberSegment="Active") == 1
    assert await code_of(api, user, "subscribers.get", **base) == 2
    assert await code_of(api, user, "subscribers.get", **base, SubscriberSegment="Sleepy") == 2
    assert await code_of(api, user, "subscribers.get", **base, SubscriberSegment=999999999) == 2
    assert await code_of(api, user, "subscribers.get", SubscriberListID="abc", SubscriberSegment="Active") == 3
    assert await code_of(api, user, "subscribers.get", SubscriberListID=999999999, SubscriberSegment="Active") == 3
    assert (
        await code_of(api, user, "subscribers.get", **base, SubscriberSegment="Active", SearchField="Password")
        == 4
    )
    foreign = {"SubscriberListID": 999999999, "SubscriberSegment": "Active", "SearchField": "Password"}
    assert await code_of(api, user, "subscribers.get", **foreign) == 3  # the first failing check


async def test_subscriber_unsubscribe_needs_no_credentials_and_suppresses_when_asked(
    api: Api, user: User, audience: Audience
) -> None:
    list_id = await new_list(api, user)
    for name in ("a", "b", "c"):
        await add(api, user, list_id, f"{name}@example.com")
    link = {"Command": "subscriber.unsubscribe", "ListID": list_id, "IPAddress": "198.51.100.7"}
    status, body = await api.post({**link, "EmailAddress": "A@example.com"})
    assert status == 200 and body == {"Success": True, "ErrorCode": 0, "RedirectURL": ""}, body
    info = (await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="a@example.com"))[
        "SubscriberInformation"
    ]
    assert info["SubscriptionStatus"] == "Unsubscribed" and info["UnsubscriptionIP"] == "198.51.100.7"
    # With the owner's key the seed's codes apply: 9 already unsubscribed, 7 not on the list.
    owner = {**link, "APIKey": user.api_key}
    assert (await api.post({**owner, "EmailAddress": "a@example.com"}))[1]["ErrorCode"] == 9
    assert (await api.post({**owner, "EmailAddress": "nobody@example.com"}))[1]["ErrorCode"] == 7
    b_id = (await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="b@example.com"))[
        "SubscriberInformation"
    ]["SubscriberID"]
    body = (await api.post({**owner, "SubscriberID": b_id, "AddToGlobalSuppression": True}))[1]
    assert body["Success"] is True, body
    body = await api.call("subscriber.get", user.api_key, ListID=list_id, SubscriberID=b_id)
    assert body["Suppressed"] is True
    # The suppression holds for every list of the owner.
    other = await new_list(api, user, "other")
    await add(api, user, other, "b@example.com")
    assert await audience.emails(user, [(other, 0)]) == []
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"IPAddress": "1.2.3.4", "EmailAddress": "c@example.com"}, [1]),
        ({"ListID": list_id, "EmailAddress": "c@example.com"}, [2]),
        ({"ListID": list_id, "IPAddress": "not-an-ip", "EmailAddress": "c@example.com"}, [2]),
        ({"ListID": list_id, "IPAddress": "1.2.3.4"}, [3]),
        ({"ListID": "x", "IPAddress": "1.2.3.4", "EmailAddress": "c@example.com"}, [4]),
        ({"ListID": 999999999, "IPAddress": "1.2.3.4", "EmailAddress": "c@example.com"}, 4),
        ({"ListID": list_id, "IPAddress": "1.2.3.4", "EmailAddress": "nope"}, [6]),
        ({"ListID": list_id, "IPAddress": "1.2.3.4", "EmailAddress": "c@example.com", "CampaignID": "x"}, [8]),
        ({"ListID": list_id, "IPAddress": "1.2.3.4", "EmailAddress": "nope", "EmailID": "x"}, [6, 10]),
    ]
    for params, code in cases:
        status, body = await api.post({"Command": "subscriber.unsubscribe", **params})
        assert body["Success"] is False and body["ErrorCode"] == code, (params, body)
    # c is untouched by all of those.
    info = (await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="c@example.com"))[
        "SubscriberInformation"
    ]
    assert info["SubscriptionStatus"] == "Subscribed"


async def test_parameters_without_counterpart_neither_block_nor_change_the_call(
    api: Api, user: User, audience: Audience
) -> None:
    """Issue 14: subscriber.create's ApplyBehaviors, UpdateStatistics, TriggerWebServices, TriggerAutoResponders
    and subscriber.unsubscribe's Channel and BypassListSuppressionSettings name what Herald does not have: the
    call is carried out as without them (nothing suppressed by the bypass flag, whatever the channel)."""
    list_id = await new_list(api, user)
    flags = {
        "ApplyBehaviors": 1,
        "UpdateStatistics": True,
        "TriggerWebServices": "yes",
        "TriggerAutoResponders": 1,
    }
    body = await add(api, user, list_id, "flags@example.com", **flags)
    assert body["SubscriberInformation"]["SubscriptionStatus"] == "Subscribed", body
    assert await audience.emails(user, [(list_id, 0)]) == ["flags@example.com"]
    stats = await api.call("list.get", user.api_key, ListID=list_id, GetStats=True)
    assert stats["List"]["Statistics"]["TotalSubscribers"] == 1, stats
    link = {"Command": "subscriber.unsubscribe", "ListID": list_id, "IPAddress": "198.51.100.8"}
    status, body = await api.post(
        {**link, "EmailAddress": "flags@example.com", "Channel": "SMS", "BypassListSuppressionSettings": True}
    )
    assert status == 200 and body == {"Success": True, "ErrorCode": 0, "RedirectURL": ""}, body
    got = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="flags@example.com")
    assert got["SubscriberInformation"]["SubscriptionStatus"] == "Unsubscribed" and got["Suppressed"] is False, got


async def test_unsubscribe_without_credentials_answers_alike_whether_or_not_the_address_is_on_the_list(
    api: Api, user: User
) -> None:
    list_id = await new_list(api, user)
    await add(api, user, list_id, "member@example.com")
    await add(api, user, list_id, "gone@example.com")
    link = {"Command": "subscriber.unsubscribe", "ListID": list_id, "IPAddress": "198.51.100.8"}
    assert (await api.post({**link, "EmailAddress": "gone@example.com"}))[1]["Success"] is True
    answers = [
        await api.post({**link, **selector})
        for selector in (
            {"EmailAddress": "member@example.com"},
            {"EmailAddress": "gone@example.com"},  # already unsubscribed
            {"EmailAddress": "stranger@example.com"},  # never on the list
            {"SubscriberID": 999999999},
        )
    ]
    assert answers == [(200, {"Success": True, "ErrorCode": 0, "RedirectURL": ""})] * 4, answers
    # A malformed parameter beside the address is answered alike too.
    for address in ("stranger@example.com", "gone@example.com"):
        body = (await api.post({**link, "EmailAddress": address, "CampaignID": "x"}))[1]
        assert body == {"Success": False, "ErrorCode": [8], "ErrorText": ["Invalid CampaignID"]}, (address, body)
    # With the owner's credentials the difference is told.
    owner = {**link, "APIKey": user.api_key, "CampaignID": "x"}
    assert (await api.post({**owner, "EmailAddress": "stranger@example.com"}))[1]["ErrorCode"] == 7


async def test_bulk_preview_and_global_suppression_need_the_list_owners_credentials(
    api: Api, user: User, make_user: Any, admin: Any, audience: Audience
) -> None:
    list_id = await new_list(api, user)
    for name in ("one", "two"):
        await add(api, user, list_id, f"{name}@example.com")
    everyone = json.dumps([[{"type": "fields", "field_id": "EmailAddress", "operator": "contains", "value": "@"}]])
    bulk = {
        "Command": "subscriber.unsubscribe",
        "ListID": list_id,
        "IPAddress": "6.6.6.6",
        "RulesJSON": everyone,
        "RulesOperator": "and",
        "AddToGlobalSuppression": True,
    }
    refusals = [
        bulk,
        {**bulk, "AddToGlobalSuppression": False},
        {**bulk, "RulesJSON": "", "EmailAddress": "one@example.com"},
        {
            **bulk,
            "RulesJSON": "",
            "AddToGlobalSuppression": False,
            "EmailAddress": "one@example.com",
            "Preview": 1,
        },
        {**bulk, "APIKey": ""},
    ]
    for params in refusals:
        status, body = await api.post(params)
        assert status == 200 and body["Success"] is False and body["ErrorCode"] == 99998, (params, body)
        assert isinstance(body["ErrorText"], str) and "list owner" in body["ErrorText"]
    # Another user's credentials do not make them the owner: the list is not theirs (4); an admin's
    # are not a user's (99999).
    stranger = await make_user()
    assert (await api.post({**bulk, "APIKey": stranger.api_key}))[1]["ErrorCode"] == 4
    assert (await api.post({**bulk, "APIKey": admin.api_key}))[1]["ErrorCode"] == 99999
    assert (await api.post({**bulk, "APIKey": "ZZZZ-ZZZZ-ZZZZ-ZZZZ"}))[1]["ErrorCode"] == 99998
    # Nothing changed.
    assert await audience.count(user, [(list_id, 0)]) == 2
    # The owner's session may do all of it.
    _, login = await api.post({"Command": "user.login", "Username": user.username, "Password": "secret-password"})
    owner = {**bulk, "SessionID": login["SessionID"]}
    assert (await api.post({**owner, "Preview": 1}))[1]["Success"] is True
    assert await audience.count(user, [(list_id, 0)]) == 2
    assert (await api.post(owner))[1]["Success"] is True
    assert await audience.count(user, [(list_id, 0)]) == 0
    other = await new_list(api, user, "other")
    await add(api, user, other, "one@example.com")
    assert await audience.emails(user, [(other, 0)]) == []


async def test_unsubscribe_without_credentials_is_rate_limited_per_client_address(
    system: System, user: User
) -> None:
    async with api_from(system.base_url, "127.0.0.31") as api, api_from(system.base_url, "127.0.0.32") as other:
        list_id = await new_list(api, user)
        link = {"Command": "subscriber.unsubscribe", "ListID": list_id, "IPAddress": "198.51.100.9"}

        async def unsubscribe(client: Api, **params: Any) -> tuple[int, Any, str | None]:
            async with client.session.post(client.base_url + "/api.php", json={**link, **params}) as response:
                return response.status, await response.json(content_type=None), response.headers.get("Retry-After")

        answers = await asyncio.gather(
            *(unsubscribe(api, EmailAddress=f"n{n}@example.com") for n in range(RATE_LIMIT[0]))
        )
        assert {(status, body["Success"]) for status, body, _ in answers} == {(200, True)}
        status, body, retry_after = await unsubscribe(api, EmailAddress="late@example.com")
        assert status == 429 and retry_after is not None and 1 <= int(retry_after) <= RATE_LIMIT[1]
        assert body["ErrorCode"] == 429 and body["Success"] is False
        # Another address, and the owner's credentials from this one, have windows of their own.
        assert (await unsubscribe(other, EmailAddress="late@example.com"))[0] == 200
        assert (await unsubscribe(api, EmailAddress="late@example.com", APIKey=user.api_key))[0] == 200


async def test_bulk_unsubscribe_by_rules_and_its_rules_json_checks(api: Api, user: User) -> None:
    list_id = await new_list(api, user)
    for name in ("keep", "drop1", "drop2"):
        await add(api, user, list_id, f"{name}@example.com")
    base = {"Command": "subscriber.unsubscribe", "ListID": list_id, "IPAddress": "1.2.3.4", "APIKey": user.api_key}
    drop = json.dumps(
        [[{"type": "fields", "field_id": "EmailAddress", "operator": "begins with", "value": "drop"}]]
    )
    for bad in (
        "[]",
        "[[]]",
        "[[{}]]",
        "not json",
        '[[{"type":"fields","field_id":"EmailAddress","operator":"sounds like","value":"x"}]]',
    ):
        body = (await api.post({**base, "RulesJSON": bad}))[1]
        assert body["ErrorCode"] == [7] and body["ErrorText"][0], (bad, body)
    # A JSON array where a string is required is rejected too, and changes nothing.
    assert (await api.post({**base, "RulesJSON": json.loads(drop)}))[1]["ErrorCode"] == [7]
    tags = json.dumps([[{"type": "tags", "operator": "has this tag", "value": "1"}]])
    assert (await api.post({**base, "RulesJSON": tags}))[1]["ErrorCode"] == [11]
    assert (await api.post({**base, "RulesJSON": drop, "Preview": 1}))[1]["Success"] is True
    active = await api.call("subscribers.get", user.api_key, SubscriberListID=list_id, SubscriberSegment="Active")
    assert active["TotalSubscribers"] == 3
    assert (await api.post({**base, "RulesJSON": drop, "RulesOperator": "and"}))[1]["Success"] is True
    active = await api.call("subscribers.get", user.api_key, SubscriberListID=list_id, SubscriberSegment="Active")
    assert [s["EmailAddress"] for s in active["Subscribers"]] == ["keep@example.com"]


async def test_subscribers_delete_by_ids_rules_or_suppression(
    api: Api, user: User, audience: Audience, make_user: Any
) -> None:
    list_id = await new_list(api, user)
    ids = [await audience.add(user, list_id, f"{n}@example.com") for n in ("a", "b", "c", "d")]
    body = await api.call(
        "subscribers.delete", user.api_key, SubscriberListID=list_id, Subscribers=f"{ids[0]},{ids[1]}"
    )
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    rules = json.dumps(
        [[{"type": "fields", "field_id": "EmailAddress", "operator": "is", "value": "C@example.com"}]]
    )
    assert (await api.call("subscribers.delete", user.api_key, SubscriberListID=list_id, RulesJSON=rules))[
        "Success"
    ] is True
    left = await api.call("subscribers.get", user.api_key, SubscriberListID=list_id, SubscriberSegment="Active")
    assert [s["SubscriberID"] for s in left["Subscribers"]] == [ids[3]]
    await audience.stub.AddSuppressions(
        audience_pb2.AddSuppressionsRequest(email_addresses=["d@example.com"]), metadata=audience.md(user)
    )
    assert await audience.count(user, [(list_id, 0)]) == 0
    body = await api.call(
        "subscribers.delete", user.api_key, SubscriberListID=list_id, Subscribers=ids[3], Suppressed=True
    )
    assert body["Success"] is True and await audience.count(user, [(list_id, 0)]) == 1
    foreign = await new_list(api, await make_user())
    tags = json.dumps([[{"type": "journeys", "operator": "in", "value": "1"}]])
    assert await code_of(api, user, "subscribers.delete", Subscribers="1") == [2]
    assert await code_of(api, user, "subscribers.delete", SubscriberListID=foreign, Subscribers="1") == 5
    assert await code_of(api, user, "subscribers.delete", SubscriberListID=list_id, RulesJSON=tags) == [6]
    assert await code_of(api, user, "subscribers.delete", SubscriberListID=list_id, RulesJSON="[[{}]]") == [7]
    assert await code_of(api, user, "subscribers.delete", SubscriberListID=list_id, Subscribers="1,abc") == [8]
    assert await code_of(api, user, "subscribers.delete", SubscriberListID=list_id) == [8]


# --- segments -----------------------------------------------------------------------------------------------


async def test_segment_create_get_and_delete(api: Api, user: User, audience: Audience, make_user: Any) -> None:
    list_id = await new_list(api, user)
    size = await audience.field(user, list_id, "size")
    for i, name in enumerate(["ann", "bob", "cid"]):
        await audience.add(
            user, list_id, f"{name}@example.com", first_name=name.title(), custom={str(size): str(i * 10)}
        )
    rules = json.dumps(
        [
            [
                {"type": "fields", "field_id": "FirstName", "operator": "is", "value": "ann"},
                {"type": "fields", "field_id": str(size), "operator": ">", "value": "15"},
            ]
        ]
    )
    body = await api.call(
        "segment.create",
        user.api_key,
        SubscriberListID=list_id,
        SegmentName="Ann or big",
        SegmentOperator="and",
        RulesJson=rules,
        Randomness="yes",
        RandomnessAudienceSize="lots",
    )
    assert set(body) == {"Success", "ErrorCode", "SegmentID"}, body
    first = body["SegmentID"]
    second = (
        await api.call(
            "segment.create", user.api_key, SubscriberListID=list_id, SegmentName="Zed", SegmentOperator="OR"
        )
    )["SegmentID"]
    body = await api.call("segments.get", user.api_key, SubscriberListID=list_id)
    assert set(body) == {"Success", "ErrorCode", "TotalSegmentCount", "Segments"}
    assert [s["SegmentName"] for s in body["Segments"]] == ["Zed", "Ann or big"]  # default: name, DESC
    row = body["Segments"][1]
    assert (
        row["SubscriberCount"] == 2
        and row["SegmentOperator"] == "and"
        and json.loads(row["SegmentRulesJson"]) == row["SegmentRules"]
    )
    assert row["Options"] == {"Randomness": True, "RandomnessAudienceSize": 0}
    assert body["Segments"][0]["SubscriberCount"] == 3  # no rules: the whole list
    body = await api.call(
        "segments.get",
        user.api_key,
        SubscriberListID=list_id,
        OrderField="SegmentID",
        OrderType="ASC",
        IncludeTotals=False,
    )
    assert [s["SegmentID"] for s in body["Segments"]] == [first, second] and body["Segments"][0][
        "SubscriberCount"
    ] == 0
    foreign = await new_list(api, await make_user())
    assert await code_of(api, user, "segment.create") == [1, 2, 3]
    assert await code_of(
        api, user, "segment.create", SubscriberListID=list_id, SegmentName="x", SegmentOperator="xor"
    ) == [3]
    assert await code_of(
        api, user, "segment.create", SubscriberListID=foreign, SegmentName="x", SegmentOperator="and"
    ) == [4]
    assert await code_of(api, user, "segment.create", SubscriberListID=foreign, SegmentOperator="and") == [2, 4]
    bad = {"SubscriberListID": list_id, "SegmentName": "x", "SegmentOperator": "and"}
    assert await code_of(api, user, "segment.create", **bad, RulesJson=[[{"type": "fields"}]]) == [5]
    assert await code_of(
        api,
        user,
        "segment.create",
        **bad,
        RulesJson='[[{"type":"fields","field_id":"3","operator":">","value":"many"}]]',
    ) == [5]
    assert await code_of(
        api,
        user,
        "segment.create",
        **bad,
        RulesJson='[[{"type":"segments","operator":"belongs to","value":999999}]]',
    ) == [5]
    assert await code_of(
        api, user, "segment.create", **bad, RulesJson='[[{"type":"website-events","operator":"happened"}]]'
    ) == [6]
    assert await code_of(api, user, "segments.get") == [1]
    assert await code_of(api, user, "segments.get", SubscriberListID=foreign) == 1
    assert await code_of(api, user, "segments.delete") == [1]
    body = await api.call("segments.delete", user.api_key, Segments=f"{first},{second}")
    assert body == {"Success": True, "ErrorCode": 0, "ErrorText": ""}
    assert (await api.call("segments.get", user.api_key, SubscriberListID=list_id))["TotalSegmentCount"] == 0


async def test_rules_operators_and_the_alternating_connectors(user: User, audience: Audience) -> None:
    list_id = await audience.list(user)
    # Values are stored by field id, and rules name fields by id.
    age, city = str(await audience.field(user, list_id, "age")), str(await audience.field(user, list_id, "city"))
    people = {
        "a@example.com": {age: "30", city: "Paris"},
        "b@example.com": {age: "x", city: "Lyon"},
        "c@example.com": {age: "12", city: "paris"},
        "d@example.com": {},
    }
    for email, custom in people.items():
        await audience.add(user, list_id, email, custom=custom)

    async def members(rules: list[Any], operator: str = "and") -> list[str]:
        bundle = {"criteria": [{"list_id": list_id, "operator": operator, "rules": rules}]}
        return sorted(await audience.emails(user, bundle=bundle))

    def rule(field: str, operator: str, value: Any = None) -> dict[str, Any]:
        return {"type": "fields", "field_id": field, "operator": operator, "value": value}

    assert await members([[rule(age, ">", 18)]]) == ["a@example.com"]  # "x" is not a number: no match
    assert await members([[rule(age, "<=", "12")]]) == ["c@example.com"]
    assert await members([[rule(city, "is", "PARIS")]]) == ["a@example.com", "c@example.com"]
    assert await members([[rule(city, "is not", "paris")]]) == ["b@example.com", "d@example.com"]
    assert await members([[rule(city, "is not set")]]) == ["d@example.com"]
    assert await members([[rule("EmailAddress", "ends with", "b@example.com")]]) == ["b@example.com"]
    assert await members([[rule("SubscriptionDate", "is set")]]) == []
    paris, adult, lyon = rule(city, "is", "paris"), rule(age, ">=", 18), rule(city, "contains", "yo")
    # "and": groups AND-ed, rules in a group OR-ed, rules in a sub-group AND-ed; "or" the reverse.
    assert await members([[paris, lyon], [adult]], "and") == ["a@example.com"]
    assert await members([[paris, adult], [lyon]], "or") == ["a@example.com", "b@example.com"]
    assert await members([[lyon, [paris, adult]]], "and") == ["a@example.com", "b@example.com"]
    assert await members([[{"type": "suppressions", "operator": "exist"}]]) == []
    assert await members([[{"type": "suppressions", "operator": "sideways"}]]) == []  # unknown: nobody (5.9.4)


# --- targeting ----------------------------------------------------------------------------------------------


async def test_targeting_combines_lists_segments_exclusions_and_suppression(
    user: User, audience: Audience
) -> None:
    first, second, blocked = (
        await audience.list(user, "first"),
        await audience.list(user, "second"),
        await audience.list(user, "blocked"),
    )
    for i in range(6):
        await audience.add(user, first, f"p{i}@example.com", first_name="vip" if i < 2 else "")
    for email in ("P0@example.com", "p1@example.com", "q@example.com", "r@example.com"):
        await audience.add(user, second, email)  # overlaps with the first list
    await audience.add(user, second, "gone@example.com", status=audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED)
    await audience.add(user, second, "pending@example.com", status=audience_pb2.SUBSCRIBER_STATUS_OPT_IN_PENDING)
    await audience.add(user, blocked, "p5@example.com", status=audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED)
    vip = await audience.segment(
        user, first, [[{"type": "fields", "field_id": "FirstName", "operator": "is", "value": "VIP"}]]
    )

    assert await audience.count(user, [(first, 0)]) == 6
    both = await audience.emails(user, [(first, 0), (second, 0)], chunk_size=2)
    assert len(both) == 8 and both[:6] == [
        f"p{i}@example.com" for i in range(6)
    ]  # duplicates once, lowest id first
    assert await audience.count(user, [(first, 0), (second, 0)]) == 8
    assert sorted(await audience.emails(user, [(first, vip)])) == ["p0@example.com", "p1@example.com"]
    assert await audience.count(user, [(first, vip), (first, 0)]) == 6
    assert await audience.count(user, [(second, 0)], [(first, vip)]) == 2
    assert await audience.count(user, [(first, 0)], [(blocked, 0)]) == 5  # excluded whatever the status there
    assert await audience.count(user, [(first, 0), (second, 0)], [(second, 0)]) == 4
    await audience.stub.AddSuppressions(
        audience_pb2.AddSuppressionsRequest(email_addresses=["Q@EXAMPLE.COM", "p2@example.com"]),
        metadata=audience.md(user),
    )
    assert await audience.count(user, [(first, 0), (second, 0)]) == 6
    # Resuming a stream and limiting it.
    everyone = await audience.emails(user, [(first, 0), (second, 0)])
    assert await audience.emails(user, [(first, 0), (second, 0)], limit=3) == everyone[:3]
    # The bundle alone, and the bundle narrowing the included lists.
    in_second = {"list_id": second, "operator": "and", "rules": []}
    vip_rule = {
        "list_id": first,
        "operator": "and",
        "rules": [[{"type": "fields", "field_id": "FirstName", "operator": "is", "value": "vip"}]],
    }
    assert await audience.count(user, bundle={"operator": "and", "criteria": [in_second, vip_rule]}) == 2
    assert await audience.count(user, bundle={"operator": "or", "criteria": [in_second, vip_rule]}) == 3
    assert await audience.count(user, [(first, 0)], bundle={"operator": "and", "criteria": [in_second]}) == 2
    assert (
        await audience.count(
            user, [(first, 0)], [(first, vip)], bundle={"operator": "or", "criteria": [in_second]}
        )
        == 0
    )
    assert await audience.count(user) == 0
    # A random segment is a stable sample of its size: the count and the stream agree, call after call.
    sample = await audience.segment(user, first, [], randomness=True, randomness_audience_size=2)
    picked = await audience.emails(user, [(first, sample)])
    assert len(picked) == 2 and await audience.emails(user, [(first, sample)]) == picked
    mixed = await audience.emails(user, [(first, sample), (second, 0)], [(first, sample)])
    assert not set(mixed) & set(picked)


async def test_targeting_errors_are_clear_never_an_empty_audience(
    user: User, audience: Audience, make_user: Any
) -> None:
    own = await audience.list(user)
    other = await make_user()
    foreign = await audience.list(other)
    foreign_segment = await audience.segment(other, foreign, [])
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        ({"included": [(foreign, 0)]}, grpc.StatusCode.NOT_FOUND, "LIST_NOT_FOUND"),
        ({"included": [(own, 0)], "excluded": [(foreign, 0)]}, grpc.StatusCode.NOT_FOUND, "LIST_NOT_FOUND"),
        ({"included": [(own, foreign_segment)]}, grpc.StatusCode.NOT_FOUND, "SEGMENT_NOT_FOUND"),
        ({"included": [(foreign, foreign_segment)]}, grpc.StatusCode.NOT_FOUND, "LIST_NOT_FOUND"),
        (
            {"bundle": {"criteria": [{"list_id": foreign, "rules": []}]}},
            grpc.StatusCode.NOT_FOUND,
            "LIST_NOT_FOUND",
        ),
        (
            {"bundle": {"operator": "xor", "criteria": [{"list_id": own}]}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "RULES_BUNDLE_INVALID",
        ),
        ({"bundle": {"criteria": []}}, grpc.StatusCode.INVALID_ARGUMENT, "RULES_BUNDLE_INVALID"),
        ({"bundle": {"criteria": [{"rules": []}]}}, grpc.StatusCode.INVALID_ARGUMENT, "RULES_BUNDLE_INVALID"),
        (
            {"bundle": {"criteria": [{"list_id": own, "rules": "[[...]]"}]}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "RULES_BUNDLE_INVALID",
        ),
        (
            {"bundle": {"criteria": [{"list_id": own, "rules": [[{"type": "fields", "operator": "is"}]]}]}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "RULES_BUNDLE_INVALID",
        ),
        (
            {"bundle": {"criteria": [{"list_id": own, "rules": [[{"type": "tags", "operator": "has no tags"}]]}]}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "RULE_TYPE_UNSUPPORTED",
        ),
        ({"bundle": {"criterias": []}}, grpc.StatusCode.INVALID_ARGUMENT, "RULES_BUNDLE_INVALID"),
    ]
    for spec, code, reason in cases:
        request = audience.request(spec.get("included", []), spec.get("excluded", []), spec.get("bundle"))
        error = await audience.failure(audience.stub.CountRecipients(request, metadata=audience.as_delivery(user)))
        assert error.code() == code and decode_error(error).reason == reason, (spec, error)
        targeting = audience_pb2.TargetingSpec(
            included=request.included, excluded=request.excluded, rules_bundle=request.rules_bundle
        )
        stream = audience.stub.StreamRecipients(
            audience_pb2.StreamRecipientsRequest(targeting=targeting), metadata=audience.as_delivery(user)
        )
        error = await audience.failure(stream.read())
        assert decode_error(error).reason == reason


# --- isolation ----------------------------------------------------------------------------------------------


async def test_users_never_see_or_change_each_others_audience(
    api: Api, user: User, make_user: Any, audience: Audience
) -> None:
    list_id = await new_list(api, user)
    subscriber_id = (await add(api, user, list_id, "mine@example.com"))["SubscriberInformation"]["SubscriberID"]
    segment_id = (
        await api.call(
            "segment.create", user.api_key, SubscriberListID=list_id, SegmentName="s", SegmentOperator="and"
        )
    )["SegmentID"]
    intruder = await make_user()
    key = intruder.api_key
    assert (await api.call("list.get", key, ListID=list_id))["ErrorCode"] == 1
    assert (await api.call("lists.get", key))["TotalListCount"] == 0
    assert (await api.call("subscriber.create", key, ListID=list_id, EmailAddress="x@example.com", **SUBSCRIBED))[
        "ErrorCode"
    ] == 23
    assert (await api.call("subscriber.get", key, ListID=list_id, SubscriberID=subscriber_id))["ErrorCode"] == 4
    assert (await api.call("subscribers.get", key, SubscriberListID=list_id, SubscriberSegment="Active"))[
        "ErrorCode"
    ] == 3
    assert (await api.call("subscribers.delete", key, SubscriberListID=list_id, Subscribers=subscriber_id))[
        "ErrorCode"
    ] == 5
    assert (
        await api.call("segment.create", key, SubscriberListID=list_id, SegmentName="s", SegmentOperator="and")
    )["ErrorCode"] == [4]
    assert (await api.call("segments.get", key, SubscriberListID=list_id))["ErrorCode"] == 1
    assert (await api.call("segments.delete", key, Segments=segment_id))["Success"] is True
    assert (await api.call("lists.delete", key, Lists=list_id))["Success"] is True
    error = await audience.failure(
        audience.stub.CountRecipients(
            audience.request([(list_id, 0)], [], None), metadata=audience.as_delivery(intruder)
        )
    )
    assert decode_error(error).reason == "LIST_NOT_FOUND"
    # Nothing of the owner's changed.
    body = await api.call("segments.get", user.api_key, SubscriberListID=list_id)
    assert body["TotalSegmentCount"] == 1 and body["Segments"][0]["SubscriberCount"] == 1
    assert await audience.count(user, [(list_id, 0)]) == 1


async def test_permissions_are_checked(api: Api, make_user: Any) -> None:
    reader = await make_user(permissions=["Lists.Get"])
    assert (await api.call("lists.get", reader.api_key))["Success"] is True
    for command in ("list.create", "subscriber.create", "subscribers.get", "segment.create", "subscribers.delete"):
        assert (await api.call(command, reader.api_key))["ErrorCode"] == 99999, command
    status, body = await api.post(
        {"APIKey": reader.api_key, "SubscriberListName": "x"}, path="/api/v1/list.create"
    )
    assert status == 400 and body["ErrorCode"] == 100003  # only subscriber.create has a /api/v1 alias here
