"""SQL of the send pipeline: runs, queueing with COPY, batch messages in the outbox, completion, split tests, retries.

Every statement is set-based: a queue is written with COPY and one INSERT … SELECT, rows move in
one UPDATE … FROM per publication, and the batch messages of a publication are one INSERT … SELECT
into the outbox (in the caller's unit of work). What workers run (claims and outcomes) is in claim_store.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from herald.delivery.v1 import delivery_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common import events, tracing
from services.common.outbox import UnitOfWork
from services.delivery import recipient_events, retries, sending
from services.delivery.domain import RecipientStatus
from services.delivery.sending import RunState, Variation

_RUN_COLUMNS = (
    "campaign_id, owner_user_id, state, content, occurrence, occurrence_started_at, generation, batches, "
    "total_recipients, finished_at, reason, queueing_after, queueing_rows, published_batches, published_traceparent"
)


@dataclass(frozen=True)
class Run:
    """A campaign's run as stored; `content` is None for a placeholder (a status seen before any queueing)."""

    campaign_id: int
    owner_user_id: int
    state: RunState
    content: Mapping[str, Any] | None
    occurrence: int
    occurrence_started_at: datetime | None
    generation: int
    batches: int
    total_recipients: int
    finished_at: datetime | None
    reason: str
    # While the occurrence is queued in chunks: the highest subscriber id queued so far (0 before the first chunk)
    # and the occurrence's rows queued so far; None and 0 once it is all queued (or for a one-transaction queue).
    queueing_after: int | None = None
    queueing_rows: int = 0
    # The highest batch id the feeder (services/delivery/feeder.py) has published for the occurrence; None when every
    # batch is published as it is queued (an occurrence queued before migration 0021).
    published_batches: int | None = None
    # The trace the fed batch messages continue (the send request's that queued the occurrence).
    published_traceparent: str | None = None

    @property
    def fed(self) -> bool:
        """Its batch messages are published by the feeder, not with the chunks that queue them."""
        return self.published_batches is not None

    @property
    def queued(self) -> bool:
        return self.content is not None

    @property
    def queueing(self) -> bool:
        """The occurrence is still being queued chunk by chunk: its content is fixed, its audience not all in yet."""
        return self.queueing_after is not None


def _run(row: sa.Row[Any]) -> Run:
    return Run(**{**row._mapping, "state": RunState(row.state)})


async def run_for_update(conn: AsyncConnection, campaign_id: int) -> Run | None:
    """The campaign's run, locked until the transaction ends: run changes of one campaign serialize on it."""
    row = (
        await conn.execute(
            sa.text(f"SELECT {_RUN_COLUMNS} FROM delivery.campaign_runs WHERE campaign_id = :c FOR UPDATE"),
            {"c": campaign_id},
        )
    ).one_or_none()
    return None if row is None else _run(row)


async def ensured_run_for_update(
    conn: AsyncConnection, campaign_id: int, owner_user_id: int, state: RunState
) -> Run:
    """The campaign's run, locked; a placeholder in `state` is created first when there is none."""
    await conn.execute(
        sa.text(
            "INSERT INTO delivery.campaign_runs (campaign_id, owner_user_id, total_recipients, state) "
            "VALUES (:c, :o, 0, :s) ON CONFLICT (campaign_id) DO NOTHING"
        ),
        {"c": campaign_id, "o": owner_user_id, "s": state},
    )
    run = await run_for_update(conn, campaign_id)
    assert run is not None
    return run


async def set_run_state(conn: AsyncConnection, campaign_id: int, state: RunState) -> None:
    await conn.execute(
        sa.text("UPDATE delivery.campaign_runs SET state = :s WHERE campaign_id = :c"),
        {"c": campaign_id, "s": state},
    )


async def dropped_pending_count(conn: AsyncConnection, campaign_id: int) -> int:
    """Drops the campaign's rows still Pending, Held for a split test's winner, or Deferred (it was cancelled);
    returns how many. A Deferred row's retry message, when it comes, finds nothing to send."""
    result = await conn.execute(
        sa.text(
            f"UPDATE delivery.recipients SET status = '{RecipientStatus.DROPPED}', last_error = 'campaign cancelled', "
            "next_attempt_at = NULL "
            f"WHERE campaign_id = :c AND status IN ('{RecipientStatus.PENDING}', '{RecipientStatus.HELD}', "
            f"'{RecipientStatus.DEFERRED}')"
        ),
        {"c": campaign_id},
    )
    return result.rowcount


async def next_generation(conn: AsyncConnection, campaign_id: int) -> int:
    """Takes the run's next generation (the run is locked by the caller) and reopens it for completion."""
    return int(
        (
            await conn.execute(
                sa.text(
                    "UPDATE delivery.campaign_runs SET generation = generation + 1, finished_at = NULL "
                    "WHERE campaign_id = :c RETURNING generation"
                ),
                {"c": campaign_id},
            )
        ).scalar_one()
    )


# A DeliveryBatch message (services/common/events.py) in its proto3 JSON form, ids as JSON numbers.
# `{c}`, `{g}`: the campaign id's and the generation's SQL expressions.
_BATCH_PAYLOAD_OF = (
    "convert_to(json_build_object('campaign_id', {c}, 'batch_id', b, 'generation', {g})::text, 'UTF8')"
)
_BATCH_PAYLOAD = _BATCH_PAYLOAD_OF.format(c="CAST(:c AS bigint)", g="CAST(:g AS integer)")
# The feeder's: of run r (services/delivery/feeder.py), under the generation of the batch's Pending rows (column g).
_FED_PAYLOAD = _BATCH_PAYLOAD_OF.format(c="r.c", g="g")


