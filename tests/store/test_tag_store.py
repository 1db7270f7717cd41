"""The tag store's SQL on a real PostgreSQL: owner scoping, unique names, set-based assignments."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.errors import DomainError
from services.tag import store
from tests.store.conftest import new_id

SERVICES = ("tag",)


async def test_a_tag_is_seen_and_changed_by_its_owner_and_an_admin_only(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    tag = await store.inserted_tag(conn, owner, "News")

    assert await store.tag_by_id(conn, tag.tag_id, other) is None
    assert await store.tag_by_id(conn, tag.tag_id, None) == tag
    assert [found.tag_id for found in await store.tags_of_owner(conn, other)] == []
    with pytest.raises(DomainError) as refused:
        await store.renamed_tag(conn, tag.tag_id, other, "Mine now")
    assert refused.value.reason == "TAG_NOT_FOUND"
    assert await store.deleted_tag_count(conn, [tag.tag_id], other) == 0
    assert await store.deleted_tag_count(conn, [tag.tag_id], owner) == 1


async def test_a_name_is_unique_per_owner_whatever_its_case(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    news = await store.inserted_tag(conn, owner, "News")
    await store.inserted_tag(conn, other, "NEWS")
    offers = await store.inserted_tag(conn, owner, "Offers")

    with pytest.raises(DomainError) as refused:
        await store.inserted_tag(conn, owner, "news")
    assert refused.value.reason == "TAG_ALREADY_EXISTS"
    with pytest.raises(DomainError) as refused:
        async with conn.begin_nested():  # the unique index refuses it, which ends the (sub)transaction
            await store.renamed_tag(conn, offers.tag_id, owner, "nEWS")
    assert refused.value.reason == "TAG_ALREADY_EXISTS"
    assert (await store.renamed_tag(conn, news.tag_id, owner, "NEWS")).name == "NEWS"


async def test_assigning_counts_only_new_assignments_and_unassigning_only_existing_ones(
    conn: AsyncConnection,
) -> None:
    owner = new_id()
    tag = await store.inserted_tag(conn, owner, "News")

    assert await store.assigned_count(conn, tag, [1, 2, 3]) == 3
    assert await store.assigned_count(conn, tag, [3, 4]) == 1
    assert await store.unassigned_count(conn, tag.tag_id, [4, 5]) == 1
    assert await store.tagged_campaign_ids(conn, [tag.tag_id], owner) == [1, 2, 3]


async def test_campaigns_are_found_by_the_owners_tags_only(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    news, offers = await store.inserted_tag(conn, owner, "News"), await store.inserted_tag(conn, owner, "Offers")
    theirs = await store.inserted_tag(conn, other, "News")
    await store.assigned_count(conn, news, [10, 11])
    await store.assigned_count(conn, offers, [11, 12])
    await store.assigned_count(conn, theirs, [13])

    assert await store.tagged_campaign_ids(conn, [news.tag_id, offers.tag_id, theirs.tag_id], owner) == [
        10,
        11,
        12,
    ]
    by_campaign = await store.tags_by_campaign(conn, [11, 13], owner)
    assert {campaign: [tag.name for tag in tags] for campaign, tags in by_campaign.items()} == {
        11: ["News", "Offers"]
    }
    assert set(await store.tags_by_campaign(conn, [11, 13], None)) == {11, 13}


async def test_a_deleted_campaign_loses_its_owners_assignments_only(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    mine, theirs = await store.inserted_tag(conn, owner, "News"), await store.inserted_tag(conn, other, "News")
    await store.assigned_count(conn, mine, [20, 21])
    await store.assigned_count(conn, theirs, [20])

    assert await store.deleted_campaign_assignment_count(conn, owner, [20]) == 1
    assert await store.tagged_campaign_ids(conn, [mine.tag_id], owner) == [21]
    assert await store.tagged_campaign_ids(conn, [theirs.tag_id], other) == [20]
