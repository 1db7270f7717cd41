"""The per-recipient DeliveryEvents the delivery statements write into the outbox themselves, on a real PostgreSQL:
queueing (a message per batch), a window's Sent and Failed outcomes, stale claims, retries given up, a retry of
the failed recipients; each message decodes with the one decoder and goes to `…recipients.<owner>.<campaign>`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from herald.delivery.v1 import delivery_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common import events
from services.delivery import claim_store, queue_store, sending
from services.delivery.domain import RecipientStatus
from services.delivery.sending import Outcome, RunState
from tests.store.conftest import new_id
from tests.store.test_delivery_store import _addresses

SERVICES = ("delivery",)
PREFIX = "herald.events.delivery.recipients"
QUEUED, SENT, FAILED = (
    delivery_pb2.DELIVERY_EVENT_KIND_QUEUED,
    delivery_pb2.DELIVERY_EVENT_KIND_SENT,
    delivery_pb2.DELIVERY_EVENT_KIND_FAILED,
)


async def _messages(conn: AsyncConnection, owner: int, campaign: int) -> list[delivery_pb2.DeliveryEvents]:
    """The campaign's DeliveryEvents messages in the outbox, in the order they were written; they are taken out."""
    rows = (
        await conn.execute(
            sa.text("DELETE FROM delivery.outbox WHERE subject = :s RETURNING id, payload"),
            {"s": f"{PREFIX}.{owner}.{campaign}"},
        )
    ).all()
    return [events.DELIVERY_EVENTS.decode(bytes(payload)) for _, payload in sorted(rows)]


async def _queued(conn: AsyncConnection, campaign: int, owner: int, count: int, batch_size: int) -> None:
    await queue_store.ensured_run_for_update(conn, campaign, owner, RunState.SENDING)
    await queue_store.create_staging(conn)

    async def chunks() -> AsyncIterator[list[queue_store.StagedRecipient]]:
        yield [
            (sid, 1, address, "First", "Last", None, False, None, "", None) for sid, address in _addresses(count)
        ]

    await queue_store.copy_staged(conn, chunks())
    assert (
        await queue_store.queued_staged_count(
            conn,
            campaign_id=campaign,
            owner_user_id=owner,
            occurrence=1,
            generation=1,
            first_batch=1,
            batch_size=batch_size,
            variations=(),
            events_subject=PREFIX,
        )
        == count
    )
    await queue_store.save_occurrence(
        conn,
        campaign,
        occurrence=1,
        content={"emails": {}},
        generation=1,
        batches=sending.batch_count(count, batch_size),
        added_recipients=count,
        reason="",
    )
    await conn.execute(sa.text("DROP TABLE staged_recipients"))


async def test_queueing_announces_its_rows_queued_in_one_message_per_batch(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queued(conn, campaign, owner, 7, batch_size=3)
    messages = await _messages(conn, owner, campaign)
    assert [len(message.events) for message in messages] == [3, 3, 1]
    every = [event for message in messages for event in message.events]
    assert {event.kind for event in every} == {QUEUED}
    assert {(event.owner_user_id, event.campaign_id) for event in every} == {(owner, campaign)}
    assert sorted(event.subscriber_id for event in every) == [sid for sid, _ in _addresses(7)]
    assert all(event.email_address and event.HasField("occur_time") for event in every)
    assert [event.recipient_id for event in every] == sorted(event.recipient_id for event in every)


async def test_a_windows_sent_and_failed_outcomes_are_announced_by_the_statement_that_records_them(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    await _queued(conn, campaign, owner, 6, batch_size=10)
    await _messages(conn, owner, campaign)
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 4, events_subject=PREFIX)
    assert await _messages(conn, owner, campaign) == []  # nothing recorded yet: no message
    now = datetime.now(UTC)
    outcomes = [
        Outcome(claimed[0].recipient_id, RecipientStatus.SENT, 1, "", "<a@x>", now),
        Outcome(claimed[1].recipient_id, RecipientStatus.FAILED, 1, "550 5.1.1 user unknown"),
        Outcome(claimed[2].recipient_id, RecipientStatus.SENT, 1, "", "<b@x>", now),
        Outcome(
            claimed[3].recipient_id,
            RecipientStatus.DEFERRED,
            1,
            "450 greylisted",
            next_attempt_at=now + timedelta(minutes=5),
            retry_attempt=1,
        ),
    ]
    more = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", outcomes, 4, events_subject=PREFIX)
    assert len(more) == 2
    [message] = await _messages(conn, owner, campaign)
    assert [(event.recipient_id, event.kind, event.detail) for event in message.events] == [
        (claimed[0].recipient_id, SENT, ""),
        (claimed[1].recipient_id, FAILED, "550 5.1.1 user unknown"),
        (claimed[2].recipient_id, SENT, ""),
    ]
    assert message.events[0].occur_time.ToDatetime(tzinfo=UTC) == now
    # record_outcomes (the rarer path: announced bounces, released windows) announces the same way.
    last = [Outcome(row.recipient_id, RecipientStatus.SENT, 1, "", "<c@x>", now) for row in more]
    assert await claim_store.record_outcomes(conn, campaign, "w#1", last, events_subject=PREFIX) == 2
    [message] = await _messages(conn, owner, campaign)
    assert [event.kind for event in message.events] == [SENT, SENT]
    # Without a subject (a run that is not a campaign's) nothing is announced.
    assert await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 1) == []
    assert await _messages(conn, owner, campaign) == []