async def republished_batch_count(
    work: UnitOfWork, campaign_id: int, generation: int, batch_id: int | None = None, through: int | None = None
) -> int:
    """Moves the Pending rows (of one batch, or all) to `generation` and publishes one message per batch they are in,
    up to batch id `through` when given (the feeder publishes the later ones, with the generation their rows have).

    The old generation's messages then find nothing to claim, so a batch is never worked twice.
    """
    only_batch = "AND batch_id = CAST(:b AS integer)" if batch_id is not None else ""
    published = "WHERE batch_id <= CAST(:through AS integer)" if through is not None else ""
    work.wrote_outbox_rows()
    result = await work.conn.execute(
        sa.text(
            f"""
            WITH bumped AS (
                UPDATE delivery.recipients SET generation = :g
                WHERE campaign_id = :c AND status = '{RecipientStatus.PENDING}' {only_batch}
                RETURNING batch_id
            )
            INSERT INTO delivery.outbox (subject, msg_id, payload, traceparent)
            SELECT :subject, CAST(:c AS text) || ':' || b || ':' || CAST(:g AS text), {_BATCH_PAYLOAD}, CAST(:tp AS text)
            FROM (SELECT DISTINCT batch_id AS b FROM bumped {published}) AS batches
            ON CONFLICT (msg_id) DO NOTHING
            """
        ),
        {
            "c": campaign_id,
            "g": generation,
            "subject": work.subject(events.DELIVERY_BATCH),
            "b": batch_id,
            "through": through,
            "tp": tracing.traceparent(),
        },
    )
    return result.rowcount


async def add_batch_messages(
    work: UnitOfWork, campaign_id: int, first_batch: int, last_batch: int, generation: int
) -> None:
    """Publishes one message per batch id in [first_batch, last_batch], all of `generation`."""
    work.wrote_outbox_rows()
    await work.conn.execute(
        sa.text(
            f"""
            INSERT INTO delivery.outbox (subject, msg_id, payload, traceparent)
            SELECT :subject, CAST(:c AS text) || ':' || b || ':' || CAST(:g AS text), {_BATCH_PAYLOAD}, CAST(:tp AS text)
            FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS b
            ON CONFLICT (msg_id) DO NOTHING
            """
        ),
        {
            "subject": work.subject(events.DELIVERY_BATCH),
            "c": campaign_id,
            "g": generation,
            "first": first_batch,
            "last": last_batch,
            "tp": tracing.traceparent(),
        },
    )


# --- feeding the batch stream (services/delivery/feeder.py) ------------------------------------------------------


async def feeding_turn(conn: AsyncConnection) -> bool:
    """Whether this transaction is the one feeder pass of the moment (another replica's may hold the turn): an
    advisory lock until the transaction ends, not waited for."""
    taken = await conn.execute(
        sa.text("SELECT pg_try_advisory_xact_lock(hashtextextended('herald-delivery-feeder', 0))")
    )
    return bool(taken.scalar_one())


async def feedable_runs(conn: AsyncConnection) -> list[tuple[int, int]]:
    """The Sending runs with batches the feeder has not published yet: (campaign id, how many), oldest run first."""
    rows = await conn.execute(
        sa.text(
            "SELECT campaign_id, batches - published_batches AS unpublished FROM delivery.campaign_runs "
            f"WHERE state = '{RunState.SENDING}' AND published_batches < batches ORDER BY campaign_id"
        )
    )
    return [(row.campaign_id, int(row.unpublished)) for row in rows]


async def fed_batch_count(work: UnitOfWork, shares: Sequence[tuple[Run, int]]) -> int:
    """Publishes the next batches of (locked, fed) runs, `count` of each, in turn (each run's first batch, then each
    one's second, ...), each under the generation its Pending rows have (a resume moved them to its own), and records
    them published; returns how many messages (a batch with nothing Pending left gets none). The messages continue
    the trace of the send request that queued the occurrence."""
    ranges = [
        (run, run.published_batches + 1, min(run.published_batches + count, run.batches))
        for run, count in shares
        if run.published_batches is not None
    ]
    ranges = [(run, first, last) for run, first, last in ranges if last >= first]
    if not ranges:
        return 0
    work.wrote_outbox_rows()
    columns = {
        "cs": [run.campaign_id for run, _, _ in ranges],
        "firsts": [first for _, first, _ in ranges],
        "lasts": [last for _, _, last in ranges],
        "tps": [run.published_traceparent for run, _, _ in ranges],
    }
    runs = (
        "unnest(CAST(:cs AS bigint[]), CAST(:firsts AS integer[]), CAST(:lasts AS integer[]), CAST(:tps AS text[])) "
        "WITH ORDINALITY AS r(c, first, last, tp, turn)"
    )
    result = await work.conn.execute(
        sa.text(
            f"""
            INSERT INTO delivery.outbox (subject, msg_id, payload, traceparent)
            SELECT :subject, CAST(r.c AS text) || ':' || b || ':' || CAST(g AS text), {_FED_PAYLOAD}, r.tp
            FROM {runs}, generate_series(r.first, r.last) AS b,
                 LATERAL (SELECT generation AS g FROM delivery.recipients
                          WHERE campaign_id = r.c AND batch_id = b AND status = '{RecipientStatus.PENDING}'
                          LIMIT 1) AS pending
            ORDER BY b - r.first, r.turn
            ON CONFLICT (msg_id) DO NOTHING
            """
        ),
        {**columns, "subject": work.subject(events.DELIVERY_BATCH)},
    )
    await work.conn.execute(
        sa.text(
            f"UPDATE delivery.campaign_runs SET published_batches = r.last FROM {runs} WHERE campaign_id = r.c"
        ),
        columns,
    )
    return result.rowcount


