"""The audience store's bounce SQL on a real PostgreSQL: bounce types, soft-bounce runs, complaints, suppression reasons."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from herald.audience.v1 import audience_pb2
from herald.delivery.v1 import delivery_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.audience import domain, messages, store
from services.audience.domain import BounceTarget
from services.audience.events import BounceHandler
from tests.store.conftest import new_id

SERVICES = ("audience",)
LIMIT = 3


async def _list(conn: AsyncConnection, owner: int) -> int:
    return (await store.inserted_list(conn, owner, domain.NewList(name="List"))).list_id


async def _subscriber(conn: AsyncConnection, owner: int, list_id: int, address: str, **fields: Any) -> int:
    email_address, key = domain.normalise_email(address)
    new = domain.NewSubscriber(list_id=list_id, email_address=email_address, email_key=key, **fields)
    subscriber_id = await store.inserted_subscriber_id(conn, owner, new)
    assert subscriber_id is not None
    return subscriber_id


async def _state(conn: AsyncConnection, subscriber_id: int) -> tuple[str, list[int], str, str]:
    """(bounce type, soft-bounce campaigns, status, unsubscription channel) of a subscriber."""
    s = store.subscribers.c
    row = (
        await conn.execute(
            sa.select(s.bounce_type, s.soft_bounce_campaign_ids, s.status, s.unsubscription_channel).where(
                s.subscriber_id == subscriber_id
            )
        )
    ).one()
    return row.bounce_type, list(row.soft_bounce_campaign_ids), row.status, row.unsubscription_channel


async def _suppression(conn: AsyncConnection, owner: int, key: str) -> tuple[str, int] | None:
    t = store.suppressions.c
    row = (
        await conn.execute(sa.select(t.reason, t.campaign_id).where(t.owner_user_id == owner, t.email_key == key))
    ).first()
    return (row.reason, row.campaign_id) if row is not None else None


# --- bounce types ---------------------------------------------------------------------------------------------


async def test_a_hard_bounce_makes_only_the_subscriber_of_that_list_hard(conn: AsyncConnection) -> None:
    owner = new_id()
    first, second = await _list(conn, owner), await _list(conn, owner)
    bounced = await _subscriber(conn, owner, first, "gone@example.com")
    elsewhere = await _subscriber(conn, owner, second, "gone@example.com")
    target = BounceTarget.of(owner, "Gone@Example.com", first)

    assert await store.hard_bounced_count(conn, target) == 1
    assert await store.hard_bounced_count(conn, target) == 0  # nothing left to change
    assert (await _state(conn, bounced))[0] == "Hard"
    assert (await _state(conn, elsewhere))[0] == "Not Bounced"


async def test_a_report_without_a_list_reaches_the_owners_subscribers_with_the_address_only(
    conn: AsyncConnection,
) -> None:
    owner, other = new_id(), new_id()
    first, second, theirs = await _list(conn, owner), await _list(conn, owner), await _list(conn, other)
    mine = [await _subscriber(conn, owner, list_id, "gone@example.com") for list_id in (first, second)]
    foreign = await _subscriber(conn, other, theirs, "gone@example.com")
    unrelated = await _subscriber(conn, owner, first, "fine@example.com")

    assert await store.hard_bounced_count(conn, BounceTarget.of(owner, "gone@example.com")) == 2
    assert [(await _state(conn, s))[0] for s in mine] == ["Hard", "Hard"]
    assert (await _state(conn, foreign))[0] == "Not Bounced"
    assert (await _state(conn, unrelated))[0] == "Not Bounced"


async def test_soft_bounces_on_the_limit_of_distinct_campaigns_make_a_subscriber_hard(
    conn: AsyncConnection,
) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    subscriber_id = await _subscriber(conn, owner, list_id, "full@example.com")
    target = BounceTarget.of(owner, "full@example.com", list_id)

    assert await store.soft_bounced_types(conn, target, 11, LIMIT) == ["Soft"]
    # The same campaign again (a repeated report, a retry) counts once and changes nothing.
    assert await store.soft_bounced_types(conn, target, 11, LIMIT) == []
    assert await _state(conn, subscriber_id) == ("Soft", [11], "Subscribed", "")
    assert await store.soft_bounced_types(conn, target, 12, LIMIT) == ["Soft"]
    assert (await _state(conn, subscriber_id))[:2] == ("Soft", [11, 12])
    assert await store.soft_bounced_types(conn, target, 13, LIMIT) == ["Hard"]
    assert (await _state(conn, subscriber_id))[:2] == ("Hard", [])


async def test_a_soft_bounce_never_downgrades_a_hard_subscriber(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    subscriber_id = await _subscriber(conn, owner, list_id, "gone@example.com", bounce_type="Hard")

    assert (
        await store.soft_bounced_types(conn, BounceTarget.of(owner, "gone@example.com", list_id), 5, LIMIT) == []
    )
    assert (await _state(conn, subscriber_id))[:2] == ("Hard", [])


async def test_a_delivery_clears_the_bounce_state_on_every_list_of_the_owner(conn: AsyncConnection) -> None:
    owner = new_id()
    first, second = await _list(conn, owner), await _list(conn, owner)
    soft = await _subscriber(conn, owner, first, "back@example.com")
    hard = await _subscriber(conn, owner, second, "back@example.com", bounce_type="Hard")
    await store.soft_bounced_types(conn, BounceTarget.of(owner, "back@example.com", first), 21, LIMIT)

    assert await store.delivered_count(conn, BounceTarget.of(owner, "back@example.com")) == 2
    assert await store.delivered_count(conn, BounceTarget.of(owner, "back@example.com")) == 0
    assert (await _state(conn, soft))[:2] == ("Not Bounced", [])
    assert (await _state(conn, hard))[:2] == ("Not Bounced", [])
    # The run starts again from nothing: two more soft bounces are still Soft.
    target = BounceTarget.of(owner, "back@example.com", first)
    assert await store.soft_bounced_types(conn, target, 22, LIMIT) == ["Soft"]
    assert await store.soft_bounced_types(conn, target, 23, LIMIT) == ["Soft"]


async def test_a_complaint_unsubscribes_with_the_complaint_channel_once(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id, other_list = await _list(conn, owner), await _list(conn, owner)
    subscriber_id = await _subscriber(conn, owner, list_id, "angry@example.com")
    elsewhere = await _subscriber(conn, owner, other_list, "angry@example.com")
    target = BounceTarget.of(owner, "angry@example.com", list_id)

    assert await store.complained_count(conn, target) == 1
    assert await store.complained_count(conn, target) == 0
    assert await _state(conn, subscriber_id) == ("Not Bounced", [], "Unsubscribed", "complaint")
    assert (await _state(conn, elsewhere))[2] == "Subscribed"
    record = await store.subscriber_by(conn, list_id, subscriber_id=subscriber_id)
    assert record is not None and record.unsubscription_date is not None and record.unsubscription_ip == ""


# --- suppression reasons --------------------------------------------------------------------------------------


async def test_a_bounce_suppression_gives_way_to_a_manual_or_complaint_one_never_the_reverse(
    conn: AsyncConnection,
) -> None:
    owner = new_id()
    bounce, complaint, manual = domain.SUPPRESSION_BOUNCE, domain.SUPPRESSION_COMPLAINT, domain.SUPPRESSION_MANUAL

    assert await store.added_suppression_count(conn, owner, ["a@example.com"], reason=bounce, campaign_id=7) == 1
    assert await store.added_suppression_count(conn, owner, ["a@example.com"], reason=bounce, campaign_id=8) == 0
    assert await _suppression(conn, owner, "a@example.com") == ("bounce", 7)
    # A complaint about the address is not lifted by a delivery: the entry becomes a complaint.
    assert (
        await store.added_suppression_count(conn, owner, ["a@example.com"], reason=complaint, campaign_id=9) == 0
    )
    assert await _suppression(conn, owner, "a@example.com") == ("complaint", 9)
    assert await store.added_suppression_count(conn, owner, ["a@example.com"], reason=bounce, campaign_id=10) == 0
    assert await store.added_suppression_count(conn, owner, ["a@example.com"], reason=manual) == 0
    assert await _suppression(conn, owner, "a@example.com") == ("complaint", 9)

    await store.added_suppression_count(conn, owner, ["b@example.com"], reason=bounce, campaign_id=7)
    assert await store.added_suppression_count(conn, owner, ["b@example.com", "c@example.com"]) == 1
    assert await _suppression(conn, owner, "b@example.com") == ("manual", 0)
    assert await _suppression(conn, owner, "c@example.com") == ("manual", 0)


async def test_a_delivery_removes_only_the_owners_bounce_suppression(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    bounce = domain.SUPPRESSION_BOUNCE
    await store.added_suppression_count(conn, owner, ["bounced@example.com"], reason=bounce, campaign_id=1)
    await store.added_suppression_count(conn, other, ["bounced@example.com"], reason=bounce, campaign_id=2)
    await store.added_suppression_count(conn, owner, ["kept@example.com"])
    await store.added_suppression_count(
        conn, owner, ["angry@example.com"], reason=domain.SUPPRESSION_COMPLAINT, campaign_id=1
    )

    assert await store.removed_bounce_suppression_count(conn, owner, "bounced@example.com") == 1
    assert await store.removed_bounce_suppression_count(conn, owner, "bounced@example.com") == 0
    assert await store.removed_bounce_suppression_count(conn, owner, "kept@example.com") == 0
    assert await store.removed_bounce_suppression_count(conn, owner, "angry@example.com") == 0
    assert await _suppression(conn, other, "bounced@example.com") == ("bounce", 2)
    assert await _suppression(conn, owner, "kept@example.com") == ("manual", 0)


async def test_a_subscriber_shows_why_its_address_is_suppressed(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    subscriber_id = await _subscriber(conn, owner, list_id, "gone@example.com")
    await _subscriber(conn, owner, list_id, "fine@example.com")
    await store.added_suppression_count(
        conn, owner, ["gone@example.com"], reason=domain.SUPPRESSION_BOUNCE, campaign_id=3
    )

    record = await store.subscriber_by(conn, list_id, subscriber_id=subscriber_id)
    assert record is not None and (record.suppressed, record.suppression_reason) == (True, "bounce")
    found, total = await store.subscribers_page(
        conn,
        list_id,
        status="",
        bounce_type="",
        segment=None,
        segment_definitions={},
        suppressed_only=False,
        search_column="email_address",
        keyword="",
        order_column="email_address",
        descending=False,
        page_size=0,
        skip=0,
    )
    assert total == 2
    assert [(r.email_address, r.suppressed, r.suppression_reason) for r in found] == [
        ("fine@example.com", False, ""),
        ("gone@example.com", True, "bounce"),
    ]


async def test_recipients_leave_out_addresses_suppressed_for_any_reason(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    for name in ("manual", "bounce", "complaint", "fine"):
        await _subscriber(conn, owner, list_id, f"{name}@example.com")
    for reason in domain.SUPPRESSION_REASONS:
        await store.added_suppression_count(conn, owner, [f"{reason}@example.com"], reason=reason, campaign_id=1)
    targeting = domain.validate_targeting([(list_id, 0)], [], {})
    query = store.RecipientQuery(targeting, {})

    assert await store.recipient_count(conn, query) == 1
    assert [row[2] for row in await store.recipient_rows(conn, query, 0, 10)] == ["fine@example.com"]


async def test_recipients_are_streamed_with_their_bounce_type(conn: AsyncConnection) -> None:
    """Delivery marks the queue rows of Soft and Hard recipients, so that their next delivery is announced and
    clears the bounce state: the stream must say which they are."""
    owner = new_id()
    first, second = await _list(conn, owner), await _list(conn, owner)
    await _subscriber(conn, owner, first, "fine@example.com")
    await _subscriber(conn, owner, first, "full@example.com")
    await _subscriber(conn, owner, second, "gone@example.com")
    assert await store.soft_bounced_types(conn, BounceTarget.of(owner, "full@example.com", first), 1, LIMIT) == [
        "Soft"
    ]
    # The bounce type alone (the audience consumer suppresses a hard-bounced address in another statement).
    assert await store.hard_bounced_count(conn, BounceTarget.of(owner, "gone@example.com", second)) == 1
    query = store.RecipientQuery(domain.validate_targeting([(first, 0), (second, 0)], [], {}), {})

    rows = await store.recipient_rows(conn, query, 0, 10)
    assert {row[2]: row[6] for row in rows} == {
        "fine@example.com": "Not Bounced",
        "full@example.com": "Soft",
        "gone@example.com": "Hard",
    }
    streamed = messages.recipients_message(rows, {}).recipients
    assert {r.email_address: r.bounce_type for r in streamed} == {
        "fine@example.com": audience_pb2.BOUNCE_TYPE_NOT_BOUNCED,
        "full@example.com": audience_pb2.BOUNCE_TYPE_SOFT,
        "gone@example.com": audience_pb2.BOUNCE_TYPE_HARD,
    }


async def test_a_subscriber_updated_by_its_owner_takes_the_given_bounce_type_and_leaves_no_run_or_channel(
    conn: AsyncConnection,
) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    subscriber_id = await _subscriber(conn, owner, list_id, "back@example.com")
    target = BounceTarget.of(owner, "back@example.com", list_id)
    await store.soft_bounced_types(conn, target, 31, LIMIT)
    await store.complained_count(conn, target)

    email_address, key = domain.normalise_email("back@example.com")
    again = domain.NewSubscriber(list_id=list_id, email_address=email_address, email_key=key)
    assert await store.updated_subscriber_id(conn, subscriber_id, again) == subscriber_id
    assert await _state(conn, subscriber_id) == ("Not Bounced", [], "Subscribed", "")


# --- the consumer's batches -------------------------------------------------------------------------------------


def _bounced(owner: int, list_id: int, address: str, kind: int, campaign_id: int) -> Any:
    return delivery_pb2.RecipientBouncedEvent(
        owner_user_id=owner,
        campaign_id=campaign_id,
        recipient_id=new_id(),
        list_id=list_id,
        email_address=address,
        kind=kind,  # type: ignore[arg-type]
        source=delivery_pb2.BOUNCE_SOURCE_DSN,
        occur_time=timestamp_pb2.Timestamp(seconds=1_780_000_000),
    )


async def test_a_batch_of_events_is_applied_in_order_in_one_transaction(engine: AsyncEngine) -> None:
    owner = new_id()
    async with engine.begin() as conn:
        list_id = await _list(conn, owner)
        soft = await _subscriber(conn, owner, list_id, "soft@example.com")
        complained = await _subscriber(conn, owner, list_id, "spam@example.com")
    handler = BounceHandler(engine, LIMIT)
    soft_kind, complaint = delivery_pb2.BOUNCE_KIND_SOFT, delivery_pb2.BOUNCE_KIND_COMPLAINT
    await handler.bounced_batch(
        [
            _bounced(owner, list_id, "soft@example.com", soft_kind, 21),
            _bounced(owner, list_id, "spam@example.com", complaint, 21),
            _bounced(owner, list_id, "soft@example.com", soft_kind, 21),  # a repeat counts once
            _bounced(owner, list_id, "soft@example.com", soft_kind, 22),
            _bounced(owner, list_id, "soft@example.com", soft_kind, 23),  # the third campaign: Hard
        ]
    )
    async with engine.connect() as conn:
        assert await _state(conn, soft) == ("Hard", [], "Subscribed", "")
        assert await _suppression(conn, owner, "soft@example.com") == ("bounce", 23)
        assert await _state(conn, complained) == ("Not Bounced", [], "Unsubscribed", "complaint")
        assert await _suppression(conn, owner, "spam@example.com") == ("complaint", 21)
    delivered = delivery_pb2.RecipientDeliveredEvent(
        owner_user_id=owner,
        campaign_id=24,
        recipient_id=new_id(),
        email_address="soft@example.com",
        deliver_time=timestamp_pb2.Timestamp(seconds=1_780_000_100),
    )
    await handler.delivered_batch([delivered, delivered])
    async with engine.connect() as conn:
        assert await _state(conn, soft) == ("Not Bounced", [], "Subscribed", "")
        assert await _suppression(conn, owner, "soft@example.com") is None


async def test_hard_bounces_set_wise_change_what_one_after_the_other_would(engine: AsyncEngine) -> None:
    owner = new_id()
    async with engine.begin() as conn:
        first, second = await _list(conn, owner), await _list(conn, owner)
        gone = await _subscriber(conn, owner, first, "gone@example.com")
        gone_elsewhere = await _subscriber(conn, owner, second, "gone@example.com")
        everywhere = [await _subscriber(conn, owner, list_id, "all@example.com") for list_id in (first, second)]
        already = await _subscriber(conn, owner, first, "already@example.com", bounce_type="Hard")
        await store.added_suppression_count(conn, owner, ["spam@example.com"], reason="complaint", campaign_id=5)
    hard = delivery_pb2.BOUNCE_KIND_HARD
    batch = [
        _bounced(owner, first, "gone@example.com", hard, 31),
        _bounced(owner, 0, "all@example.com", hard, 31),
        _bounced(owner, first, "Gone@Example.com", hard, 32),  # the same subscriber again: nothing left to do
        _bounced(owner, first, "already@example.com", hard, 31),
        _bounced(owner, first, "spam@example.com", hard, 31),  # no subscriber; a complaint's entry stays
        _bounced(new_id(), first, "gone@example.com", hard, 31),  # another owner's address
    ]
    async with engine.begin() as conn:
        targets = [BounceTarget.of(e.owner_user_id, e.email_address, e.list_id) for e in batch]
        assert await store.hard_bounced_counts(conn, targets) == [1, 2, 0, 0, 0, 0]
        entries = [(t.owner_user_id, t.email_key, e.campaign_id) for t, e in zip(targets, batch, strict=True)]
        assert await store.added_bounce_suppression_counts(conn, entries) == [1, 1, 0, 1, 0, 1]
        assert await _state(conn, gone) == ("Hard", [], "Subscribed", "")
        assert await _state(conn, gone_elsewhere) == ("Not Bounced", [], "Subscribed", "")
        assert [(await _state(conn, s))[0] for s in everywhere] == ["Hard", "Hard"]
        assert (await _state(conn, already))[0] == "Hard"
        assert await _suppression(conn, owner, "gone@example.com") == ("bounce", 31)  # the first one's campaign
        assert await _suppression(conn, owner, "spam@example.com") == ("complaint", 5)
        await conn.rollback()
    # The consumer's batch does the same through the handler, in one transaction.
    await BounceHandler(engine, LIMIT).bounced_batch(batch)
    async with engine.connect() as conn:
        assert await _state(conn, gone) == ("Hard", [], "Subscribed", "")
        assert await _state(conn, gone_elsewhere) == ("Not Bounced", [], "Subscribed", "")
        assert await _suppression(conn, owner, "gone@example.com") == ("bounce", 31)
        assert await _suppression(conn, owner, "already@example.com") == ("bounce", 31)
