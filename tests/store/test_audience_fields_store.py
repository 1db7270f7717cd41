"""The audience store's custom field SQL on a real PostgreSQL: definitions per owner and list, aliases, uniqueness
look-ups, and deleting a field with its values."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience import domain, messages, store
from services.audience.domain import FieldOption, FieldSpec
from tests.store.conftest import new_id

SERVICES = ("audience",)


async def _list(conn: AsyncConnection, owner: int) -> int:
    return (await store.inserted_list(conn, owner, domain.NewList(name="List"))).list_id


async def _subscriber(conn: AsyncConnection, owner: int, list_id: int, address: str, **custom: str) -> int:
    email_address, key = domain.normalise_email(address)
    new = domain.NewSubscriber(list_id=list_id, email_address=email_address, email_key=key, custom_fields=custom)
    subscriber_id = await store.inserted_subscriber_id(conn, owner, new)
    assert subscriber_id is not None
    return subscriber_id


async def _field(conn: AsyncConnection, owner: int, list_id: int | None, name: str, **settings: Any) -> int:
    spec = FieldSpec(name=name, is_global=list_id is None, **settings)
    return (await store.inserted_custom_field(conn, owner, list_id, spec)).custom_field_id


async def test_a_definition_is_stored_whole_and_read_back_only_by_its_owner(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    list_id = await _list(conn, owner)
    spec = FieldSpec(
        name="Colour",
        field_type="Checkboxes",
        options=(FieldOption("Red", "red", True), FieldOption("Blue", "blue")),
        required=True,
        unique=True,
        validation_method="Custom",
        validation_rule="^[a-z, ]+$",
        merge_tag_alias="colour",
        visibility="Public",
    )
    created = await store.inserted_custom_field(conn, owner, list_id, spec)
    assert created.spec == spec and created.list_id == list_id and created.owner_user_id == owner

    assert await store.custom_field_by_id(conn, created.custom_field_id, owner) == created
    assert await store.custom_field_by_id(conn, created.custom_field_id, None) == created
    assert await store.custom_field_by_id(conn, created.custom_field_id, other) is None


async def test_a_list_sees_its_own_fields_and_its_owners_global_ones_only(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    mine, second, theirs = await _list(conn, owner), await _list(conn, owner), await _list(conn, other)
    own = await _field(conn, owner, mine, "b own")
    await _field(conn, owner, second, "second list's")
    shared = await _field(conn, owner, None, "a global")
    await _field(conn, other, theirs, "theirs")
    await _field(conn, other, None, "their global")

    seen = await store.fields_of_lists(conn, [mine, theirs])
    assert [f.custom_field_id for f in seen[mine]] == [own, shared]
    assert [f.spec.name for f in seen[theirs]] == ["theirs", "their global"]

    page = await store.custom_fields_page(conn, owner=owner, list_id=mine, include_global=True)
    assert [f.spec.name for f in page] == ["a global", "b own"]
    assert [
        f.custom_field_id
        for f in await store.custom_fields_page(conn, owner=owner, list_id=mine, include_global=False)
    ] == [own]
    assert [
        f.custom_field_id
        for f in await store.custom_fields_page(conn, owner=owner, list_id=None, include_global=False)
    ] == [shared]
    by_id = await store.custom_fields_page(
        conn, owner=owner, list_id=mine, include_global=True, order_by="custom_field_id", descending=True
    )
    assert [f.custom_field_id for f in by_id] == [shared, own]


async def test_an_alias_is_taken_by_a_field_the_same_lists_see_whatever_its_case(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    mine, second = await _list(conn, owner), await _list(conn, owner)
    field_id = await _field(conn, owner, mine, "Company", merge_tag_alias="Company")
    await store.lock_owner_fields(conn, owner)

    assert await store.alias_in_use(conn, owner, "company", mine)
    assert not await store.alias_in_use(conn, owner, "company", mine, except_id=field_id)
    # Another list of the owner's has a namespace of its own, but a global field would meet this one.
    assert not await store.alias_in_use(conn, owner, "company", second)
    assert await store.alias_in_use(conn, owner, "COMPANY", None)
    assert not await store.alias_in_use(conn, other, "company", None)
    await _field(conn, owner, None, "Region", merge_tag_alias="region")
    assert await store.alias_in_use(conn, owner, "Region", second)


async def test_updating_a_field_can_make_it_global(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    field_id = await _field(conn, owner, list_id, "Company")
    updated = await store.updated_custom_field(conn, field_id, None, FieldSpec(name="Firm", is_global=True))
    assert (updated.list_id, updated.spec.name, updated.spec.is_global) == (None, "Firm", True)


async def test_deleting_fields_deletes_the_owners_only_with_every_value_of_them(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    mine, theirs = await _list(conn, owner), await _list(conn, other)
    kept = await _field(conn, owner, mine, "Kept")
    dropped = await _field(conn, owner, None, "Dropped")
    foreign = await _field(conn, other, theirs, "Foreign")
    subscriber_id = await _subscriber(conn, owner, mine, "a@example.com", **{str(kept): "k", str(dropped): "d"})

    assert await store.deleted_custom_field_ids(conn, [dropped, foreign, 999_999_999], owner) == [dropped]
    record = await store.subscriber_by(conn, mine, subscriber_id=subscriber_id)
    assert record is not None and record.custom_fields == {str(kept): "k"}
    assert await store.custom_field_by_id(conn, foreign, other) is not None


async def test_a_unique_value_clashes_with_another_subscriber_of_the_list_only(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id, other_list = await _list(conn, owner), await _list(conn, owner)
    await _subscriber(conn, owner, list_id, "holder@example.com", **{"1": " ABC ", "2": "x"})
    await _subscriber(conn, owner, other_list, "elsewhere@example.com", **{"3": "free"})
    await store.lock_unique_values(conn, list_id)

    assert await store.clashing_field_ids(conn, list_id, {1: "abc", 2: "y", 3: "free"}, "new@example.com") == {1}
    # The subscriber's own value is no clash (an update of a duplicate keeps it).
    assert await store.clashing_field_ids(conn, list_id, {1: "abc"}, "holder@example.com") == set()
    assert await store.clashing_field_ids(conn, list_id, {}, "new@example.com") == set()


async def test_streamed_recipients_carry_each_value_by_id_and_alias_with_defaults(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    company = await _field(conn, owner, list_id, "Company", merge_tag_alias="company")
    city = await _field(conn, owner, list_id, "City", merge_tag_alias="town", default_value="Berlin")
    region = await _field(conn, owner, None, "Region", default_value="EU")
    await _subscriber(conn, owner, list_id, "a@example.com", **{str(company): "Acme", "legacy": "kept"})
    await _subscriber(conn, owner, list_id, "b@example.com", **{str(city): "Oslo"})
    query = store.RecipientQuery(domain.validate_targeting([(list_id, 0)], [], {}), {})

    rows = await store.recipient_rows(conn, query, 0, 10)
    streamed = messages.recipients_message(rows, await store.fields_of_lists(conn, [list_id])).recipients
    assert {r.email_address: dict(r.custom_fields) for r in streamed} == {
        "a@example.com": {
            str(company): "Acme",
            "company": "Acme",
            str(city): "Berlin",
            "town": "Berlin",
            str(region): "EU",
            "legacy": "kept",
        },
        "b@example.com": {str(city): "Oslo", "town": "Oslo", str(region): "EU"},
    }