async def unrelayed_batch_messages(conn: AsyncConnection, subject: str, cap: int) -> int:
    """Batch messages in the outbox not relayed to NATS yet, counted up to `cap`."""
    return int(
        (
            await conn.execute(
                sa.text("SELECT count(*) FROM (SELECT 1 FROM delivery.outbox WHERE subject = :s LIMIT :cap) AS o"),
                {"s": subject, "cap": cap},
            )
        ).scalar_one()
    )


# --- queueing an occurrence -------------------------------------------------------------------------------------


async def create_staging(conn: AsyncConnection) -> None:
    """A temporary table the recipients are copied into before they are queued; dropped at commit."""
    await conn.execute(
        sa.text(
            "CREATE TEMPORARY TABLE staged_recipients (subscriber_id bigint NOT NULL, list_id bigint NOT NULL, "
            "email_address text NOT NULL, first_name text NOT NULL, last_name text NOT NULL, custom_fields jsonb, "
            "bounced_before boolean NOT NULL DEFAULT false, subscription_time timestamptz, "
            "subscription_ip text NOT NULL DEFAULT '', opt_in_time timestamptz) ON COMMIT DROP"
        )
    )


# (subscriber_id, list_id, email_address, first_name, last_name, custom fields as JSON text, bounced before:
# the subscriber's bounce type was Soft or Hard when audience streamed it, subscription time, subscription IP,
# opt-in time: the last three only when the content names their tags, None / "" otherwise).
StagedRecipient = tuple[int, int, str, str, str, str | None, bool, datetime | None, str, datetime | None]


