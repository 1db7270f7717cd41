"""The delivery stores' SQL on a real PostgreSQL: queueing with COPY, claims with SKIP LOCKED, outcomes with
UPDATE … FROM unnest, counts kept by triggers, completion, retries, split tests, bounces, and owner scoping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.bounces import BounceKind, BounceSource
from services.common.natsutil import Subjects
from services.common.outbox import UnitOfWork
from services.delivery import bounce_store, claim_store, domain, queue_store, sending, store
from services.delivery.domain import BounceCounts, ClassifiedBounce, RecipientStatus, TrackingHit
from services.delivery.sending import Outcome, QueuePage, Refusal, RunState, Variation
from tests.store.conftest import new_id

SERVICES = ("delivery",)
T0 = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)


async def _queue(
    conn: AsyncConnection,
    campaign_id: int,
    owner: int,
    addresses: Sequence[tuple[int, str]],
    *,
    batch_size: int = 100,
    variations: Sequence[Variation] = (),
    test_group: int | None = None,
    bounced: Collection[int] = (),
) -> int:
    """Queues (subscriber id, address) pairs as the send pipeline does: staging, COPY, one INSERT … SELECT.

    `bounced` names the subscribers whose bounce type audience streamed as Soft or Hard.
    """
    await queue_store.ensured_run_for_update(conn, campaign_id, owner, RunState.SENDING)
    await queue_store.create_staging(conn)

    async def chunks() -> AsyncIterator[list[queue_store.StagedRecipient]]:
        yield [
            (subscriber_id, 1, address, "First", "Last", None, subscriber_id in bounced, None, "", None)
            for subscriber_id, address in addresses
        ]

    await queue_store.copy_staged(conn, chunks())
    count = await queue_store.queued_staged_count(
        conn,
        campaign_id=campaign_id,
        owner_user_id=owner,
        occurrence=1,
        generation=1,
        first_batch=1,
        batch_size=batch_size,
        variations=variations,
        test_group=test_group,
    )
    published = count if test_group is None else test_group
    await queue_store.save_occurrence(
        conn,
        campaign_id,
        occurrence=1,
        content={"emails": {}},
        generation=1,
        batches=sending.batch_count(published, batch_size),
        added_recipients=count,
        reason="",
    )
    # The staging table lives until commit; the test's transaction may queue another campaign.
    await conn.execute(sa.text("DROP TABLE staged_recipients"))
    return count


def _addresses(count: int) -> list[tuple[int, str]]:
    return [(n, f"r{n}@example.com") for n in range(1, count + 1)]


async def _rows(conn: AsyncConnection, campaign_id: int) -> list[Any]:
    result = await conn.execute(
        sa.text(
            "SELECT recipient_id, subscriber_id, email_address, domain, status, batch_id, generation, email_id, "
            "claimed_by, last_error FROM delivery.recipients WHERE campaign_id = :c ORDER BY recipient_id"
        ),
        {"c": campaign_id},
    )
    return list(result)


async def _counts(conn: AsyncConnection, campaign_id: int, owner: int | None) -> tuple[int, int, int] | None:
    found = (await store.recipient_counts(conn, [campaign_id], owner)).get(campaign_id)
    return None if found is None else (found.total, found.sent, found.failed)


async def _held_and_dropped(conn: AsyncConnection, campaign_id: int) -> tuple[int, int]:
    row = (
        await conn.execute(
            sa.text("SELECT held, dropped FROM delivery.recipient_counts WHERE campaign_id = :c"),
            {"c": campaign_id},
        )
    ).one()
    return int(row.held), int(row.dropped)


# --- queueing -------------------------------------------------------------------------------------------------------


async def test_queueing_writes_each_address_once_in_subscriber_order_cut_into_batches(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    addresses = [(3, "b@Example.com"), (1, "a@example.com"), (2, "A@EXAMPLE.com"), (5, "d@x.org"), (4, "c@x.org")]

    assert await _queue(conn, campaign, owner, addresses, batch_size=2) == 4
    rows = await _rows(conn, campaign)
    assert [(r.subscriber_id, r.email_address, r.domain, r.batch_id) for r in rows] == [
        (1, "a@example.com", "example.com", 1),
        (3, "b@Example.com", "example.com", 1),
        (4, "c@x.org", "x.org", 2),
        (5, "d@x.org", "x.org", 2),
    ]
    assert {r.status for r in rows} == {RecipientStatus.PENDING}
    assert await _counts(conn, campaign, owner) == (4, 0, 0)


async def test_variations_are_shared_out_by_weight(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(40), variations=[Variation(7, 3), Variation(8, 1)])

    emails = [r.email_id for r in await _rows(conn, campaign)]
    assert abs(emails.count(7) - 30) <= 2 and emails.count(7) + emails.count(8) == 40


async def test_a_split_test_holds_back_all_but_its_test_group_until_the_winner_is_released(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    variations = [Variation(7, 1), Variation(8, 1)]
    await _queue(conn, campaign, owner, _addresses(10), batch_size=2, variations=variations, test_group=4)

    rows = await _rows(conn, campaign)
    tested = [r for r in rows if r.status == RecipientStatus.PENDING]
    held = [r for r in rows if r.status == RecipientStatus.HELD]
    assert len(tested) == 4 and {r.batch_id for r in tested} == {1, 2} and {r.email_id for r in tested} == {7, 8}
    assert len(held) == 6 and {(r.batch_id, r.email_id) for r in held} == {(None, None)}
    assert await _held_and_dropped(conn, campaign) == (6, 0)

    released = await queue_store.released_held_count(
        conn, campaign, winner_email_id=8, generation=2, first_batch=3, batch_size=4
    )
    assert released == 6
    rows = await _rows(conn, campaign)
    assert (
        sorted(
            (r.batch_id, r.email_id, r.generation)
            for r in rows
            if r.subscriber_id in {h.subscriber_id for h in held}
        )
        == [(3, 8, 2)] * 4 + [(4, 8, 2)] * 2
    )
    assert {r.status for r in rows} == {RecipientStatus.PENDING}
    assert await _held_and_dropped(conn, campaign) == (0, 0)


async def test_batch_messages_go_to_the_outbox_once_per_batch_and_generation(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(5), batch_size=2)

    work = UnitOfWork(conn, Subjects("test"))
    await queue_store.add_batch_messages(work, campaign, 1, 3, 1)
    await queue_store.add_batch_messages(work, campaign, 1, 3, 1)
    generation = await queue_store.next_generation(conn, campaign)
    assert generation == 2
    assert await queue_store.republished_batch_count(work, campaign, generation, batch_id=3) == 1
    assert work.publishes  # the unit of work knows to wake the relay

    messages = await conn.execute(
        sa.text("SELECT msg_id, payload FROM delivery.outbox WHERE msg_id LIKE :prefix ORDER BY id"),
        {"prefix": f"{campaign}:%"},
    )
    assert [row.msg_id for row in messages] == [
        f"{campaign}:1:1",
        f"{campaign}:2:1",
        f"{campaign}:3:1",
        f"{campaign}:3:2",
    ]
    assert {r.generation for r in await _rows(conn, campaign) if r.batch_id == 3} == {2}


async def test_every_recipient_status_is_one_the_queue_table_accepts(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    insert = sa.text(
        "INSERT INTO delivery.recipients (campaign_id, owner_user_id, subscriber_id, email_address, domain, status, "
        "sent_at, next_attempt_at, deferred_since) VALUES (:c, :o, :s, :a, 'example.com', :status, :sent_at, :due, :due)"
    )
    for n, status in enumerate(RecipientStatus):
        sent_at = T0 if status == RecipientStatus.SENT else None
        due = T0 if status == RecipientStatus.DEFERRED else None
        await conn.execute(
            insert,
            {
                "c": campaign,
                "o": owner,
                "s": n,
                "a": f"{n}@example.com",
                "status": status,
                "sent_at": sent_at,
                "due": due,
            },
        )
    with pytest.raises(IntegrityError):
        async with conn.begin_nested():
            await conn.execute(
                insert,
                {
                    "c": campaign,
                    "o": owner,
                    "s": 99,
                    "a": "x@example.com",
                    "status": "Bounced",
                    "sent_at": None,
                    "due": None,
                },
            )


async def _defer(conn: AsyncConnection, campaign_id: int, recipient_ids: Sequence[int]) -> None:
    """Sets the rows Deferred, due an hour after T0, as a temporary failure does."""
    await conn.execute(
        sa.text(
            "UPDATE delivery.recipients SET status = 'Deferred', next_attempt_at = :due, deferred_since = :since "
            "WHERE campaign_id = :c AND recipient_id = ANY(:ids)"
        ),
        {"c": campaign_id, "ids": list(recipient_ids), "due": T0 + timedelta(hours=1), "since": T0},
    )


async def _deferred_counts(conn: AsyncConnection, campaign_id: int, owner: int) -> tuple[int, int, int, int]:
    counts = (await store.recipient_counts(conn, [campaign_id], owner))[campaign_id]
    return counts.total, counts.sent, counts.failed, counts.deferred


async def test_the_triggers_count_deferred_rows_until_they_end_sent_or_failed(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(4))
    claimed = [r.recipient_id for r in await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 4)]
    assert await _deferred_counts(conn, campaign, owner) == (4, 0, 0, 0)

    await _defer(conn, campaign, claimed[:3])
    assert await _deferred_counts(conn, campaign, owner) == (4, 0, 0, 3)

    # Two are retried: back to Sending under the same claimant, then sent and failed for good.
    retried = claimed[:2]
    await conn.execute(
        sa.text(
            "UPDATE delivery.recipients SET status = 'Sending' WHERE campaign_id = :c AND recipient_id = ANY(:ids)"
        ),
        {"c": campaign, "ids": retried},
    )
    assert await _deferred_counts(conn, campaign, owner) == (4, 0, 0, 1)
    outcomes = [
        Outcome(retried[0], RecipientStatus.SENT, 1, "", "<m1@x>", T0),
        Outcome(retried[1], RecipientStatus.FAILED, 1, "550 5.1.1 unknown"),
    ]
    assert await claim_store.record_outcomes(conn, campaign, "w#1", outcomes) == 2
    assert await _deferred_counts(conn, campaign, owner) == (4, 1, 1, 1)

    # The queue lists the Deferred row with its due time; a row that left Deferred shows none.
    [deferred] = await store.queued_rows(conn, QueuePage(campaign, RecipientStatus.DEFERRED, 10, 0), owner)
    assert (deferred.recipient_id, deferred.next_attempt_at) == (claimed[2], T0 + timedelta(hours=1))
    assert await store.queued_row_count(conn, QueuePage(campaign, RecipientStatus.DEFERRED, 10, 0), owner) == 1
    every = {r.recipient_id: r for r in await store.queued_rows(conn, QueuePage(campaign, None, 10, 0), owner)}
    assert every[retried[1]].status is RecipientStatus.FAILED and every[retried[1]].next_attempt_at is None


async def test_a_deferred_row_needs_its_next_attempt_and_when_it_was_first_deferred(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(1))
    [row] = await _rows(conn, campaign)

    for due, since in ((None, T0), (T0, None)):
        with pytest.raises(IntegrityError, match="recipients_deferred_check"):
            async with conn.begin_nested():
                await conn.execute(
                    sa.text(
                        "UPDATE delivery.recipients SET status = 'Deferred', next_attempt_at = :due, "
                        "deferred_since = :since WHERE campaign_id = :c AND recipient_id = :r"
                    ),
                    {"c": campaign, "r": row.recipient_id, "due": due, "since": since},
                )
    assert await _deferred_counts(conn, campaign, owner) == (1, 0, 0, 0)


async def test_an_auto_resend_keeps_only_the_originals_sent_subscribers_who_never_engaged(
    conn: AsyncConnection,
) -> None:
    original, owner = new_id(), new_id()
    await _queue(conn, original, owner, _addresses(8))
    ids = {r.email_address: r.recipient_id for r in await _rows(conn, original)}
    await conn.execute(
        sa.text(
            "UPDATE delivery.recipients SET status = CASE WHEN email_address = 'r7@example.com' THEN 'Failed' "
            "ELSE 'Sent' END, sent_at = CASE WHEN email_address = 'r7@example.com' THEN NULL ELSE :t END "
            "WHERE campaign_id = :c"
        ),
        {"c": original, "t": T0},
    )
    # r1 opened, r2 clicked (its pixel was blocked), r3 bounced later, r4 complained.
    await store.insert_tracking_events(
        conn,
        [
            TrackingHit(original, ids["r1@example.com"], domain.OPEN, "", T0, f"o{original}"),
            TrackingHit(original, ids["r2@example.com"], domain.CLICK, "https://x.example/", T0, f"c{original}"),
        ],
        None,
    )
    await bounce_store.recorded_bounces(
        conn,
        [
            _bounce(original, ids["r3@example.com"], f"b{original}:3", BounceKind.HARD),
            _bounce(original, ids["r4@example.com"], f"b{original}:4", BounceKind.COMPLAINT),
        ],
        None,
    )

    async def kept(audience: Sequence[tuple[int, str, bool]], original_id: int, owner_id: int) -> list[str]:
        await queue_store.create_staging(conn)

        async def chunks() -> AsyncIterator[list[queue_store.StagedRecipient]]:
            yield [(n, 1, address, "", "", None, bounced, None, "", None) for n, address, bounced in audience]

        await queue_store.copy_staged(conn, chunks())
        removed = await queue_store.keep_staged_non_openers(conn, original_id, owner_id)
        left = await conn.execute(sa.text("SELECT email_address FROM staged_recipients ORDER BY subscriber_id"))
        addresses = [row.email_address for row in left]
        await conn.execute(sa.text("DROP TABLE staged_recipients"))
        assert removed == len(audience) - len(addresses)
        return addresses

    # Audience streams today's subscribed, unsuppressed subscribers: r6 left the list; r9 joined after the send;
    # r8 is bounced now; r5 is written in another case.
    audience = [
        (1, "r1@example.com", False),
        (2, "r2@example.com", False),
        (3, "r3@example.com", False),
        (4, "r4@example.com", False),
        (5, "R5@Example.com", False),
        (7, "r7@example.com", False),
        (8, "r8@example.com", True),
        (9, "r9@example.com", False),
    ]
    assert await kept(audience, original, owner) == ["R5@Example.com"]
    # Another owner's campaign is nobody's original.
    assert await kept(audience, original, new_id()) == []


# --- claims and outcomes -------------------------------------------------------------------------------------------


async def test_outcomes_are_written_in_one_statement_and_the_triggers_count_them(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(5))
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 4)
    assert len(claimed) == 4
    sent, failed, back, lost = claimed[0], claimed[1], claimed[2], claimed[3]

    outcomes = [
        Outcome(sent.recipient_id, RecipientStatus.SENT, 1, "", "<m1@x>", T0),
        Outcome(failed.recipient_id, RecipientStatus.FAILED, 3, "550 no such user"),
        Outcome(back.recipient_id, RecipientStatus.PENDING, 1, "421 try later"),
    ]
    # Another claimant's outcomes change nothing: the rows are w#1's.
    assert await claim_store.record_outcomes(conn, campaign, "w#2", outcomes) == 0
    # One statement records the window, takes back the claim whose outcome is missing, claims the next rows.
    next_window = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", outcomes, 10)

    statuses = {r.recipient_id: (r.status, r.claimed_by) for r in await _rows(conn, campaign)}
    assert statuses[sent.recipient_id] == (RecipientStatus.SENT, "w#1")
    assert statuses[failed.recipient_id] == (RecipientStatus.FAILED, "w#1")
    assert statuses[back.recipient_id] == statuses[lost.recipient_id] == (RecipientStatus.PENDING, None)
    # The statement's parts share one snapshot: the rows it puts back are claimed by a later statement.
    assert [r.recipient_id for r in next_window] == [max(statuses)]
    again = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 10)
    assert {r.recipient_id for r in again} == {back.recipient_id, lost.recipient_id}
    assert await _counts(conn, campaign, owner) == (5, 1, 1)
    counts = (await store.recipient_counts(conn, [campaign], owner))[campaign]
    assert (counts.first_sent_at, counts.last_sent_at) == (T0, T0)


async def test_no_row_is_claimed_while_the_run_is_not_sending(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(3))
    await queue_store.set_run_state(conn, campaign, RunState.PAUSED)

    assert await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 10) == []
    assert (await claim_store.run_views(conn, [campaign]))[campaign].state is RunState.PAUSED


async def test_a_claim_skips_the_rows_another_worker_holds(engine: AsyncEngine) -> None:
    campaign, owner = new_id(), new_id()
    async with engine.begin() as setup:
        await _queue(setup, campaign, owner, _addresses(6))
    async with engine.connect() as first, engine.connect() as second:
        await first.begin()
        await second.begin()
        # Waiting for the first worker's locks would be a failure: SKIP LOCKED must not wait.
        await second.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
        taken_first = await claim_store.recorded_and_claimed(first, campaign, 1, 1, "w#1", [], 2)
        taken_second = await claim_store.recorded_and_claimed(second, campaign, 1, 1, "w#2", [], 10)
        await first.commit()
        await second.commit()
    first_ids = {r.recipient_id for r in taken_first}
    second_ids = {r.recipient_id for r in taken_second}
    assert len(first_ids) == 2 and len(second_ids) == 4 and not first_ids & second_ids
    async with engine.connect() as check:
        claimants = {r.recipient_id: r.claimed_by for r in await _rows(check, campaign)}
    assert {claimants[i] for i in first_ids} == {"w#1"} and {claimants[i] for i in second_ids} == {"w#2"}


async def test_another_workers_stale_claims_become_ambiguous_failures(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(3))
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#dead", [], 2)
    await conn.execute(
        sa.text("UPDATE delivery.recipients SET claimed_at = now() - interval '1 hour' WHERE campaign_id = :c"),
        {"c": campaign},
    )

    assert await claim_store.resolved_stale_claim_count(conn, campaign, 1, "w#dead", 60) == 0
    assert await claim_store.resolved_stale_claim_count(conn, campaign, 1, "w#2", 60) == 2
    rows = {r.recipient_id: r for r in await _rows(conn, campaign)}
    for recipient in claimed:
        row = rows[recipient.recipient_id]
        assert (row.status, row.last_error, row.claimed_by) == (
            RecipientStatus.FAILED,
            sending.AMBIGUOUS,
            "w#dead",
        )
    assert await _counts(conn, campaign, owner) == (3, 0, 2)


# --- completion, cancel, retry -----------------------------------------------------------------------------------


async def test_an_occurrence_finishes_once_and_only_when_no_row_is_left(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(2))
    assert await queue_store.finished_occurrence(conn, campaign) is None

    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 10)
    # Claimed rows (Sending) change no count, and still keep the occurrence open.
    assert await queue_store.finished_occurrence(conn, campaign) is None
    sent = [Outcome(r.recipient_id, RecipientStatus.SENT, 1, "", None, T0) for r in claimed]
    await claim_store.record_outcomes(conn, campaign, "w#1", sent[:1])
    assert await queue_store.finished_occurrence(conn, campaign) is None
    await claim_store.record_outcomes(conn, campaign, "w#1", sent[1:])

    finished = await queue_store.finished_occurrence(conn, campaign)
    assert finished is not None and (finished.owner_user_id, finished.failed, finished.occurrence) == (
        owner,
        False,
        1,
    )
    assert await queue_store.finished_occurrence(conn, campaign) is None


async def test_a_cancel_drops_the_pending_and_held_rows(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(5), variations=[Variation(7, 1), Variation(8, 1)], test_group=2)
    await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 1)

    assert await queue_store.dropped_pending_count(conn, campaign) == 4
    statuses = [r.status for r in await _rows(conn, campaign)]
    assert sorted(statuses) == [RecipientStatus.DROPPED] * 4 + [RecipientStatus.SENDING]
    # The counts tell the dropped rows from those still to send (one, claimed).
    assert await _held_and_dropped(conn, campaign) == (0, 4)
    assert await queue_store.queueing_room(conn, campaign) == (RunState.SENDING, 1)
    assert (await store.queue_rows_by_status(conn))["Dropped"] >= 4


async def test_no_index_of_the_queue_rows_holds_their_status_so_status_changes_stay_on_their_page(
    conn: AsyncConnection,
) -> None:
    # A claim and an outcome change `status` (and the claim's columns): were any of them a column, an expression
    # or a predicate of an index, PostgreSQL would write a new entry into every index for each change instead
    # of a heap-only update (migration 0022), and the pages keep room for those updates.
    indexes = (
        await conn.execute(
            sa.text(
                """
                SELECT i.indexrelid::regclass::text AS name,
                       array(SELECT a.attname FROM pg_attribute AS a
                             WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))::text AS columns,
                       coalesce(pg_get_expr(i.indexprs, i.indrelid), '') AS expressions,
                       coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS predicate
                FROM pg_index AS i WHERE i.indrelid = 'delivery.recipients'::regclass
                """
            )
        )
    ).all()
    assert len(indexes) >= 5
    changed = ("status", "claimed_by", "claimed_at", "attempts", "last_error", "sent_at", "message_id")
    for index in indexes:
        for column in changed:
            assert column not in f"{index.columns} {index.expressions} {index.predicate}", index.name
    options = (
        await conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE oid = 'delivery.recipients'::regclass"))
    ).scalar_one()
    assert "fillfactor=30" in options


async def test_a_retry_puts_only_the_failed_rows_back_in_new_batches(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(4))
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 10)
    outcomes = [
        Outcome(
            r.recipient_id,
            RecipientStatus.FAILED if i % 2 else RecipientStatus.SENT,
            1,
            "x",
            None,
            None if i % 2 else T0,
        )
        for i, r in enumerate(claimed)
    ]
    await claim_store.record_outcomes(conn, campaign, "w#1", outcomes)
    assert await _counts(conn, campaign, owner) == (4, 2, 2)

    assert await queue_store.requeued_failed_count(conn, campaign, 2, 2, 1) == 2
    rows = await _rows(conn, campaign)
    requeued = [
        (r.status, r.batch_id, r.generation, r.claimed_by) for r in rows if r.status != RecipientStatus.SENT
    ]
    assert requeued == [(RecipientStatus.PENDING, 2, 2, None), (RecipientStatus.PENDING, 3, 2, None)]
    assert await _counts(conn, campaign, owner) == (4, 2, 0)


# --- owner scoping -------------------------------------------------------------------------------------------------


async def test_queue_rows_and_counts_are_shown_to_their_owner_and_an_admin_only(conn: AsyncConnection) -> None:
    campaign, owner, other = new_id(), new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(3))
    page = QueuePage(campaign, None, 10, 0)

    assert len(await store.queued_rows(conn, page, owner)) == 3
    assert await store.queued_rows(conn, page, other) == []
    assert await store.queued_row_count(conn, page, None) == 3
    pending = await store.queued_rows(conn, QueuePage(campaign, RecipientStatus.PENDING, 2, 0), None)
    assert [row.status for row in pending] == [RecipientStatus.PENDING] * 2
    assert await _counts(conn, campaign, other) is None
    assert await _counts(conn, campaign, None) == (3, 0, 0)
    assert await store.run_totals(conn, [campaign], other) == {}
    assert await store.run_totals(conn, [campaign], owner) == {campaign: 3}


# --- bounces and complaints ------------------------------------------------------------------------------------------


def _bounce(
    campaign: int, recipient: int, key: str, kind: BounceKind = BounceKind.HARD, *, at: datetime = T0
) -> ClassifiedBounce:
    return ClassifiedBounce(
        campaign_id=campaign,
        recipient_id=recipient,
        kind=kind,
        source=BounceSource.DSN,
        status_code="5.1.1" if kind == BounceKind.HARD else "",
        reply_code=550,
        diagnostic=f"{kind} bounce",
        event_key=key,
        occurred_at=at,
    )


async def _bounced_before(conn: AsyncConnection, campaign_id: int) -> dict[int, bool]:
    result = await conn.execute(
        sa.text("SELECT recipient_id, bounced_before FROM delivery.recipients WHERE campaign_id = :c"),
        {"c": campaign_id},
    )
    return {row.recipient_id: row.bounced_before for row in result}


async def test_a_bounce_is_recorded_once_per_event_key_with_whom_it_is_about(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(3))
    first, second, third = (r.recipient_id for r in await _rows(conn, campaign))
    key = f"dsn:{campaign}:1"

    recorded = await bounce_store.recorded_bounces(conn, [_bounce(campaign, first, key)], None)
    assert len(recorded) == 1 and recorded[0].bounce_id is not None
    assert recorded[0].recipient == bounce_store.QueuedAddress(campaign, first, owner, 1, 1, "r1@example.com")
    # The same key again (even naming another recipient) is recognised, not recorded; a row that does not
    # exist is left out.
    again = await bounce_store.recorded_bounces(
        conn, [_bounce(campaign, second, key), _bounce(campaign, 999_999_999, f"dsn:{campaign}:2")], None
    )
    assert [(r.recipient.recipient_id, r.bounce_id) for r in again] == [(second, None)]
    # Another owner's rows are unknown to a non-admin reporter.
    assert (
        await bounce_store.recorded_bounces(conn, [_bounce(campaign, third, f"dsn:{campaign}:3")], new_id()) == []
    )
    count = await conn.execute(
        sa.text("SELECT count(*) FROM delivery.bounces WHERE campaign_id = :c"), {"c": campaign}
    )
    assert count.scalar_one() == 1


async def test_hard_and_soft_bounces_mark_the_row_policy_and_complaints_do_not(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(4))
    ids = [r.recipient_id for r in await _rows(conn, campaign)]
    kinds = [BounceKind.HARD, BounceKind.SOFT, BounceKind.POLICY, BounceKind.COMPLAINT]
    await bounce_store.recorded_bounces(
        conn, [_bounce(campaign, i, f"k{campaign}:{i}", kind) for i, kind in zip(ids, kinds, strict=True)], None
    )
    assert await _bounced_before(conn, campaign) == dict(zip(ids, [True, True, False, False], strict=True))
    # Marking a row changes none of the campaign's counts.
    assert await _counts(conn, campaign, owner) == (4, 0, 0)


async def test_bounce_counts_are_distinct_recipients_per_kind_and_unsubscriptions_join_link_and_complaint(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(5))
    a, b, c, d, e = (r.recipient_id for r in await _rows(conn, campaign))
    reports = [
        _bounce(campaign, a, f"{campaign}:1", BounceKind.HARD),
        _bounce(campaign, a, f"{campaign}:2", BounceKind.HARD),
        _bounce(campaign, a, f"{campaign}:3", BounceKind.SOFT),
        _bounce(campaign, b, f"{campaign}:4", BounceKind.SOFT),
        _bounce(campaign, c, f"{campaign}:5", BounceKind.POLICY),
        _bounce(campaign, d, f"{campaign}:6", BounceKind.COMPLAINT),
    ]
    await bounce_store.recorded_bounces(conn, reports, None)
    hits = [
        TrackingHit(campaign, recipient, domain.UNSUBSCRIBE, "", T0, f"u{campaign}:{recipient}")
        for recipient in (d, e)
    ]
    await store.insert_tracking_events(conn, hits, None)

    counts = await bounce_store.bounce_counts(conn, [campaign, new_id()], owner)
    assert counts == {campaign: BounceCounts(hard=1, soft=2, policy=1, complaints=1, unsubscriptions=2)}
    assert await bounce_store.bounce_counts(conn, [campaign], new_id()) == {}


async def test_a_recipients_log_lists_its_bounces_oldest_first(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(2))
    first, second = (r.recipient_id for r in await _rows(conn, campaign))
    later = datetime(2025, 6, 2, tzinfo=UTC)
    await bounce_store.recorded_bounces(
        conn,
        [
            _bounce(campaign, first, f"{campaign}:late", BounceKind.SOFT, at=later),
            _bounce(campaign, first, f"{campaign}:early", BounceKind.HARD),
        ],
        None,
    )
    logs = await bounce_store.bounce_logs(conn, campaign, [first, second], owner)
    assert [(b.kind, b.occurred_at) for b in logs[first]] == [(BounceKind.HARD, T0), (BounceKind.SOFT, later)]
    assert second not in logs
    assert await bounce_store.bounce_logs(conn, campaign, [first], new_id()) == {}


async def test_a_row_whose_address_had_bounced_is_claimed_as_such_and_its_delivery_found(
    conn: AsyncConnection,
) -> None:
    campaign, owner = new_id(), new_id()
    # Subscriber 2 was streamed by audience with a Soft or Hard bounce type.
    await _queue(conn, campaign, owner, _addresses(3), bounced={2})
    claimed = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 10)
    assert [r.bounced_before for r in claimed] == [False, True, False]

    outcomes = [Outcome(r.recipient_id, RecipientStatus.SENT, 1, "", None, T0) for r in claimed[:2]]
    outcomes.append(Outcome(claimed[2].recipient_id, RecipientStatus.FAILED, 1, "550 no"))
    await claim_store.record_outcomes(conn, campaign, "w#1", outcomes)
    found = await bounce_store.delivered_after_bounce(conn, campaign, [r.recipient_id for r in claimed])
    assert [(r.recipient_id, r.subscriber_id, r.email_address) for r in found] == [
        (claimed[1].recipient_id, 2, "r2@example.com")
    ]


async def test_a_bounced_row_retried_by_an_admin_is_claimed_as_bounced_before(conn: AsyncConnection) -> None:
    campaign, owner = new_id(), new_id()
    await _queue(conn, campaign, owner, _addresses(1))
    [row] = await claim_store.recorded_and_claimed(conn, campaign, 1, 1, "w#1", [], 10)
    await claim_store.record_outcomes(
        conn, campaign, "w#1", [Outcome(row.recipient_id, RecipientStatus.FAILED, 1, "550 5.1.1 unknown")]
    )
    bounce = sending.send_time_bounce(campaign, row.recipient_id, 1, Refusal(550, "550 5.1.1 unknown"), T0)
    [recording] = await bounce_store.recorded_bounces(conn, [bounce], None)
    assert recording.bounce.event_key == f"smtp:{campaign}:{row.recipient_id}:1" and recording.bounce_id

    assert await queue_store.requeued_failed_count(conn, campaign, 2, 2, 10) == 1
    [again] = await claim_store.recorded_and_claimed(conn, campaign, 2, 2, "w#2", [], 10)
    assert again.recipient_id == row.recipient_id and again.bounced_before


# --- unsubscriptions through the API (RecordUnsubscriptions) -------------------------------------------------------


async def _sent_row(
    conn: AsyncConnection, campaign_id: int, owner: int, subscriber_id: int, list_id: int, **row: Any
) -> int:
    """A queue row of the campaign as a worker leaves it (Sent unless `status` says otherwise); returns its id."""
    values = {
        "occurrence": 1,
        "status": "Sent",
        "email_id": None,
        "address": f"s{subscriber_id}@example.com",
        **row,
    }
    result = await conn.execute(
        sa.text(
            "INSERT INTO delivery.recipients (campaign_id, owner_user_id, subscriber_id, list_id, email_address, "
            "domain, status, sent_at, occurrence, email_id) VALUES (:c, :o, :s, :l, :address, 'example.com', "
            ":status, CASE WHEN :status = 'Sent' THEN now() END, :occurrence, :email_id) RETURNING recipient_id"
        ),
        {"c": campaign_id, "o": owner, "s": subscriber_id, "l": list_id, **values},
    )
    return int(result.scalar_one())


async def _unsubscribed_rows(conn: AsyncConnection, campaign_id: int) -> list[int]:
    result = await conn.execute(
        sa.text(
            "SELECT recipient_id FROM delivery.events WHERE campaign_id = :c AND kind = 'unsubscribe' "
            "ORDER BY recipient_id"
        ),
        {"c": campaign_id},
    )
    return list(result.scalars())


async def test_api_unsubscriptions_count_once_per_subscriber_of_the_list_the_campaign_was_sent_to(
    conn: AsyncConnection,
) -> None:
    campaign, owner, list_id, other_list = new_id(), new_id(), new_id(), new_id()
    # A Recursive campaign in its second occurrence; rows without a variation were sent its default email 50.
    await conn.execute(
        sa.text(
            "INSERT INTO delivery.campaign_runs (campaign_id, owner_user_id, occurrence, content) "
            "VALUES (:c, :o, 2, CAST(:content AS jsonb))"
        ),
        {"c": campaign, "o": owner, "content": '{"default_email_id": 50, "emails": {}}'},
    )
    linked = await _sent_row(conn, campaign, owner, 1, list_id)
    await _sent_row(conn, campaign, owner, 1, list_id, occurrence=2)
    await _sent_row(conn, campaign, owner, 2, list_id)
    latest = await _sent_row(conn, campaign, owner, 2, list_id, occurrence=2)
    await _sent_row(conn, campaign, owner, 3, list_id, status="Failed")
    await _sent_row(conn, campaign, owner, 4, other_list)
    variation = await _sent_row(conn, campaign, owner, 5, list_id, email_id=60)
    complained = await _sent_row(conn, campaign, owner, 6, list_id)
    await _sent_row(conn, campaign, owner, 6, list_id, occurrence=2)
    # Subscriber 1 followed the link of the first occurrence's message; subscriber 6 complained about it.
    await store.insert_tracking_events(conn, [TrackingHit(campaign, linked, domain.UNSUBSCRIBE, "", T0, "")], None)
    await bounce_store.recorded_bounces(
        conn, [_bounce(campaign, complained, f"{campaign}:c", BounceKind.COMPLAINT)], None
    )

    def reported(*subscriber_ids: int, email_id: int = 0) -> domain.Unsubscriptions:
        subscribers = tuple((s, f"S{s}@EXAMPLE.COM") for s in subscriber_ids)
        return domain.Unsubscriptions(campaign, list_id, subscribers, email_id, T0)

    # Another owner's call, or another email than the one they were sent, counts nothing.
    assert await store.inserted_unsubscription_count(conn, reported(1, 2, 3, 4, 5, 9), new_id()) == 0
    assert await store.inserted_unsubscription_count(conn, reported(2, email_id=60), owner) == 0
    assert await store.inserted_unsubscription_count(conn, reported(5, email_id=50), owner) == 0
    # 1 and 6 counted already (link, complaint), 3 was never delivered, 4 is of another list, 9 was never queued.
    assert await store.inserted_unsubscription_count(conn, reported(1, 2, 3, 4, 6, 9, email_id=50), owner) == 1
    assert await store.inserted_unsubscription_count(conn, reported(5, email_id=60), None) == 1
    assert await store.inserted_unsubscription_count(conn, reported(1, 2, 5), None) == 0
    # Counted on subscriber 2's latest row, and in the statistics with the link's and the complaint's.
    assert await _unsubscribed_rows(conn, campaign) == [linked, latest, variation]
    counts = await bounce_store.bounce_counts(conn, [campaign], owner)
    assert counts[campaign].unsubscriptions == 4


async def test_an_imports_confirmation_requests_are_recorded_once_and_queued_set_wise_in_batches(
    conn: AsyncConnection,
) -> None:
    list_id, owner = new_id(), new_id()
    run_id = sending.opt_in_run_id(list_id)
    first = await queue_store.recorded_opt_in_requests(conn, [11, 12, 13, 14, 15], T0, run_id)
    assert first == {11, 12, 13, 14, 15}
    # The same request delivered again is new for none of them; another time is another request.
    assert await queue_store.recorded_opt_in_requests(conn, [11, 12, 13, 14, 15], T0, run_id) == set()
    assert await queue_store.recorded_opt_in_requests(conn, [11, 16], T0 + timedelta(hours=1), run_id) == {11, 16}

    run = await queue_store.ensured_run_for_update(conn, run_id, owner, RunState.SENDING)
    content = {"campaign_name": "Confirmation", "default_email_id": 7, "emails": {}}
    generation, first_batch = await queue_store.opened_opt_in_batches(
        conn, run, content=content, occurrence=1, recipients=5, batches=3
    )
    recipients = [
        {"subscriber_id": n, "email_address": f"P{n}@Example.com", "first_name": f"F{n}", "last_name": ""}
        for n in sorted(first)
    ]
    await queue_store.queue_opt_in_recipients(
        conn,
        run,
        occurrence=1,
        generation=generation,
        first_batch=first_batch,
        batch_size=2,
        list_id=list_id,
        email_id=7,
        recipients=recipients,
    )
    rows = await _rows(conn, run_id)
    assert [(r.subscriber_id, r.batch_id, r.generation, r.email_id, r.status) for r in rows] == [
        (11, first_batch, generation, 7, RecipientStatus.PENDING),
        (12, first_batch, generation, 7, RecipientStatus.PENDING),
        (13, first_batch + 1, generation, 7, RecipientStatus.PENDING),
        (14, first_batch + 1, generation, 7, RecipientStatus.PENDING),
        (15, first_batch + 2, generation, 7, RecipientStatus.PENDING),
    ]
    assert rows[0].domain == "example.com"
    after = await queue_store.run_for_update(conn, run_id)
    assert after is not None
    assert (after.batches, after.total_recipients, after.generation) == (first_batch + 2, 5, generation)
    # The next request takes the batches after these.
    _, following = await queue_store.opened_opt_in_batches(
        conn, after, content=content, occurrence=1, recipients=1, batches=1
    )
    assert following == first_batch + 3
