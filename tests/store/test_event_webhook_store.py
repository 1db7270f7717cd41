"""The SQL of event webhooks on a real PostgreSQL: which endpoints an event is written for, a redelivered message adding nothing, claiming only the head of each (endpoint, campaign) queue, and settling attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery import event_webhook_store as store
from services.delivery.event_webhooks import OutgoingEvent, event_id
from tests.store.conftest import new_id

SERVICES = ("delivery",)


def later() -> datetime:
    """A publication time after every endpoint the tests create."""
    return datetime.now(UTC) + timedelta(minutes=1)


def _event(owner: int, campaign: int, sequence: int, event_type: str = "campaign.status_changed") -> OutgoingEvent:
    identifier = event_id("t", sequence, 0, 0)
    return OutgoingEvent(owner, campaign, identifier, event_type, sequence, 0, f'{{"n":{sequence}}}'.encode())


async def _endpoint(
    conn: AsyncConnection, owner: int, types: tuple[str, ...] = ("campaign.status_changed",)
) -> int:
    created = await store.inserted_endpoint(conn, owner, "https://hooks.example/", types, "", b"sealed")
    return created.endpoint_id


async def _undelivered(conn: AsyncConnection, endpoint_id: int) -> list[str]:
    rows = await conn.execute(
        sa.text(
            "SELECT event_id FROM delivery.webhook_events WHERE endpoint_id = :e AND NOT delivered "
            "ORDER BY stream_sequence, position"
        ),
        {"e": endpoint_id},
    )
    return [row.event_id for row in rows]


async def test_an_event_is_written_for_each_enabled_endpoint_of_its_owner_that_asked_for_its_type(
    conn: AsyncConnection,
) -> None:
    owner, other = new_id(), new_id()
    wants = await _endpoint(conn, owner)
    wants_other_kind = await _endpoint(conn, owner, ("recipient.sent",))
    disabled = await _endpoint(conn, owner)
    await store.disabled_endpoint_count(conn, disabled, "test")
    theirs = await _endpoint(conn, other)
    event = _event(owner, new_id(), 1)
    assert await store.inserted_events_count(conn, [event], later()) == 1
    assert await _undelivered(conn, wants) == [event.event_id]
    for endpoint_id in (wants_other_kind, disabled, theirs):
        assert await _undelivered(conn, endpoint_id) == []
    # The same message again (a JetStream redelivery) adds nothing; an event older than the endpoint is not its.
    assert await store.inserted_events_count(conn, [event], later()) == 0
    assert await store.inserted_events_count(conn, [_event(owner, 1, 2)], datetime(2000, 1, 1, tzinfo=UTC)) == 0


async def test_the_wanted_types_are_those_of_the_endpoints_an_event_would_be_written_for(
    conn: AsyncConnection,
) -> None:
    owner, other, nobody = new_id(), new_id(), new_id()
    await _endpoint(conn, owner, ("recipient.sent", "campaign.status_changed"))
    await _endpoint(conn, owner, ("recipient.opened", "recipient.sent"))
    disabled = await _endpoint(conn, owner, ("recipient.failed",))
    await store.disabled_endpoint_count(conn, disabled, "test")
    await _endpoint(conn, other, ("recipient.queued",))
    assert await store.wanted_event_types(conn, owner, later()) == {
        "recipient.sent",
        "recipient.opened",
        "campaign.status_changed",
    }
    assert await store.wanted_event_types(conn, other, later()) == {"recipient.queued"}
    assert await store.wanted_event_types(conn, nobody, later()) == frozenset()
    # Published before the endpoints existed: nothing is wanted, as nothing would be written.
    assert await store.wanted_event_types(conn, owner, datetime(2000, 1, 1, tzinfo=UTC)) == frozenset()


async def test_only_the_oldest_undelivered_event_of_each_campaign_is_claimed_and_only_once(
    conn: AsyncConnection,
) -> None:
    owner = new_id()
    endpoint_id = await _endpoint(conn, owner)
    first, second = new_id(), new_id()
    events = [_event(owner, first, 10), _event(owner, second, 11), _event(owner, first, 12)]
    await store.inserted_events_count(conn, events, later())
    claimed = [e for e in await store.claimed_due_events(conn, 100, 60) if e.endpoint_id == endpoint_id]
    assert sorted(e.event_id for e in claimed) == sorted([events[0].event_id, events[1].event_id])
    assert [e for e in await store.claimed_due_events(conn, 100, 60) if e.endpoint_id == endpoint_id] == []

    # A failed head stays the head: the campaign's next event waits behind it, due or not.
    head = next(e for e in claimed if e.campaign_id == first)
    await store.record_attempt(
        conn, head, delivered=False, status_code=500, error="", latency_ms=3, retry_in_seconds=0
    )
    again = [e for e in await store.claimed_due_events(conn, 100, 60) if e.endpoint_id == endpoint_id]
    assert [(e.event_id, e.attempts) for e in again] == [(events[0].event_id, 1)]
    shown = await store.endpoint_of(conn, owner, endpoint_id)
    assert shown is not None and shown.failing_since is not None and shown.pending_events == 3

    # Delivered: the next one is the head, and a success clears failing_since.
    await store.record_attempt(
        conn, again[0], delivered=True, status_code=204, error="", latency_ms=2, retry_in_seconds=0
    )
    after = [e for e in await store.claimed_due_events(conn, 100, 60) if e.endpoint_id == endpoint_id]
    assert [e.event_id for e in after] == [events[2].event_id]
    shown = await store.endpoint_of(conn, owner, endpoint_id)
    assert shown is not None and shown.failing_since is None and shown.pending_events == 2
    log = await store.attempts_of(conn, owner, endpoint_id, 10, None)
    assert [(a.attempt_number, a.status_code, a.delivered) for a in log] == [(2, 204, True), (1, 500, False)]
    assert await store.attempts_of(conn, new_id(), endpoint_id, 10, None) == []


async def test_a_disabled_endpoint_is_not_claimed_until_enabled_again(conn: AsyncConnection) -> None:
    owner = new_id()
    endpoint_id = await _endpoint(conn, owner)
    await store.inserted_events_count(conn, [_event(owner, new_id(), 20)], later())
    [claimed] = [e for e in await store.claimed_due_events(conn, 100, 3600) if e.endpoint_id == endpoint_id]
    await store.disabled_endpoint_count(conn, endpoint_id, "failing")
    assert await store.enabled_endpoint_count(conn, new_id(), endpoint_id) == 0  # not the owner
    assert await store.enabled_endpoint_count(conn, owner, endpoint_id) == 1
    # Enabling makes the waiting events due at once, even one claimed moments ago.
    [again] = [e for e in await store.claimed_due_events(conn, 100, 60) if e.endpoint_id == endpoint_id]
    assert again.event_id == claimed.event_id