async def copy_staged(conn: AsyncConnection, chunks: AsyncIterable[Sequence[StagedRecipient]]) -> None:
    """Streams recipients into the staging table with one COPY, a chunk at a time (custom fields as JSON text)."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    async with driver.cursor() as cursor:
        async with cursor.copy(
            "COPY staged_recipients (subscriber_id, list_id, email_address, first_name, last_name, custom_fields, "
            "bounced_before, subscription_time, subscription_ip, opt_in_time) FROM STDIN"
        ) as copy:
            async for chunk in chunks:
                for row in chunk:
                    await copy.write_row(row)


async def keep_staged_non_openers(conn: AsyncConnection, original_campaign_id: int, owner_user_id: int) -> int:
    """Keeps in the staging table only the original campaign's non-openers (an auto-resend's audience); returns
    how many staged rows were removed.

    A non-opener's address was Sent the original (in any of its occurrences) and none of the original's rows for
    it has an open or a click recorded, or a bounce or complaint; an address audience streamed as bounced (Soft
    or Hard) now is removed too. Audience streamed only subscribed, unsuppressed subscribers, so what is left is
    the intersection the resend goes to.
    """
    result = await conn.execute(
        sa.text(
            f"""
            WITH engaged AS (
                SELECT recipient_id FROM delivery.events WHERE campaign_id = :p AND kind IN ('open', 'click')
                UNION
                SELECT recipient_id FROM delivery.bounces WHERE campaign_id = :p
            ), non_openers AS (
                SELECT lower(r.email_address) AS address
                FROM delivery.recipients AS r LEFT JOIN engaged AS x ON x.recipient_id = r.recipient_id
                WHERE r.campaign_id = :p AND r.owner_user_id = :o
                GROUP BY lower(r.email_address)
                HAVING bool_or(r.status = '{RecipientStatus.SENT}') AND bool_and(x.recipient_id IS NULL)
            )
            DELETE FROM staged_recipients AS s
            WHERE s.bounced_before
               OR NOT EXISTS (SELECT 1 FROM non_openers AS n WHERE n.address = lower(s.email_address))
            """
        ),
        {"p": original_campaign_id, "o": owner_user_id},
    )
    return result.rowcount


async def staged_list_ids(conn: AsyncConnection) -> list[int]:
    """The lists the staged recipients come from, in id order."""
    rows = await conn.execute(sa.text("SELECT DISTINCT list_id FROM staged_recipients ORDER BY list_id"))
    return [int(row.list_id) for row in rows]


async def staged_address_count(conn: AsyncConnection) -> int:
    """How many distinct addresses (compared case-insensitively) the staging table holds: the rows queueing writes."""
    return int(
        (
            await conn.execute(sa.text("SELECT count(DISTINCT lower(email_address)) FROM staged_recipients"))
        ).scalar_one()
    )


async def queued_staged_count(
    conn: AsyncConnection,
    *,
    campaign_id: int,
    owner_user_id: int,
    occurrence: int,
    generation: int,
    first_batch: int,
    batch_size: int,
    variations: Sequence[Variation],
    test_group: int | None = None,
    events_subject: str | None = None,
    chunk_of: int | None = None,
) -> int:
    """Queues the staged recipients (each address once, in subscriber order) as Pending rows; returns how many.

    With `chunk_of` (a chunk of an occurrence queued in chunks: that many rows queued before it), an address the
    occurrence has queued already is left out, and a variation is drawn for k counted over the whole occurrence.

    With `events_subject`, the same statement announces them: a DeliveryEvents message of kind queued per
    batch (up to recipient_events.MAX_EVENTS_PER_MESSAGE recipients each; those Held for a split test's winner
    in messages of their own).

    Row k (from 1) goes into batch first_batch + (k - 1) // batch_size and, for an A/B campaign, gets
    the variation sending.variation_for(k) names.

    With `test_group` (a split test), only that many recipients are queued so: those that come first in
    an order fixed by a hash of the campaign and subscriber ids (a fair draw, the same on every replay,
    unrelated to subscriber order); k then counts within the test group. Every other recipient is
    queued Held, with no variation and no batch, until the winner is chosen.
    """
    params: dict[str, Any] = {
        "c": campaign_id,
        "o": owner_user_id,
        "occ": occurrence,
        "g": generation,
        "first": first_batch,
        "size": batch_size,
        "koff": chunk_of or 0,
    }
    # An earlier chunk's address: the literal bound lets the planner use the partial unique index.
    not_queued = (
        """WHERE NOT EXISTS (
                SELECT 1 FROM delivery.recipients AS q
                WHERE q.campaign_id = :c AND q.occurrence = :occ AND q.campaign_id < 4611686018427387904
                  AND lower(q.email_address) = lower(s.email_address))"""
        if chunk_of is not None
        else ""
    )
    # Each address once, numbered (rn) in subscriber order; k below is rn, or the rank within the test group.
    numbered = (
        """
        SELECT unique_addresses.*, row_number() OVER (ORDER BY subscriber_id) AS rn{draw}
        FROM (
            SELECT DISTINCT ON (lower(email_address)) *
            FROM staged_recipients AS s
            """
        + not_queued
        + """
            ORDER BY lower(email_address), subscriber_id
        ) AS unique_addresses
    """
    )
    if test_group is None:
        source = f"SELECT numbered.*, true AS in_test, rn AS k FROM ({numbered.format(draw='')}) AS numbered"
    else:
        params["test"] = test_group
        draw = (
            ", row_number() OVER (ORDER BY md5(CAST(:c AS text) || ':' || CAST(subscriber_id AS text)), subscriber_id)"
            " AS draw"
        )
        source = f"""
            SELECT drawn.*, row_number() OVER (PARTITION BY in_test ORDER BY rn) AS k
            FROM (
                SELECT numbered.*, draw <= CAST(:test AS bigint) AS in_test
                FROM ({numbered.format(draw=draw)}) AS numbered
            ) AS drawn
        """
    variation = "NULL::bigint"
    if variations:
        params["golden"] = sending.GOLDEN
        fraction = "(CAST(k + :koff AS float8) * :golden - floor(CAST(k + :koff AS float8) * :golden))"
        cases = []
        for index, (email_id, end) in enumerate(sending.variation_slots(variations)):
            params[f"e{index}"], params[f"v{index}"] = end, email_id
            cases.append(f"WHEN {fraction} < CAST(:e{index} AS float8) THEN CAST(:v{index} AS bigint)")
        variation = "CASE " + " ".join(cases) + " END"
    insert = f"""
            INSERT INTO delivery.recipients (
                campaign_id, owner_user_id, occurrence, generation, batch_id, subscriber_id, list_id,
                email_address, domain, first_name, last_name, custom_fields, email_id, status, bounced_before,
                subscription_time, subscription_ip, opt_in_time)
            SELECT :c, :o, :occ, :g,
                   CASE WHEN in_test THEN :first + (k - 1) / :size END,
                   subscriber_id, list_id, email_address,
                   CASE WHEN position('@' IN email_address) > 0
                        THEN lower(substring(btrim(email_address) FROM '[^@]*$')) ELSE '' END,
                   first_name, last_name, custom_fields,
                   CASE WHEN in_test THEN {variation} END,
                   CASE WHEN in_test THEN '{RecipientStatus.PENDING}' ELSE '{RecipientStatus.HELD}' END,
                   bounced_before, subscription_time, subscription_ip, opt_in_time
            FROM ({source}) AS positioned
            ORDER BY rn
            """
    if events_subject is None:
        return (await conn.execute(sa.text(insert), params)).rowcount
    params["ev_subject"] = events_subject
    params["ev_max"] = recipient_events.MAX_EVENTS_PER_MESSAGE
    queued = recipient_events.event_json(
        "a", f"'{recipient_events.KIND_NAMES[delivery_pb2.DELIVERY_EVENT_KIND_QUEUED]}'", "a.queued_at"
    )
    # One message per batch and block of recipient ids: the ids of one statement's rows are consecutive.
    group = (
        "CAST(coalesce(a.batch_id, 0) AS text) || ':' || CAST(a.recipient_id / CAST(:ev_max AS bigint) AS text)"
    )
    announce = recipient_events.messages_sql(
        "inserted",
        queued,
        group,
        "CAST(:ev_subject AS text)",
        f"'{events.DELIVERY_EVENTS.subject}:queued:' || campaign_id || ':' || CAST(:g AS text) || ':' || g",
    )
    statement = f"""
        WITH inserted AS ({insert} RETURNING campaign_id, owner_user_id, recipient_id, subscriber_id, email_address,
                                             batch_id, queued_at),
        announced AS ({announce})
        SELECT count(*) FROM inserted
    """
    return int((await conn.execute(sa.text(statement), params)).scalar_one())


async def save_occurrence(
    conn: AsyncConnection,
    campaign_id: int,
    *,
    occurrence: int,
    content: Mapping[str, Any],
    generation: int,
    batches: int,
    added_recipients: int,
    reason: str,
    split_test: Mapping[str, Any] | None = None,
    in_chunks: bool = False,
    published_batches: int | None = None,
) -> None:
    """Records a newly queued occurrence on its (locked) run: content, counters, and no finish yet.

    `split_test` (the occurrence holds recipients back for a winner) starts its test phase now. `in_chunks`: its
    recipients come in later transactions (queued_chunk), the run is queueing until finished_queueing.
    `published_batches`: the feeder publishes the batches after this one (the earlier occurrences' are published),
    in the trace of the current span; None: the caller publishes them.
    """
    await conn.execute(
        sa.text(
            "UPDATE delivery.campaign_runs SET occurrence = :occ, content = CAST(:content AS jsonb), "
            "generation = :g, batches = :b, total_recipients = total_recipients + :n, "
            "occurrence_started_at = now(), finished_at = NULL, reason = :reason, "
            "split_test = CAST(:split_test AS jsonb), "
            "test_started_at = CASE WHEN CAST(:split_test AS jsonb) IS NULL THEN NULL ELSE now() END, "
            "winner_email_id = NULL, winner_decided_at = NULL, "
            "queueing_after = CASE WHEN CAST(:chunks AS boolean) THEN 0 END, queueing_rows = 0, "
            "published_batches = CAST(:published AS integer), "
            "published_traceparent = CASE WHEN CAST(:published AS integer) IS NOT NULL THEN CAST(:tp AS text) END "
            "WHERE campaign_id = :c"
        ),
        {
            "c": campaign_id,
            "occ": occurrence,
            "content": json.dumps(content),
            "g": generation,
            "b": batches,
            "n": added_recipients,
            "reason": reason,
            "split_test": None if split_test is None else json.dumps(split_test),
            "chunks": in_chunks,
            "published": published_batches,
            "tp": tracing.traceparent(),
        },
    )


async def save_chunk(
    conn: AsyncConnection, campaign_id: int, *, batches: int, added_recipients: int, after: int
) -> None:
    """Records a queued chunk on its (locked) run: its batches and rows, and the last subscriber id it covered."""
    await conn.execute(
        sa.text(
            "UPDATE delivery.campaign_runs SET batches = batches + :b, total_recipients = total_recipients + :n, "
            "queueing_rows = queueing_rows + :n, queueing_after = greatest(queueing_after, :after) "
            "WHERE campaign_id = :c"
        ),
        {"c": campaign_id, "b": batches, "n": added_recipients, "after": after},
    )


async def queueing_room(conn: AsyncConnection, campaign_id: int) -> tuple[RunState, int] | None:
    """The run's state and how many of its queued rows are still to send (neither Sent, Failed, Deferred nor
    Dropped), from the kept counts: one row read. None when there is no run."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT r.state, coalesce(c.unsent, 0) AS unsent "
                "FROM delivery.campaign_runs AS r LEFT JOIN delivery.recipient_counts AS c USING (campaign_id) "
                "WHERE r.campaign_id = :c"
            ),
            {"c": campaign_id},
        )
    ).one_or_none()
    return None if row is None else (RunState(row.state), int(row.unsent))


