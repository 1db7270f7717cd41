"""The campaign stores' SQL on a real PostgreSQL: owner scoping, search, recursive deletes, the picker's claim."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.campaign import email_store, store
from services.campaign.domain import CampaignFilter
from services.campaign.email_domain import Email
from tests.store.conftest import new_id

SERVICES = ("campaign",)


async def _campaign(conn: AsyncConnection, owner: int, name: str = "Campaign") -> int:
    return (await store.insert_campaign(conn, owner_user_id=owner, name=name)).campaign_id


async def _make_due(conn: AsyncConnection, campaign_id: int, minutes_ago: int) -> None:
    """Ready, to be sent at once since `minutes_ago` (what scheduling a campaign leaves)."""
    await conn.execute(
        sa.text(
            "UPDATE campaign.campaigns SET status = 'Ready', schedule_type = 'Immediate', "
            "scheduled_at = now() - make_interval(mins => :m) WHERE campaign_id = :c"
        ),
        {"c": campaign_id, "m": minutes_ago},
    )


async def test_a_campaign_is_found_by_its_owner_and_an_admin_only(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    mine, theirs = await _campaign(conn, owner), await _campaign(conn, other)

    assert await store.campaign_by_id(conn, mine, other) is None
    assert (await store.campaign_by_id(conn, mine, None)) is not None
    assert not await store.campaign_exists(conn, mine, other)
    assert [c.campaign_id for c in await store.campaigns_by_ids(conn, [mine, theirs], owner)] == [mine]
    assert [c.campaign_id for c in await store.campaigns_by_ids(conn, [theirs, mine], None)] == [mine, theirs]


async def test_a_name_search_takes_wildcards_literally_within_the_owners_campaigns(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    ids = {name: await _campaign(conn, owner, name) for name in ("Save 50% now", "Save 500 now", "a_b", "axb")}
    await _campaign(conn, other, "Save 50% too")

    async def found(search: str) -> list[int]:
        return await store.matching_campaign_ids(conn, CampaignFilter(owner_user_id=owner, search=search), 100)

    assert await found("50%") == [ids["Save 50% now"]]
    assert await found("A_B") == [ids["a_b"]]
    assert await store.count_matching_campaigns(conn, CampaignFilter(owner_user_id=owner, search="save")) == 2


async def test_deleting_a_campaign_deletes_its_auto_resends_and_only_the_owners(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    original, resend, resend_of_resend = (
        await _campaign(conn, owner),
        await _campaign(conn, owner),
        await _campaign(conn, owner),
    )
    kept, theirs = await _campaign(conn, owner), await _campaign(conn, other)
    link = sa.text("UPDATE campaign.campaigns SET original_campaign_id = :o WHERE campaign_id = :c")
    await conn.execute(link, [{"c": resend, "o": original}, {"c": resend_of_resend, "o": resend}])

    deleted = await store.delete_campaigns_with_auto_resends(conn, [original, theirs], owner)
    assert sorted(deleted) == sorted([(original, owner), (resend, owner), (resend_of_resend, owner)])
    assert await store.campaign_exists(conn, kept, owner)
    assert await store.campaign_exists(conn, theirs, other)


async def test_emails_are_found_while_not_deleted_and_only_by_their_owner(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    kept = (await email_store.insert_email(conn, Email(email_id=0, owner_user_id=owner))).email_id
    deleted = (await email_store.insert_email(conn, Email(email_id=0, owner_user_id=owner))).email_id
    theirs = (await email_store.insert_email(conn, Email(email_id=0, owner_user_id=other))).email_id
    assert await email_store.delete_email(conn, deleted, other) is None
    assert await email_store.delete_email(conn, deleted, owner) == deleted

    assert await email_store.owned_email_ids(conn, [kept, deleted, theirs], owner) == {kept}
    assert [e.email_id for e in await email_store.emails_by_ids(conn, [theirs, deleted, kept], None)] == [
        kept,
        theirs,
    ]
    copies = await email_store.insert_email_copies(conn, [kept, deleted, theirs], owner)
    assert list(copies) == [kept] and copies[kept] not in (kept, deleted, theirs)
    assert await store.live_email_ids(conn, owner, [kept, deleted, copies[kept]]) == {kept, copies[kept]}


async def test_due_campaigns_are_claimed_oldest_first_and_never_by_two_pickers(engine: AsyncEngine) -> None:
    owner = new_id()
    async with engine.begin() as setup:
        oldest, newer, later = (
            await _campaign(setup, owner),
            await _campaign(setup, owner),
            await _campaign(setup, owner),
        )
        await _make_due(setup, oldest, 30)
        await _make_due(setup, newer, 20)
        await _make_due(setup, later, -60)  # due in an hour
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            await second.begin()
            # Waiting for the first picker's lock would be a failure: SKIP LOCKED must not wait.
            await second.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            picked_first = [c.campaign_id for c, _ in await store.due_campaigns_for_update(first, 1)]
            picked_second = [c.campaign_id for c, _ in await store.due_campaigns_for_update(second, 10)]
            await first.rollback()
            await second.rollback()
        assert (picked_first, picked_second) == ([oldest], [newer])
    finally:
        async with engine.begin() as cleanup:
            await store.delete_campaigns_with_auto_resends(cleanup, [oldest, newer, later], owner)
