"""The SQL of deferred recipients on a real PostgreSQL: recording a deferral, claiming a due retry once, stale retry
claims, releasing unsent retries, a resume's rescheduling, the sweeper's overdue rows, cancel and completion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common import events
from services.common.natsutil import Subjects
from services.delivery import claim_store, queue_store, retries
from services.delivery.domain import RecipientStatus
from services.delivery.sending import Outcome, RunState
from tests.store.conftest import new_id
from tests.store.test_delivery_store import _addresses, _queue

SERVICES = ("delivery",)


async def _status(conn: AsyncConnection, campaign: int) -> dict[int, tuple[str, int, datetime | None]]:
    rows = await conn.execute(
        sa.text(
            "SELECT recipient_id, status, attempts, next_attempt_at FROM delivery.recipients WHERE campaign_id = :c"
        ),
        {"c": campaign},
    )
    return {r.recipient_id: (r.status, r.attempts, r.next_attempt_at) for r in rows}


async def _deferred(conn: AsyncConnection, campaign: int, owner: int, count: int) -> list[int]:
    """Queues `count` rows, claims them and records them Deferred after one attempt, due in an hour."""
    await _queue(conn, campaign, owner, _addresses(count))
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], count)
    due = datetime.now(UTC) + timedelta(hours=1)
    outcomes = [
        Outcome(row.recipient_id, RecipientStatus.DEFERRED, 1, "450 4.2.0 Greylisted", next_attempt_at=due)
        for row in claimed
    ]
    assert await claim_store.record_outcomes(conn, campaign, "w#1", outcomes) == count
    return [row.recipient_id for row in claimed]


async def test_a_deferral_is_recorded_with_its_reply_attempts_and_due_time_and_counted(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    ids = await _deferred(conn, campaign, owner, 3)
    rows = await _status(conn, campaign)
    assert {rows[i][:2] for i in ids} == {(RecipientStatus.DEFERRED, 1)}
    assert all(rows[i][2] is not None for i in ids)
    since = (
        await conn.execute(
            sa.text("SELECT count(deferred_since) FROM delivery.recipients WHERE campaign_id = :c"),
            {"c": campaign},
        )
    ).scalar_one()
    assert since == 3
    deferred = (
        await conn.execute(
            sa.text("SELECT deferred FROM delivery.recipient_counts WHERE campaign_id = :c"), {"c": campaign}
        )
    ).scalar_one()
    assert deferred == 3


async def test_the_claim_statement_records_deferrals_with_their_retry_messages_in_the_outbox(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(6))
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 3)
    soon = datetime.now(UTC) + timedelta(minutes=1)
    outcomes = [
        Outcome(
            row.recipient_id,
            RecipientStatus.DEFERRED,
            1,
            "450 4.2.0 Greylisted",
            next_attempt_at=soon,
            retry_attempt=1,
        )
        for row in claimed[:2]
    ] + [Outcome(claimed[2].recipient_id, RecipientStatus.SENT, 1, "", "<m@x>", datetime.now(UTC))]
    subjects = Subjects("herald", 1)
    due = [retries.DueRetry(campaign, o.recipient_id, 1, soon) for o in outcomes[:2]]
    rows = retries.outbox_rows(subjects, due)
    more = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", outcomes, 3, outbox_rows=rows)
    assert len(more) == 3
    # A statement repeated after its answer was lost writes the same message once (its Nats-Msg-Id).
    assert await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", outcomes, 0, outbox_rows=rows) == []
    status = await _status(conn, campaign)
    assert [status[o.recipient_id][0] for o in outcomes] == [
        RecipientStatus.DEFERRED,
        RecipientStatus.DEFERRED,
        RecipientStatus.SENT,
    ]
    queued = (
        await conn.execute(
            sa.text("SELECT subject, payload, headers FROM delivery.outbox WHERE msg_id = :m"),
            {"m": f"delivery.retries:{campaign}:{claimed[0].recipient_id}:1"},
        )
    ).all()
    assert len(queued) == 1
    subject, payload, headers = queued[0]
    assert subject == f"herald.delivery.retries.at.{campaign}.{claimed[0].recipient_id}"
    message = events.DELIVERY_RETRY.decode(bytes(payload))
    assert retries.recipients_of(message) == [o.recipient_id for o in outcomes[:2]]
    assert headers["Nats-Schedule-Target"] == "herald.delivery.retries"
    await conn.execute(
        sa.text("DELETE FROM delivery.outbox WHERE msg_id LIKE :m"), {"m": f"delivery.retries:{campaign}:%"}
    )


async def test_a_due_retry_claims_its_row_once_and_only_at_its_attempt(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    first, second, third = await _deferred(conn, campaign, owner, 3)

    claimed, stale = await claim_store.claimed_retries(
        conn, campaign, "w#r1", [(first, 1), (second, 2), (third, 0)], stale_seconds=60
    )
    # Only the message of the row's current attempt count claims it.
    assert [row.recipient_id for row in claimed] == [first] and stale == 0
    assert claimed[0].attempts == 1 and claimed[0].deferred_since is not None
    # The same message again (redelivered, or published twice) finds nothing.
    again, _ = await claim_store.claimed_retries(conn, campaign, "w#r2", [(first, 1)], stale_seconds=60)
    assert again == []

    # Sent on the retry: recorded under the retry's claimant, counted, no longer Deferred.
    sent = Outcome(first, RecipientStatus.SENT, 1, "", "<m@x>", datetime.now(UTC))
    assert await claim_store.record_outcomes(conn, campaign, "w#r1", [sent]) == 1
    rows = await _status(conn, campaign)
    assert rows[first] == (RecipientStatus.SENT, 2, None)
    counts = (
        await conn.execute(
            sa.text("SELECT sent, deferred FROM delivery.recipient_counts WHERE campaign_id = :c"), {"c": campaign}
        )
    ).one()
    assert tuple(counts) == (1, 2)


async def test_retries_are_claimed_while_the_run_is_sending_or_sent_only(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    (row,) = await _deferred(conn, campaign, owner, 1)
    for state in (RunState.PAUSED, RunState.CANCELLED):
        await queue_store.set_run_state(conn, campaign, state)
        assert (await claim_store.claimed_retries(conn, campaign, "w#r", [(row, 1)], stale_seconds=60))[0] == []
    await queue_store.set_run_state(conn, campaign, RunState.SENT)
    assert len((await claim_store.claimed_retries(conn, campaign, "w#r", [(row, 1)], stale_seconds=60))[0]) == 1


async def test_a_stale_retry_claim_is_failed_as_ambiguous_when_its_message_comes_back(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    (row,) = await _deferred(conn, campaign, owner, 1)
    assert (
        len((await claim_store.claimed_retries(conn, campaign, "dead#r1", [(row, 1)], stale_seconds=60))[0]) == 1
    )
    # A fresh claim of a live worker is left alone.
    assert await claim_store.claimed_retries(conn, campaign, "w#r2", [(row, 1)], stale_seconds=60) == ([], 0)
    await conn.execute(
        sa.text("UPDATE delivery.recipients SET claimed_at = now() - interval '2 minutes' WHERE campaign_id = :c"),
        {"c": campaign},
    )
    assert await claim_store.claimed_retries(conn, campaign, "w#r2", [(row, 1)], stale_seconds=60) == ([], 1)
    status, _, _ = (await _status(conn, campaign))[row]
    assert status == RecipientStatus.FAILED


async def test_a_row_deferred_in_a_replaced_occurrence_fails_instead_of_getting_the_new_content(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    (row,) = await _deferred(conn, campaign, owner, 1)
    await conn.execute(
        sa.text("UPDATE delivery.campaign_runs SET occurrence = 2 WHERE campaign_id = :c"), {"c": campaign}
    )
    assert await claim_store.claimed_retries(conn, campaign, "w#r", [(row, 1)], stale_seconds=60) == ([], 1)
    error = (
        await conn.execute(
            sa.text("SELECT status, last_error FROM delivery.recipients WHERE campaign_id = :c"), {"c": campaign}
        )
    ).one()
    assert error.status == RecipientStatus.FAILED and "450 4.2.0 Greylisted" in error.last_error


async def test_unsent_retry_claims_go_back_to_deferred_or_are_dropped_after_a_cancel(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    first, second = await _deferred(conn, campaign, owner, 2)
    await claim_store.claimed_retries(conn, campaign, "w#r1", [(first, 1), (second, 1)], stale_seconds=60)
    await queue_store.set_run_state(conn, campaign, RunState.PAUSED)
    assert await claim_store.released_retries(conn, campaign, "w#r1", [first]) == 1
    assert (await _status(conn, campaign))[first][0] == RecipientStatus.DEFERRED
    await queue_store.set_run_state(conn, campaign, RunState.CANCELLED)
    assert await claim_store.released_retries(conn, campaign, "w#r1", [second]) == 1
    assert (await _status(conn, campaign))[second][0] == RecipientStatus.DROPPED


async def test_a_resume_reschedules_every_deferred_row_and_a_cancel_drops_them(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    ids = await _deferred(conn, campaign, owner, 3)
    due = await queue_store.deferred_retries(conn, campaign)
    assert sorted((r.recipient_id, r.attempt) for r in due) == [(i, 1) for i in sorted(ids)]
    assert all(r.due > datetime.now(UTC) + timedelta(minutes=50) for r in due)

    assert await queue_store.dropped_pending_count(conn, campaign) == 3
    assert {s for s, _, _ in (await _status(conn, campaign)).values()} == {RecipientStatus.DROPPED}
    assert await queue_store.deferred_retries(conn, campaign) == []


async def test_the_sweeper_takes_overdue_rows_of_running_campaigns_only(conn: AsyncConnection) -> None:
    running, paused, owner = new_id(), new_id(), new_id()
    for campaign in (running, paused):
        await _deferred(conn, campaign, owner, 2)
        await conn.execute(
            sa.text(
                "UPDATE delivery.recipients SET next_attempt_at = now() - interval '1 hour' WHERE campaign_id = :c"
            ),
            {"c": campaign},
        )
    await queue_store.set_run_state(conn, paused, RunState.PAUSED)

    overdue = await queue_store.overdue_retries(conn, overdue_seconds=300, limit=1000)
    assert {(r.campaign_id, r.attempt) for r in overdue} >= {(running, 1)}
    assert paused not in {r.campaign_id for r in overdue}
    # Made due now: not overdue again at the next pass.
    assert [r for r in await queue_store.overdue_retries(conn, 300, 1000) if r.campaign_id == running] == []


async def test_a_run_with_only_deferred_rows_left_is_finished_and_not_failed(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _deferred(conn, campaign, owner, 2)
    finished = await queue_store.finished_occurrence(conn, campaign)
    assert finished is not None and not finished.failed