async def finish_queueing(conn: AsyncConnection, campaign_id: int, reason: str = "") -> None:
    """Ends the (locked) run's queueing in chunks: it can finish once nothing is left to send. A `reason` (the
    audience refused midway) makes the occurrence end Failed with it."""
    await conn.execute(
        sa.text(
            "UPDATE delivery.campaign_runs SET queueing_after = NULL, queueing_rows = 0, "
            "reason = CASE WHEN CAST(:reason AS text) = '' THEN reason ELSE CAST(:reason AS text) END "
            "WHERE campaign_id = :c"
        ),
        {"c": campaign_id, "reason": reason},
    )


# --- completion ---------------------------------------------------------------------------------------------------


async def finished_occurrence(conn: AsyncConnection, campaign_id: int) -> sending.Finished | None:
    """Marks the run's occurrence finished when it is Sending and no row is Pending, Held or Sending; None otherwise.

    Held rows wait for a split test's winner: the campaign is not finished before they were sent, nor while its
    audience is still being queued in chunks. The guard on finished_at makes this happen once per publication,
    however many workers ask. The rows still open are read from the campaign's counts (migration 0022: no index
    holds `status`), which change in the transactions that change the rows.
    """
    row = (
        await conn.execute(
            sa.text(
                f"""
                UPDATE delivery.campaign_runs SET finished_at = now()
                WHERE campaign_id = :c AND state = '{RunState.SENDING}' AND finished_at IS NULL AND content IS NOT NULL
                  AND queueing_after IS NULL
                  AND NOT EXISTS (
                      SELECT 1 FROM delivery.recipient_counts AS n
                      WHERE n.campaign_id = :c AND n.unsent > 0)
                RETURNING owner_user_id, occurrence, occurrence_started_at, finished_at, reason
                """
            ),
            {"c": campaign_id},
        )
    ).one_or_none()
    if row is None:
        return None
    counts = (
        await conn.execute(
            sa.text(
                f"""
                SELECT count(*) FILTER (WHERE status = '{RecipientStatus.SENT}'),
                       count(*) FILTER (WHERE status = '{RecipientStatus.FAILED}'),
                       count(*) FILTER (WHERE status = '{RecipientStatus.DEFERRED}'),
                       coalesce((SELECT last_error FROM delivery.recipients
                                 WHERE campaign_id = :c AND occurrence = :occ AND status = '{RecipientStatus.FAILED}'
                                 ORDER BY failed_at DESC NULLS LAST LIMIT 1), '')
                FROM delivery.recipients WHERE campaign_id = :c AND occurrence = :occ
                """
            ),
            {"c": campaign_id, "occ": row.occurrence},
        )
    ).one()
    failed, reason = sending.finish_outcome(counts[0], counts[1], counts[3], deferred=counts[2])
    # The main send's figures, for its throughput: what the deferred recipients' retries add later is not.
    await conn.execute(
        sa.text(
            "UPDATE delivery.campaign_runs AS run SET main_sent = c.sent, main_last_sent_at = c.last_sent_at "
            "FROM delivery.recipient_counts AS c WHERE run.campaign_id = :c AND c.campaign_id = :c"
        ),
        {"c": campaign_id},
    )
    if row.reason:
        failed, reason = True, row.reason
    return sending.Finished(
        campaign_id=campaign_id,
        owner_user_id=row.owner_user_id,
        failed=failed,
        reason=reason,
        started_at=row.occurrence_started_at,
        finished_at=row.finished_at,
        occurrence=row.occurrence,
    )


