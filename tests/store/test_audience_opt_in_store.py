"""The audience store's double opt-in SQL on a real PostgreSQL: the hourly allowance, confirm, reject, and streaming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience import domain, store
from tests.store.conftest import new_id

SERVICES = ("audience",)
HOUR = timedelta(hours=1)
PENDING = "Opt-In Pending"


async def _list(conn: AsyncConnection, owner: int) -> int:
    return (await store.inserted_list(conn, owner, domain.NewList(name="List", opt_in_mode="Double"))).list_id


async def _subscriber(conn: AsyncConnection, owner: int, list_id: int, address: str, status: str) -> int:
    email_address, key = domain.normalise_email(address)
    new = domain.NewSubscriber(list_id=list_id, email_address=email_address, email_key=key, status=status)
    subscriber_id = await store.inserted_subscriber_id(conn, owner, new)
    assert subscriber_id is not None
    return subscriber_id


async def test_a_pending_subscriber_is_allowed_one_confirmation_an_hour(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    pending = await _subscriber(conn, owner, list_id, "wait@example.com", PENDING)
    subscribed = await _subscriber(conn, owner, list_id, "in@example.com", "Subscribed")
    now = datetime.now(UTC)

    assert await store.claimed_confirmation_time(conn, pending, now, HOUR) == now
    assert await store.claimed_confirmation_time(conn, pending, now + timedelta(minutes=59), HOUR) is None
    later = now + timedelta(minutes=61)
    assert await store.claimed_confirmation_time(conn, pending, later, HOUR) == later
    assert await store.claimed_confirmation_time(conn, subscribed, now, HOUR) is None


async def test_confirming_subscribes_once_with_the_date_and_address(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    pending = await _subscriber(conn, owner, list_id, "wait@example.com", PENDING)
    now = datetime.now(UTC)

    assert await store.confirmed_subscriber_id(conn, list_id, pending, "192.0.2.9", now) == pending
    assert await store.confirmed_subscriber_id(conn, list_id, pending, "192.0.2.9", now) is None
    record = await store.subscriber_by(conn, list_id, subscriber_id=pending)
    assert record is not None and record.status == "Subscribed" and record.optin_date == now
    # Another list's id does not reach the subscriber.
    assert await store.confirmed_subscriber_id(conn, await _list(conn, owner), pending, "", now) is None


async def test_rejecting_removes_a_pending_subscriber_only(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    pending = await _subscriber(conn, owner, list_id, "wait@example.com", PENDING)
    subscribed = await _subscriber(conn, owner, list_id, "in@example.com", "Subscribed")

    assert await store.rejected_count(conn, list_id, pending) == 1
    assert await store.rejected_count(conn, list_id, pending) == 0
    assert await store.rejected_count(conn, list_id, subscribed) == 0
    assert await store.subscriber_by(conn, list_id, subscriber_id=pending) is None


async def test_recipients_are_the_subscribed_only_never_the_pending(conn: AsyncConnection) -> None:
    owner = new_id()
    list_id = await _list(conn, owner)
    await _subscriber(conn, owner, list_id, "wait@example.com", PENDING)
    await _subscriber(conn, owner, list_id, "in@example.com", "Subscribed")
    query = store.RecipientQuery(domain.validate_targeting([(list_id, 0)], [], {}), {})

    assert await store.recipient_count(conn, query) == 1
    assert [row[2] for row in await store.recipient_rows(conn, query, 0, 10)] == ["in@example.com"]