async def test_stale_claims_and_given_up_retries_are_announced_failed(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queued(conn, campaign, owner, 3, batch_size=10)
    await _messages(conn, owner, campaign)
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "dead#1", [], 3)
    await conn.execute(
        sa.text("UPDATE delivery.recipients SET claimed_at = now() - interval '2 minutes' WHERE campaign_id = :c"),
        {"c": campaign},
    )
    assert await claim_store.resolved_stale_claim_count(conn, campaign, 1, "w#2", 60, events_subject=PREFIX) == 3
    [message] = await _messages(conn, owner, campaign)
    assert [(e.recipient_id, e.kind) for e in message.events] == [(row.recipient_id, FAILED) for row in claimed]
    assert all(e.detail.startswith("ambiguous") for e in message.events)

    # A deferred row whose occurrence was replaced is given up when its retry comes: announced Failed too.
    other = new_id()
    await _queued(conn, other, owner, 1, batch_size=10)
    await _messages(conn, owner, other)
    [row] = await claim_store.recorded_and_claimed(conn, other, 1, 1, "w#1", [], 1)
    deferred = Outcome(
        row.recipient_id,
        RecipientStatus.DEFERRED,
        1,
        "450 later",
        next_attempt_at=datetime.now(UTC),
        retry_attempt=1,
    )
    await claim_store.record_outcomes(conn, other, "w#1", [deferred], events_subject=PREFIX)
    assert await _messages(conn, owner, other) == []  # a deferral is no event
    await conn.execute(
        sa.text("UPDATE delivery.campaign_runs SET occurrence = 2 WHERE campaign_id = :c"), {"c": other}
    )
    assert await claim_store.claimed_retries(
        conn, other, "w#r", [(row.recipient_id, 1)], stale_seconds=60, events_subject=PREFIX
    ) == ([], 1)
    [message] = await _messages(conn, owner, other)
    assert [(e.recipient_id, e.kind) for e in message.events] == [(row.recipient_id, FAILED)]


async def test_a_retry_of_the_failed_recipients_announces_them_queued_again(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queued(conn, campaign, owner, 3, batch_size=10)
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 3)
    failed = [Outcome(row.recipient_id, RecipientStatus.FAILED, 1, "550 no") for row in claimed[:2]]
    await claim_store.record_outcomes(conn, campaign, "w#1", failed)
    await _messages(conn, owner, campaign)
    assert await queue_store.requeued_failed_count(conn, campaign, 2, 2, 10, events_subject=PREFIX) == 2
    [message] = await _messages(conn, owner, campaign)
    assert [(e.recipient_id, e.kind) for e in message.events] == [
        (row.recipient_id, QUEUED) for row in claimed[:2]
    ]