# --- split tests ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueSplitTest:
    """A run whose split test's winner is due: its settings and the counters a new publication continues."""

    campaign_id: int
    occurrence: int
    generation: int
    batches: int
    split_test: Mapping[str, Any]
    # Not None: the feeder publishes the winner's batches (services/delivery/feeder.py).
    published_batches: int | None


async def due_split_tests_for_update(conn: AsyncConnection, limit: int) -> list[DueSplitTest]:
    """Sending runs whose test phase lasted its TestDuration and whose winner is undecided, locked.

    SKIP LOCKED: a run another replica's decider (or a status change) holds is left alone this pass, so
    a winner is never decided twice.
    """
    rows = await conn.execute(
        sa.text(
            f"""
            SELECT campaign_id, occurrence, generation, batches, split_test, published_batches
            FROM delivery.campaign_runs
            WHERE split_test IS NOT NULL AND winner_decided_at IS NULL AND state = '{RunState.SENDING}'
              AND test_started_at
                  + make_interval(hours => CAST(split_test ->> 'test_duration_hours' AS integer)) <= now()
            ORDER BY test_started_at, campaign_id
            LIMIT :n
            FOR UPDATE SKIP LOCKED
            """
        ),
        {"n": limit},
    )
    return [DueSplitTest(**row._mapping) for row in rows]


async def split_test_figures(
    conn: AsyncConnection, campaign_id: int, occurrence: int
) -> list[sending.SplitTestFigures]:
    """Per variation of the occurrence's test group (the rows that have one): Sent rows, and distinct recipients
    who opened or clicked."""
    rows = await conn.execute(
        sa.text(
            f"""
            SELECT r.email_id,
                   count(*) FILTER (WHERE r.status = '{RecipientStatus.SENT}') AS sent,
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM delivery.events AS e
                       WHERE e.campaign_id = r.campaign_id AND e.recipient_id = r.recipient_id
                         AND e.kind = 'open')) AS unique_opens,
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM delivery.events AS e
                       WHERE e.campaign_id = r.campaign_id AND e.recipient_id = r.recipient_id
                         AND e.kind = 'click')) AS unique_clicks
            FROM delivery.recipients AS r
            WHERE r.campaign_id = :c AND r.occurrence = :occ AND r.email_id IS NOT NULL
            GROUP BY r.email_id
            """
        ),
        {"c": campaign_id, "occ": occurrence},
    )
    return [sending.SplitTestFigures(**row._mapping) for row in rows]


async def released_held_count(
    conn: AsyncConnection,
    campaign_id: int,
    *,
    winner_email_id: int,
    generation: int,
    first_batch: int,
    batch_size: int,
) -> int:
    """Gives the campaign's Held rows the winner's email and makes them Pending in new batches of `generation`."""
    result = await conn.execute(
        sa.text(
            f"""
            UPDATE delivery.recipients AS r
            SET status = '{RecipientStatus.PENDING}', email_id = :e, generation = :g,
                batch_id = :first + (h.rn - 1) / :size
            FROM (
                SELECT recipient_id, row_number() OVER (ORDER BY recipient_id) AS rn
                FROM delivery.recipients WHERE campaign_id = :c AND status = '{RecipientStatus.HELD}'
            ) AS h
            WHERE r.campaign_id = :c AND r.recipient_id = h.recipient_id
            """
        ),
        {"c": campaign_id, "e": winner_email_id, "g": generation, "first": first_batch, "size": batch_size},
    )
    return result.rowcount


async def save_winner(
    conn: AsyncConnection, campaign_id: int, *, winner_email_id: int, generation: int, batches: int
) -> None:
    """Records the split test's winner on the (locked) run, with the publication that sends it to the rest."""
    await conn.execute(
        sa.text(
            "UPDATE delivery.campaign_runs SET winner_email_id = :e, winner_decided_at = now(), "
            "generation = :g, batches = :b, finished_at = NULL WHERE campaign_id = :c"
        ),
        {"c": campaign_id, "e": winner_email_id, "g": generation, "b": batches},
    )


# --- retrying failed recipients -----------------------------------------------------------------------------------


