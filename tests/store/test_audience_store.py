"""The audience store's SQL on a real PostgreSQL: owner scoping, search, set-based writes, recipient streams."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience import domain, rules, store
from tests.store.conftest import new_id

SERVICES = ("audience",)


async def _list(conn: AsyncConnection, owner: int, name: str = "List", description: str = "") -> int:
    created = await store.inserted_list(conn, owner, domain.NewList(name=name, description=description))
    return created.list_id


async def _subscriber(conn: AsyncConnection, owner: int, list_id: int, address: str, **fields: Any) -> int:
    email_address, key = domain.normalise_email(address)
    new = domain.NewSubscriber(list_id=list_id, email_address=email_address, email_key=key, **fields)
    subscriber_id = await store.inserted_subscriber_id(conn, owner, new)
    assert subscriber_id is not None
    return subscriber_id


async def _page(conn: AsyncConnection, owner: int | None, search: str = "") -> list[domain.MailingList]:
    found, total = await store.lists_page(
        conn, owner, page_size=0, skip=0, order_by="list_id", descending=False, search=search, archived=None
    )
    assert total == len(found)
    return found


# --- owner scoping ----------------------------------------------------------------------------------------------


async def test_a_list_is_found_by_its_owner_and_an_admin_only(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    mine, theirs = await _list(conn, owner), await _list(conn, other)

    assert (await store.list_by_id(conn, mine, owner)) is not None
    assert await store.list_by_id(conn, mine, other) is None
    assert (await store.list_by_id(conn, mine, None)) is not None
    assert set(await store.lists_by_id(conn, [mine, theirs], owner)) == {mine}
    assert set(await store.lists_by_id(conn, [mine, theirs], None)) == {mine, theirs}
    assert [found.list_id for found in await _page(conn, owner)] == [mine]


async def test_deleting_lists_deletes_only_the_owners_with_their_subscribers_and_segments(
    conn: AsyncConnection,
) -> None:
    owner, other = new_id(), new_id()
    mine, theirs = await _list(conn, owner), await _list(conn, other)
    subscriber_id = await _subscriber(conn, owner, mine, "a@example.com")
    await store.inserted_segment(
        conn,
        owner,
        domain.validate_new_segment(
            list_id=mine, name="All", operator="and", raw_rules=[], randomness=False, audience_size=0
        ),
    )

    assert await store.deleted_list_count(conn, [mine, theirs], owner) == 1
    assert await store.list_by_id(conn, theirs, other) is not None
    assert await store.subscriber_by(conn, mine, subscriber_id=subscriber_id) is None
    assert await store.segments_of_lists(conn, [mine]) == []


async def test_segments_are_deleted_only_for_their_owner(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    list_id = await _list(conn, owner)
    new = domain.validate_new_segment(
        list_id=list_id, name="All", operator="and", raw_rules=[], randomness=False, audience_size=0
    )
    segment = await store.inserted_segment(conn, owner, new)

    assert await store.deleted_segment_count(conn, [segment.segment_id], other) == 0
    assert await store.deleted_segment_count(conn, [segment.segment_id], owner) == 1


# --- search and counts ------------------------------------------------------------------------------------------


async def test_list_search_takes_wildcards_and_backslashes_literally(conn: AsyncConnection) -> None:
    owner = new_id()
    names = {name: await _list(conn, owner, name) for name in ("50% off", "500 off", "a_b", "axb", "c:\\d", "c:d")}

    async def found(search: str) -> set[str]:
        return {item.name for item in await _page(conn, owner, search)}

    assert await found("50%") == {"50% off"}
    assert await found("a_b") == {"a_b"}
    assert await found("c:\\") == {"c:\\d"}
    assert await found("OFF") == {"50% off", "500 off"}
    assert len(names) == 6


async def test_a_lists_counts_are_of_its_own_rows(conn: AsyncConnection) -> None:
    owner = new_id()
    counted, other = await _list(conn, owner), await _list(conn, owner)
    await _subscriber(conn, owner, counted, "a@example.com")
    await _subscriber(conn, owner, counted, "b@example.com")
    await _subscriber(conn, owner, counted, "c@example.com", status="Unsubscribed")
    await _subscriber(conn, owner, other, "a@example.com")
    new = domain.validate_new_segment(
        list_id=counted, name="All", operator="and", raw_rules=[], randomness=False, audience_size=0
    )
    await store.inserted_segment(conn, owner, new)

    found = await store.list_by_id(conn, counted, owner, counted=True)
    assert found is not None
    assert (found.subscriber_count, found.active_subscriber_count, found.segment_count) == (3, 2, 1)


async def test_a_segment_rule_takes_wildcards_literally(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    for address in ("first_last@example.com", "firstXlast@example.com", "other@example.com"):
        await _subscriber(conn, owner, list_id, address)
    rule = {"type": "fields", "field_id": "EmailAddress", "operator": "contains", "value": "t_l"}
    segment = rules.SegmentDefinition(1, list_id, "and", rules.parse_criteria([[rule]]))

    assert await store.member_count(conn, segment, {1: segment}) == 1


# --- set-based writes ---------------------------------------------------------------------------------------------


async def test_an_address_already_on_the_list_is_not_added_again(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    first = await _subscriber(conn, owner, list_id, "Someone@Example.com")
    address, key = domain.normalise_email("someone@EXAMPLE.com")
    again = domain.NewSubscriber(list_id=list_id, email_address=address, email_key=key)

    assert await store.inserted_subscriber_id(conn, owner, again) is None
    assert await store.existing_subscriber(conn, list_id, key) == (first, "Subscribed")


async def test_suppressions_are_added_once_per_owner_and_mark_only_that_owners_subscribers(
    conn: AsyncConnection,
) -> None:
    owner, other = new_id(), new_id()
    mine, theirs = await _list(conn, owner), await _list(conn, other)
    suppressed = await _subscriber(conn, owner, mine, "gone@example.com")
    same_address = await _subscriber(conn, other, theirs, "gone@example.com")

    assert await store.added_suppression_count(conn, owner, ["gone@example.com", "x@example.com"]) == 2
    assert await store.added_suppression_count(conn, owner, ["x@example.com", "y@example.com"]) == 1
    assert await store.added_suppression_count(conn, owner, []) == 0

    found = await store.subscriber_by(conn, mine, subscriber_id=suppressed)
    assert found is not None and found.suppressed
    found = await store.subscriber_by(conn, theirs, subscriber_id=same_address)
    assert found is not None and not found.suppressed


async def test_unsubscribing_a_selection_changes_only_its_subscribed_rows(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id, other_list = await _list(conn, owner), await _list(conn, owner)
    ids = [
        await _subscriber(conn, owner, list_id, "a@example.com"),
        await _subscriber(conn, owner, list_id, "b@example.com"),
        await _subscriber(conn, owner, list_id, "c@example.com", status="Unsubscribed"),
    ]
    elsewhere = await _subscriber(conn, owner, other_list, "d@example.com")
    selection = domain.Selection(subscriber_ids=(*ids, elsewhere))

    assert await store.unsubscribable_count(conn, list_id, selection, {}) == 2
    unsubscribed = await store.unsubscribed_subscribers(conn, list_id, selection, {}, " 192.0.2.1 ")
    assert sorted(unsubscribed) == [(ids[0], "a@example.com"), (ids[1], "b@example.com")]
    assert await store.unsubscribed_subscribers(conn, list_id, selection, {}, "192.0.2.1") == []
    assert set(await store.selected_statuses(conn, list_id, selection, {}, lock=False)) == {"Unsubscribed"}
    untouched = await store.subscriber_by(conn, other_list, subscriber_id=elsewhere)
    assert untouched is not None and untouched.status == "Subscribed"
    changed = await store.subscriber_by(conn, list_id, subscriber_id=ids[0])
    assert changed is not None and changed.unsubscription_ip == "192.0.2.1"


async def test_removing_suppressions_by_selection_touches_the_owners_entries_only(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    list_id = await _list(conn, owner)
    subscriber_id = await _subscriber(conn, owner, list_id, "gone@example.com")
    await store.added_suppression_count(conn, owner, ["gone@example.com"])
    await store.added_suppression_count(conn, other, ["gone@example.com"])
    selection = domain.Selection(subscriber_ids=(subscriber_id,))

    assert await store.unsuppressed_count(conn, owner, list_id, selection, {}) == 1
    assert await store.added_suppression_count(conn, other, ["gone@example.com"]) == 0


# --- recipients ---------------------------------------------------------------------------------------------------


async def test_recipients_are_subscribed_unsuppressed_not_excluded_and_each_address_once(
    conn: AsyncConnection,
) -> None:
    owner = new_id()
    first, second, excluded = await _list(conn, owner), await _list(conn, owner), await _list(conn, owner)
    await _subscriber(conn, owner, first, "suppressed@example.com")
    both = await _subscriber(conn, owner, first, "both@example.com")
    await _subscriber(conn, owner, first, "left@example.com", status="Unsubscribed")
    await _subscriber(conn, owner, second, "BOTH@example.com")
    await _subscriber(conn, owner, second, "excluded@example.com")
    only_second = await _subscriber(conn, owner, second, "second@example.com")
    await _subscriber(conn, owner, excluded, "excluded@example.com")
    await store.added_suppression_count(conn, owner, ["suppressed@example.com"])
    targeting = domain.validate_targeting([(first, 0), (second, 0)], [(excluded, 0)], {})
    query = store.RecipientQuery(targeting, {})

    assert await store.recipient_count(conn, query) == 2
    page = await store.recipient_rows(conn, query, 0, 1)
    assert [(row[0], row[2]) for row in page] == [(both, "both@example.com")]
    page = await store.recipient_rows(conn, query, page[-1][0], 10)
    assert [(row[0], row[2]) for row in page] == [(only_second, "second@example.com")]
    assert await store.recipient_rows(conn, query, only_second, 10) == []


async def test_a_recipients_custom_fields_come_as_json_text_or_none(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    await _subscriber(conn, owner, list_id, "plain@example.com")
    await _subscriber(conn, owner, list_id, "custom@example.com", custom_fields={"7": "Berlin"})
    query = store.RecipientQuery(domain.validate_targeting([(list_id, 0)], [], {}), {})

    rows = await store.recipient_rows(conn, query, 0, 10)
    assert {row[2]: store.custom_fields_of(row[5]) for row in rows} == {
        "plain@example.com": {},
        "custom@example.com": {"7": "Berlin"},
    }
    assert [row[5] for row in rows if row[2] == "plain@example.com"] == [None]
