"""The campaign stores' SQL on a real PostgreSQL: owner scoping, search, recursive deletes, the picker's claim."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.campaign import email_store, store
from services.campaign.domain import CampaignFilter, CampaignStatus, ScheduleType
from services.campaign.email_domain import Email
from services.campaign.sending import AutoResendPlan
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


async def test_a_list_can_ask_for_the_campaigns_published_on_rss_or_the_others(conn: AsyncConnection) -> None:
    owner = new_id()
    published, unpublished = await _campaign(conn, owner, "On RSS"), await _campaign(conn, owner, "Not on RSS")
    await conn.execute(
        sa.text("UPDATE campaign.campaigns SET publish_on_rss = true WHERE campaign_id = :c"), {"c": published}
    )

    async def found(publish_on_rss: bool | None) -> list[int]:
        campaign_filter = CampaignFilter(owner_user_id=owner, publish_on_rss=publish_on_rss)
        return await store.matching_campaign_ids(conn, campaign_filter, 100)

    assert await found(True) == [published]
    assert await found(False) == [unpublished]
    assert sorted(await found(None)) == sorted([published, unpublished])


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
            now = datetime.now(UTC)
            picked_first = [c.campaign_id for c, _ in await store.due_campaigns_for_update(first, 1, now)]
            picked_second = [c.campaign_id for c, _ in await store.due_campaigns_for_update(second, 10, now)]
            await first.rollback()
            await second.rollback()
        assert (picked_first, picked_second) == ([oldest], [newer])
    finally:
        async with engine.begin() as cleanup:
            await store.delete_campaigns_with_auto_resends(cleanup, [oldest, newer, later], owner)


async def _email(conn: AsyncConnection, owner: int, subject: str) -> int:
    email_id = (await email_store.insert_email(conn, Email(email_id=0, owner_user_id=owner))).email_id
    await conn.execute(
        sa.text(
            "UPDATE campaign.emails SET subject = :s, preheader_text = 'before', html_content = '<p>Hi</p>' "
            "WHERE email_id = :e"
        ),
        {"s": subject, "e": email_id},
    )
    return email_id


async def _sent_with_auto_resend(conn: AsyncConnection, owner: int) -> tuple[int, int, list[int]]:
    """A Sent A/B campaign to list 5 with AutoResend*: (campaign id, its email id, its variation email ids)."""
    original = await _campaign(conn, owner, "Weekly")
    main, first, second = [await _email(conn, owner, subject) for subject in ("Main", "A", "B")]
    await conn.execute(
        sa.text(
            "UPDATE campaign.campaigns SET status = 'Sent', email_id = :e, schedule_time_zone = 'Europe/Paris', "
            'recipients_included = \'[{"list_id": 5, "segment_id": 0}]\', auto_resend_enabled = true, '
            "auto_resend_wait_days = 2, auto_resend_subject = 'Missed it?', auto_resend_preheader = 'Again' "
            "WHERE campaign_id = :c"
        ),
        {"c": original, "e": main},
    )
    await conn.execute(
        sa.text("INSERT INTO campaign.campaign_variations VALUES (:c, 0, :a, 30), (:c, 1, :b, 70)"),
        {"c": original, "a": first, "b": second},
    )
    return original, main, [first, second]


async def test_an_auto_resend_is_created_once_with_a_copy_of_the_content_under_its_subject(
    conn: AsyncConnection,
) -> None:
    owner = new_id()
    original, main, variation_emails = await _sent_with_auto_resend(conn, owner)
    source = await store.campaign_by_id(conn, original, owner)
    assert source is not None
    due = datetime(2030, 1, 3, 9, 0, tzinfo=UTC)
    plan = AutoResendPlan(original, "Weekly (Auto-resend)", due, "Missed it?", "Again")

    resend_id = await store.inserted_auto_resend_id(conn, plan)
    assert resend_id is not None
    # The same plan again (the event redelivered, another replica) creates nothing.
    assert await store.inserted_auto_resend_id(conn, plan) is None

    resend = await store.campaign_by_id(conn, resend_id, owner)
    assert resend is not None
    assert (resend.name, resend.status, resend.schedule_type, resend.scheduled_at) == (
        "Weekly (Auto-resend)",
        CampaignStatus.READY,
        ScheduleType.FUTURE,
        due,
    )
    assert resend.schedule.future is not None and resend.schedule.future.time_zone == "Europe/Paris"
    assert (resend.original_campaign_id, resend.auto_resend_of) == (original, original)
    assert resend.targeting == source.targeting and not resend.auto_resend.enabled
    assert [v.weight for v in resend.variations] == [30, 70]
    copies = [resend.email_id, *(v.email_id for v in resend.variations)]
    assert not set(copies) & {main, *variation_emails}
    by_id = {
        e.email_id: e for e in await email_store.emails_by_ids(conn, [*copies, main, *variation_emails], owner)
    }
    assert [(by_id[c].subject, by_id[c].preheader_text, by_id[c].html_content) for c in copies] == [
        ("Missed it?", "Again", "<p>Hi</p>")
    ] * 3
    # The original's emails are left as they were.
    assert [by_id[e].subject for e in (main, *variation_emails)] == ["Main", "A", "B"]

    found = await store.auto_resend_for_update(conn, original)
    assert found is not None and found[0].campaign_id == resend_id and found[1].occurrences_started == 0
    assert await store.auto_resend_for_update(conn, resend_id) is None
    # Hidden from a listing unless auto-resends are asked for.
    listed = CampaignFilter(owner_user_id=owner)
    assert await store.matching_campaign_ids(conn, listed, 10) == [original]
    with_resends = CampaignFilter(owner_user_id=owner, include_auto_resend=True)
    assert await store.matching_campaign_ids(conn, with_resends, 10) == [original, resend_id]


async def test_deleting_an_original_deletes_its_auto_resend_even_when_relinked_by_hand(
    conn: AsyncConnection,
) -> None:
    owner = new_id()
    original, _, _ = await _sent_with_auto_resend(conn, owner)
    plan = AutoResendPlan(
        original, "Weekly (Auto-resend)", datetime(2030, 1, 3, tzinfo=UTC), "Missed it?", "Again"
    )
    resend_id = await store.inserted_auto_resend_id(conn, plan)
    assert resend_id is not None
    other = await _campaign(conn, owner)
    await conn.execute(
        sa.text("UPDATE campaign.campaigns SET original_campaign_id = :o WHERE campaign_id = :c"),
        {"o": other, "c": resend_id},
    )
    deleted = await store.delete_campaigns_with_auto_resends(conn, [original], owner)
    assert sorted(deleted) == sorted([(original, owner), (resend_id, owner)])
    assert await store.campaign_exists(conn, other, owner)