async def requeued_failed_count(
    conn: AsyncConnection,
    campaign_id: int,
    generation: int,
    first_batch: int,
    batch_size: int,
    events_subject: str | None = None,
) -> int:
    """Puts the campaign's Failed rows back to Pending in new batches of `generation`; returns how many.

    With `events_subject`, the same statement announces them queued again, a message per batch (as queueing)."""
    params: dict[str, Any] = {"c": campaign_id, "g": generation, "first": first_batch, "size": batch_size}
    update = f"""
            UPDATE delivery.recipients AS r
            SET status = '{RecipientStatus.PENDING}', generation = :g, batch_id = :first + (f.rn - 1) / :size,
                claimed_by = NULL, claimed_at = NULL, failed_at = NULL
            FROM (
                SELECT recipient_id, row_number() OVER (ORDER BY recipient_id) AS rn
                FROM delivery.recipients WHERE campaign_id = :c AND status = '{RecipientStatus.FAILED}'
            ) AS f
            WHERE r.campaign_id = :c AND r.recipient_id = f.recipient_id
            """
    if events_subject is None:
        return (await conn.execute(sa.text(update), params)).rowcount
    params["ev_subject"] = events_subject
    params["ev_max"] = recipient_events.MAX_EVENTS_PER_MESSAGE
    queued = recipient_events.event_json(
        "a", f"'{recipient_events.KIND_NAMES[delivery_pb2.DELIVERY_EVENT_KIND_QUEUED]}'", "now()"
    )
    group = "CAST(a.batch_id AS text) || ':' || CAST(a.rn / CAST(:ev_max AS bigint) AS text)"
    announce = recipient_events.messages_sql(
        "requeued",
        queued,
        group,
        "CAST(:ev_subject AS text)",
        f"'{events.DELIVERY_EVENTS.subject}:queued:' || campaign_id || ':' || CAST(:g AS text) || ':' || g",
    )
    statement = f"""
        WITH requeued AS ({update} RETURNING r.campaign_id, r.owner_user_id, r.recipient_id, r.subscriber_id,
                                             r.email_address, r.batch_id, f.rn),
        announced AS ({announce})
        SELECT count(*) FROM requeued
    """
    return int((await conn.execute(sa.text(statement), params)).scalar_one())


async def save_retry(conn: AsyncConnection, campaign_id: int, generation: int, batches: int) -> None:
    await conn.execute(
        sa.text(
            f"UPDATE delivery.campaign_runs SET generation = :g, batches = :b, state = '{RunState.SENDING}', "
            "finished_at = NULL, reason = '' WHERE campaign_id = :c"
        ),
        {"c": campaign_id, "g": generation, "b": batches},
    )


# --- deferred recipients ------------------------------------------------------------------------------------------


async def deferred_retries(conn: AsyncConnection, campaign_id: int) -> list[retries.DueRetry]:
    """The campaign's Deferred rows, each due when it was (or now, if that has passed): a resume schedules them again."""
    rows = await conn.execute(
        sa.text(
            f"SELECT recipient_id, attempts, greatest(next_attempt_at, now()) FROM delivery.recipients "
            f"WHERE campaign_id = :c AND status = '{RecipientStatus.DEFERRED}'"
        ),
        {"c": campaign_id},
    )
    return [retries.DueRetry(campaign_id, recipient_id, attempts, due) for recipient_id, attempts, due in rows]


async def overdue_retries(conn: AsyncConnection, overdue_seconds: float, limit: int) -> list[retries.DueRetry]:
    """Deferred rows of running campaigns (Sending or Sent) whose retry is overdue by more than `overdue_seconds`,
    at most `limit`, made due now: their retry message was lost, and the caller schedules them again."""
    rows = await conn.execute(
        sa.text(
            f"""
            UPDATE delivery.recipients AS r SET next_attempt_at = now()
            FROM (
                SELECT q.campaign_id, q.recipient_id FROM delivery.recipients AS q
                JOIN delivery.campaign_runs AS run ON run.campaign_id = q.campaign_id
                WHERE q.status = '{RecipientStatus.DEFERRED}'
                  AND q.next_attempt_at < now() - make_interval(secs => :s)
                  AND run.state IN ('{RunState.SENDING}', '{RunState.SENT}')
                ORDER BY q.next_attempt_at LIMIT :n
                FOR UPDATE OF q SKIP LOCKED
            ) AS due
            WHERE r.campaign_id = due.campaign_id AND r.recipient_id = due.recipient_id
            RETURNING r.campaign_id, r.recipient_id, r.attempts, r.next_attempt_at
            """
        ),
        {"s": overdue_seconds, "n": limit},
    )
    return [retries.DueRetry(*row) for row in rows]


# --- double opt-in confirmations ----------------------------------------------------------------------------------


async def recorded_preview_request(conn: AsyncConnection, request_id: str, run_id: int) -> bool:
    """Records one preview request; False when it was recorded before (a redelivered event)."""
    result = await conn.execute(
        sa.text(
            "INSERT INTO delivery.preview_requests (request_id, run_id) VALUES (:i, :r) ON CONFLICT DO NOTHING"
        ),
        {"i": request_id, "r": run_id},
    )
    return result.rowcount == 1


async def recorded_opt_in_request(
    conn: AsyncConnection, subscriber_id: int, request_time: datetime, run_id: int
) -> bool:
    """Records one confirmation request; False when it was recorded before (a redelivered event)."""
    result = await conn.execute(
        sa.text(
            "INSERT INTO delivery.opt_in_requests (subscriber_id, request_time, run_id) VALUES (:s, :t, :r) "
            "ON CONFLICT DO NOTHING"
        ),
        {"s": subscriber_id, "t": request_time, "r": run_id},
    )
    return result.rowcount == 1


async def recorded_opt_in_requests(
    conn: AsyncConnection, subscriber_ids: Sequence[int], request_time: datetime, run_id: int
) -> set[int]:
    """Records the confirmation requests of many subscribers at once; the subscribers whose request is new
    (the others were recorded before: a redelivered event)."""
    result = await conn.execute(
        sa.text(
            "INSERT INTO delivery.opt_in_requests (subscriber_id, request_time, run_id) "
            "SELECT s, :t, :r FROM unnest(CAST(:s AS bigint[])) AS s ON CONFLICT DO NOTHING RETURNING subscriber_id"
        ),
        {"s": list(subscriber_ids), "t": request_time, "r": run_id},
    )
    return {int(row[0]) for row in result}


async def opened_opt_in_batches(
    conn: AsyncConnection, run: Run, *, content: Mapping[str, Any], occurrence: int, recipients: int, batches: int
) -> tuple[int, int]:
    """Takes the next generation and `batches` batches of a (locked) opt-in run for `recipients` rows, keeps it
    Sending with `content` as the occurrence's; returns (generation, first batch id)."""
    row = (
        await conn.execute(
            sa.text(
                "UPDATE delivery.campaign_runs SET generation = generation + 1, batches = batches + :nb, "
                "total_recipients = total_recipients + :n, state = :s, finished_at = NULL, reason = '', "
                "occurrence = :occ, content = CAST(:content AS jsonb), "
                "occurrence_started_at = coalesce(occurrence_started_at, now()) "
                "WHERE campaign_id = :c RETURNING generation, batches"
            ),
            {
                "c": run.campaign_id,
                "s": RunState.SENDING,
                "occ": occurrence,
                "content": json.dumps(content),
                "n": recipients,
                "nb": batches,
            },
        )
    ).one()
    return int(row.generation), int(row.batches) - batches + 1


async def queue_opt_in_recipients(
    conn: AsyncConnection,
    run: Run,
    *,
    occurrence: int,
    generation: int,
    first_batch: int,
    batch_size: int,
    list_id: int,
    email_id: int,
    recipients: Sequence[Mapping[str, Any]],
) -> None:
    """Queues many confirmation emails of one list as Pending rows of its run, `batch_size` to a batch from
    `first_batch` on, in one statement."""
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO delivery.recipients (
                campaign_id, owner_user_id, occurrence, generation, batch_id, subscriber_id, list_id,
                email_address, domain, first_name, last_name, email_id, status, bounced_before, subscription_time)
            SELECT :c, :o, :occ, :g, :b + (r.n - 1) / :size, r.s, :l, r.a, lower(substring(btrim(r.a) FROM '[^@]*$')),
                r.f, r.ln, :e, '{RecipientStatus.PENDING}', false, r.st
            FROM unnest(CAST(:ids AS bigint[]), CAST(:addresses AS text[]), CAST(:firsts AS text[]),
                        CAST(:lasts AS text[]), CAST(:subscribed AS timestamptz[]))
                 WITH ORDINALITY AS r (s, a, f, ln, st, n)
            """
        ),
        {
            "c": run.campaign_id,
            "o": run.owner_user_id,
            "occ": occurrence,
            "g": generation,
            "b": first_batch,
            "size": batch_size,
            "l": list_id,
            "e": email_id,
            "ids": [r["subscriber_id"] for r in recipients],
            "addresses": [r["email_address"] for r in recipients],
            "firsts": [r["first_name"] for r in recipients],
            "lasts": [r["last_name"] for r in recipients],
            "subscribed": [r.get("subscription_time") for r in recipients],
        },
    )


async def queue_opt_in_recipient(
    conn: AsyncConnection,
    run: Run,
    *,
    occurrence: int,
    generation: int,
    batch_id: int,
    recipient: Mapping[str, Any],
) -> None:
    """Queues one confirmation email (or preview) as a Pending row of its run, in a batch of its own."""
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO delivery.recipients (
                campaign_id, owner_user_id, occurrence, generation, batch_id, subscriber_id, list_id,
                email_address, domain, first_name, last_name, custom_fields, email_id, status, bounced_before,
                subscription_time, subscription_ip, opt_in_time)
            VALUES (:c, :o, :occ, :g, :b, :s, :l, :a, lower(substring(btrim(:a) FROM '[^@]*$')), :f, :n,
                    CAST(:cf AS jsonb), :e, '{RecipientStatus.PENDING}', false, :st, :si, :ot)
            """
        ),
        {
            "c": run.campaign_id,
            "o": run.owner_user_id,
            "occ": occurrence,
            "g": generation,
            "b": batch_id,
            "s": recipient["subscriber_id"],
            "l": recipient["list_id"],
            "a": recipient["email_address"],
            "f": recipient["first_name"],
            "n": recipient["last_name"],
            "cf": json.dumps(recipient["custom_fields"]) if recipient.get("custom_fields") else None,
            "e": recipient["email_id"],
            "st": recipient.get("subscription_time"),
            "si": recipient.get("subscription_ip") or "",
            "ot": recipient.get("opt_in_time"),
        },
    )


async def opened_opt_in_batch(
    conn: AsyncConnection, run: Run, *, content: Mapping[str, Any], occurrence: int
) -> tuple[int, int]:
    """Takes the next generation and batch of a (locked) opt-in run, keeps it Sending with `content` as the
    occurrence's; returns (generation, batch id)."""
    row = (
        await conn.execute(
            sa.text(
                "UPDATE delivery.campaign_runs SET generation = generation + 1, batches = batches + 1, "
                "total_recipients = total_recipients + 1, state = :s, finished_at = NULL, reason = '', "
                "occurrence = :occ, content = CAST(:content AS jsonb), "
                "occurrence_started_at = coalesce(occurrence_started_at, now()) "
                "WHERE campaign_id = :c RETURNING generation, batches"
            ),
            {"c": run.campaign_id, "s": RunState.SENDING, "occ": occurrence, "content": json.dumps(content)},
        )
    ).one()
    return int(row.generation), int(row.batches)
