"""SQL of the delivery workers: the runs they check, claims of a batch's rows and their outcomes, stale claims.

A window of a batch is claimed with one UPDATE … RETURNING (FOR UPDATE SKIP LOCKED, so workers
never take the same row) and its outcomes are written with one UPDATE … FROM unnest, in the same
statement as the next claim.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from herald.delivery.v1 import delivery_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common import events
from services.delivery import recipient_events, sending
from services.delivery.domain import RecipientStatus
from services.delivery.message import Recipient
from services.delivery.sending import Outcome, RunState


@dataclass(frozen=True)
class ClaimedRecipient(Recipient):
    """A claimed row: what rendering needs, and whether its address had bounced before (its delivery is announced)."""

    bounced_before: bool = False
    # Sends tried before this claim, and since when the row has been Deferred (None: never deferred).
    attempts: int = 0
    deferred_since: datetime | None = None


@dataclass(frozen=True)
class RunView:
    """What a worker checks between messages: the run's state, which occurrence its content is, and its
    generation (a deferred recipient's bounce is keyed by it: a row fails at most once per generation)."""

    state: RunState
    occurrence: int
    generation: int = 0


async def run_views(conn: AsyncConnection, campaign_ids: Sequence[int]) -> dict[int, RunView]:
    rows = await conn.execute(
        sa.text(
            "SELECT campaign_id, state, occurrence, generation FROM delivery.campaign_runs "
            "WHERE campaign_id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"ids": list(campaign_ids)},
    )
    return {row.campaign_id: RunView(RunState(row.state), row.occurrence, row.generation) for row in rows}


async def run_content(conn: AsyncConnection, campaign_id: int) -> tuple[int, Mapping[str, Any]] | None:
    """(occurrence, content) of the campaign's run, or None when it has no content."""
    row = (
        await conn.execute(
            sa.text("SELECT occurrence, content FROM delivery.campaign_runs WHERE campaign_id = :c"),
            {"c": campaign_id},
        )
    ).one_or_none()
    if row is None or row.content is None:
        return None
    return row.occurrence, row.content


async def resolved_stale_claim_count(
    conn: AsyncConnection,
    campaign_id: int,
    batch_id: int,
    claimant: str,
    stale_seconds: float,
    events_subject: str | None = None,
) -> int:
    """Marks Failed (ambiguous) the batch's rows another claimant took longer ago than `stale_seconds`.

    That worker is presumed dead: it may or may not have sent them, so they are not sent again. The
    claim is kept, so that a worker that was only cut off from NATS can still record what really happened.
    With `events_subject`, the same statement announces them Failed.
    """
    announced, announced_params = _announced(events_subject, source="resolved")
    result = await conn.execute(
        sa.text(
            f"""
            WITH resolved AS (
                UPDATE delivery.recipients AS r
                SET status = '{RecipientStatus.FAILED}', failed_at = now(), last_error = :error
                WHERE campaign_id = :c AND batch_id = :b AND status = '{RecipientStatus.SENDING}' AND claimed_by <> :w
                  AND claimed_at < now() - make_interval(secs => :s)
                {_RECORDED}
            ){announced}
            SELECT count(*) FROM resolved
            """
        ),
        {
            "c": campaign_id,
            "b": batch_id,
            "w": claimant,
            "s": stale_seconds,
            "error": sending.AMBIGUOUS,
            **announced_params,
        },
    )
    return int(result.scalar_one())


def _outcome_arrays(outcomes: Sequence[Outcome]) -> dict[str, list[Any]]:
    return {
        "ids": [o.recipient_id for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "attempts": [o.attempts for o in outcomes],
        "errors": [o.error for o in outcomes],
        "message_ids": [o.message_id for o in outcomes],
        "sent_ats": [o.sent_at for o in outcomes],
        "next_attempts": [o.next_attempt_at for o in outcomes],
    }


# Writes outcomes of the claimant's rows. A row another worker marked ambiguous meanwhile is still the
# claimant's to correct: its outcome is the truth. The rows are found by primary key; the status test
# is a CASE, which no index answers, so that the plan stays on the key whatever indexes the table has.
_RECORD = f"""
    UPDATE delivery.recipients AS r
    SET status = o.status,
        attempts = r.attempts + o.attempts,
        last_error = o.error,
        message_id = coalesce(o.message_id, r.message_id),
        sent_at = coalesce(o.sent_at, r.sent_at),
        failed_at = CASE WHEN o.status = '{RecipientStatus.FAILED}' THEN now() ELSE NULL END,
        next_attempt_at = o.next_attempt_at,
        deferred_since = CASE WHEN o.status = '{RecipientStatus.DEFERRED}' THEN coalesce(r.deferred_since, now())
                              ELSE r.deferred_since END,
        claimed_by = CASE WHEN o.status IN ('{RecipientStatus.PENDING}', '{RecipientStatus.DROPPED}')
                          THEN NULL ELSE r.claimed_by END,
        claimed_at = CASE WHEN o.status IN ('{RecipientStatus.PENDING}', '{RecipientStatus.DROPPED}')
                          THEN NULL ELSE r.claimed_at END
    FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:attempts AS integer[]),
                CAST(:errors AS text[]), CAST(:message_ids AS text[]), CAST(:sent_ats AS timestamptz[]),
                CAST(:next_attempts AS timestamptz[]))
         AS o(recipient_id, status, attempts, error, message_id, sent_at, next_attempt_at)
    WHERE r.campaign_id = :c AND r.recipient_id = ANY(CAST(:ids AS bigint[]))
      AND r.recipient_id = o.recipient_id AND r.claimed_by = :w
      AND CASE r.status WHEN '{RecipientStatus.SENDING}' THEN true
                        WHEN '{RecipientStatus.FAILED}' THEN r.last_error LIKE 'ambiguous:%'
                        ELSE false END
"""


async def record_outcomes(
    conn: AsyncConnection,
    campaign_id: int,
    claimant: str,
    outcomes: Sequence[Outcome],
    outbox_rows: Sequence[Mapping[str, object]] = (),
    events_subject: str | None = None,
) -> int:
    """Writes the outcomes of the claimant's rows in one statement; returns how many rows it changed.

    `outbox_rows` (retry messages, as in `recorded_and_claimed`) and, with `events_subject`, the DeliveryEvents
    of the rows that became Sent or Failed are written into the outbox by the same statement: in autocommit,
    the campaign's counts row is locked for one statement only.
    """
    queued, queued_params = _queued(outbox_rows)
    announced, announced_params = _announced(events_subject)
    if not queued and not announced:
        result = await conn.execute(
            sa.text(_RECORD), {"c": campaign_id, "w": claimant, **_outcome_arrays(outcomes)}
        )
        return result.rowcount
    result = await conn.execute(
        sa.text(f"WITH recorded AS ({_RECORD} {_RECORDED}){queued}{announced} SELECT count(*) FROM recorded"),
        {"c": campaign_id, "w": claimant, **_outcome_arrays(outcomes), **queued_params, **announced_params},
    )
    return int(result.scalar_one())


# What a recorded row tells its event.
_RECORDED = (
    "RETURNING r.recipient_id, r.owner_user_id, r.campaign_id, r.subscriber_id, r.email_address, r.status, "
    "r.sent_at, r.failed_at, r.last_error"
)


def _announced(events_subject: str | None, source: str = "recorded") -> tuple[str, dict[str, object]]:
    """A WITH item (with its leading comma) that writes a DeliveryEvents message of the `source` rows (columns
    as _RECORDED returns them) that became Sent or Failed into the outbox (none when none did; more than one
    only past recipient_events.MAX_EVENTS_PER_MESSAGE rows), and its parameters; nothing without a subject."""
    if events_subject is None:
        return "", {}
    return _announcing(source), {
        "ev_subject": events_subject,
        "ev_msg_id": events.DELIVERY_EVENTS.msg_id(),
        "ev_max": recipient_events.MAX_EVENTS_PER_MESSAGE,
    }


@functools.cache
def _announcing(source: str) -> str:
    """The WITH item of `_announced`, made once per source."""
    kind = (
        f"CASE a.status WHEN '{RecipientStatus.SENT}' THEN '{recipient_events.KIND_NAMES[delivery_pb2.DELIVERY_EVENT_KIND_SENT]}' "
        f"ELSE '{recipient_events.KIND_NAMES[delivery_pb2.DELIVERY_EVENT_KIND_FAILED]}' END"
    )
    event = recipient_events.event_json(
        "a",
        kind,
        f"CASE a.status WHEN '{RecipientStatus.SENT}' THEN a.sent_at ELSE a.failed_at END",
        f"CASE a.status WHEN '{RecipientStatus.FAILED}' THEN a.last_error END",
    )
    # One message per block of recipient ids, so that no window or batch size makes one too large for NATS.
    insert = recipient_events.messages_sql(
        source,
        event,
        "CAST(a.recipient_id / CAST(:ev_max AS bigint) AS text)",
        "CAST(:ev_subject AS text)",
        "CAST(:ev_msg_id AS text) || ':' || g",
        where=f"a.status IN ('{RecipientStatus.SENT}', '{RecipientStatus.FAILED}')",
    )
    return f", announced AS ({insert})"


def _queued(outbox_rows: Sequence[Mapping[str, object]]) -> tuple[str, dict[str, list[object]]]:
    """A WITH item (with its leading comma) that writes `outbox_rows` into the outbox, and its parameters;
    nothing without rows."""
    if not outbox_rows:
        return "", {}
    sql = """,
            queued AS (
                INSERT INTO delivery.outbox (subject, msg_id, payload, headers, traceparent)
                SELECT * FROM unnest(CAST(:out_subjects AS text[]), CAST(:out_ids AS text[]),
                                     CAST(:out_payloads AS bytea[]), CAST(:out_headers AS jsonb[]),
                                     CAST(:out_traceparents AS text[]))
                ON CONFLICT (msg_id) DO NOTHING
            )"""
    params = {
        "out_subjects": [row["s"] for row in outbox_rows],
        "out_ids": [row["m"] for row in outbox_rows],
        "out_payloads": [row["p"] for row in outbox_rows],
        "out_headers": [row["h"] for row in outbox_rows],
        "out_traceparents": [row.get("t") for row in outbox_rows],
    }
    return sql, params


@functools.cache
def _recording_and_claiming(queued: str, announced: str) -> sa.TextClause:
    """The statement of `recorded_and_claimed`, made once for each of its few shapes (with or without retry
    messages and announcements): parsing a text statement's parameters costs a worker more than the call."""
    return sa.text(
        f"""
        WITH recorded AS ({_RECORD} {_RECORDED}){queued}{announced},
        lost AS (
            UPDATE delivery.recipients
            SET status = '{RecipientStatus.PENDING}', claimed_by = NULL, claimed_at = NULL
            WHERE campaign_id = :c AND batch_id = :b AND status = '{RecipientStatus.SENDING}' AND claimed_by = :w
              AND recipient_id <> ALL(CAST(:ids AS bigint[]))
            RETURNING recipient_id
        ),
        claimed AS (
            UPDATE delivery.recipients
            SET status = '{RecipientStatus.SENDING}', claimed_by = :w, claimed_at = now()
            -- ARRAY(...) runs the locking subquery exactly once: as an IN (...) join it may be
            -- rescanned, and every rescan with SKIP LOCKED would claim further rows.
            WHERE campaign_id = :c AND recipient_id = ANY(ARRAY(
                SELECT recipient_id FROM delivery.recipients
                WHERE campaign_id = :c AND batch_id = :b AND generation = :g
                  AND status = '{RecipientStatus.PENDING}' AND recipient_id <> ALL(CAST(:skip AS bigint[]))
                  AND lower(split_part(email_address, '@', 2)) <> ALL(CAST(:skip_domains AS text[]))
                ORDER BY recipient_id LIMIT :n
                FOR UPDATE SKIP LOCKED))
              AND (SELECT state FROM delivery.campaign_runs WHERE campaign_id = :c) = '{RunState.SENDING}'
            RETURNING recipient_id, email_address, first_name, last_name, subscriber_id, list_id,
                      custom_fields, email_id, subscription_time, subscription_ip, opt_in_time,
                      bounced_before, attempts, deferred_since
        )
        SELECT recipient_id, email_address, first_name, last_name, subscriber_id, list_id, custom_fields,
               email_id, subscription_time, subscription_ip, opt_in_time, bounced_before, attempts,
               deferred_since
        FROM claimed
        """
    )


async def recorded_and_claimed(
    conn: AsyncConnection,
    campaign_id: int,
    batch_id: int,
    generation: int,
    claimant: str,
    outcomes: Sequence[Outcome],
    limit: int,
    outbox_rows: Sequence[Mapping[str, object]] = (),
    events_subject: str | None = None,
    skip: Sequence[int] = (),
    skip_domains: Sequence[str] = (),
) -> list[ClaimedRecipient]:
    """In one statement: writes the last window's outcomes and claims the next `limit` Pending rows of the batch.

    Rows are claimed only while the run is Sending. Rows still Sending under this claimant that are not
    among `outcomes` were claimed by a statement whose answer never arrived (the connection broke): nobody
    sent them, so they go back to Pending. `outbox_rows` (the retry messages of the window's deferred
    recipients, services/common/outbox.outbox_row) are written into the outbox by the same statement: all
    or nothing with the outcomes; the relay publishes them at its next poll. So is, with `events_subject`, one
    DeliveryEvents message of the window's Sent and Failed rows (services/delivery/recipient_events.py).
    Rows in `skip` (set aside by the pacer in this handling: Pending again), and rows whose recipient domain is in
    `skip_domains` (lower case: domains the pacer has no token for now), are not claimed.
    """
    queued, queued_params = _queued(outbox_rows)
    announced, announced_params = _announced(events_subject)
    rows = await conn.execute(
        _recording_and_claiming(queued, announced),
        {
            "c": campaign_id,
            "b": batch_id,
            "g": generation,
            "w": claimant,
            "n": limit,
            "skip": list(skip),
            "skip_domains": list(skip_domains),
            **_outcome_arrays(outcomes),
            **queued_params,
            **announced_params,
        },
    )
    return [ClaimedRecipient(*row) for row in rows]


async def claimed_retries(
    conn: AsyncConnection,
    campaign_id: int,
    claimant: str,
    retries: Sequence[tuple[int, int]],
    stale_seconds: float,
    events_subject: str | None = None,
) -> tuple[list[ClaimedRecipient], int]:
    """Claims the campaign's rows that due retry messages name, as (recipient_id, attempt); returns them and how
    many rows were Failed instead (stale, or superseded).

    A row is claimed only while it is Deferred with the message's attempt count (a message that arrives
    twice, or one for an attempt already made, finds nothing) and while the run is Sending or Sent (a
    finished campaign's deferred recipients are still retried; a paused one's wait for the resume). A
    row still Sending for the same attempt under another claimant for longer than `stale_seconds` was
    being retried by a worker presumed dead (its message came back): it is Failed as ambiguous, never
    sent again silently. A row deferred in an earlier occurrence of a recurring campaign whose content has been
    replaced since is Failed with its last reply (its message can no longer be made). With `events_subject`,
    the same statement announces the rows it Failed.
    """
    announced, announced_params = _announced(events_subject, source="given_up")
    ids = [recipient_id for recipient_id, _ in retries]
    attempts = [attempt for _, attempt in retries]
    result = await conn.execute(
        sa.text(
            f"""
            WITH wanted AS (
                SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[])) AS w(recipient_id, attempt)
            ),
            stale AS (
                UPDATE delivery.recipients AS r
                SET status = '{RecipientStatus.FAILED}', failed_at = now(), last_error = :ambiguous,
                    next_attempt_at = NULL
                FROM wanted AS w
                WHERE r.campaign_id = :c AND r.recipient_id = w.recipient_id AND r.attempts = w.attempt
                  AND r.status = '{RecipientStatus.SENDING}' AND r.deferred_since IS NOT NULL
                  AND r.claimed_by <> :w AND r.claimed_at < now() - make_interval(secs => :s)
                {_RECORDED}
            ),
            run AS (SELECT state, occurrence FROM delivery.campaign_runs WHERE campaign_id = :c),
            superseded AS (
                UPDATE delivery.recipients AS r
                SET status = '{RecipientStatus.FAILED}', failed_at = now(), next_attempt_at = NULL,
                    last_error = 'deferred in an occurrence the campaign has replaced since (its content is '
                                 || 'gone); last reply: ' || r.last_error
                FROM wanted AS w, run
                WHERE r.campaign_id = :c AND r.recipient_id = w.recipient_id AND r.attempts = w.attempt
                  AND r.status = '{RecipientStatus.DEFERRED}' AND r.occurrence <> run.occurrence
                  AND run.state IN ('{RunState.SENDING}', '{RunState.SENT}')
                {_RECORDED}
            ),
            given_up AS (SELECT * FROM stale UNION ALL SELECT * FROM superseded){announced},
            claimed AS (
                UPDATE delivery.recipients AS r
                SET status = '{RecipientStatus.SENDING}', claimed_by = :w, claimed_at = now()
                FROM wanted AS w, run
                WHERE r.campaign_id = :c AND r.recipient_id = w.recipient_id AND r.attempts = w.attempt
                  AND r.status = '{RecipientStatus.DEFERRED}' AND r.occurrence = run.occurrence
                  AND run.state IN ('{RunState.SENDING}', '{RunState.SENT}')
                RETURNING r.recipient_id, r.email_address, r.first_name, r.last_name, r.subscriber_id, r.list_id,
                          r.custom_fields, r.email_id, r.subscription_time, r.subscription_ip, r.opt_in_time,
                          r.bounced_before, r.attempts, r.deferred_since
            )
            SELECT *, CAST(NULL AS bigint) AS stale FROM claimed
            UNION ALL
            SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                   (SELECT count(*) FROM stale) + (SELECT count(*) FROM superseded)
            """
        ),
        {
            "c": campaign_id,
            "w": claimant,
            "s": stale_seconds,
            "ids": ids,
            "attempts": attempts,
            "ambiguous": sending.AMBIGUOUS,
            **announced_params,
        },
    )
    claimed: list[ClaimedRecipient] = []
    stale = 0
    for row in result:
        if row[0] is None:
            stale = int(row[-1])
        else:
            claimed.append(ClaimedRecipient(*row[:-1]))
    return claimed, stale


async def released_retries(
    conn: AsyncConnection, campaign_id: int, claimant: str, recipient_ids: Sequence[int]
) -> int:
    """Puts retry claims that were not sent (the run stopped meanwhile) back to Deferred, due at once: a resume
    schedules them again; a cancel has dropped them (the claims of a cancelled run are Dropped here)."""
    result = await conn.execute(
        sa.text(
            f"""
            UPDATE delivery.recipients AS r
            SET status = CASE WHEN run.cancelled THEN '{RecipientStatus.DROPPED}' ELSE '{RecipientStatus.DEFERRED}' END,
                next_attempt_at = CASE WHEN run.cancelled THEN NULL ELSE now() END,
                last_error = CASE WHEN run.cancelled THEN 'campaign cancelled' ELSE r.last_error END
            FROM (SELECT coalesce(bool_or(state = '{RunState.CANCELLED}'), false) AS cancelled
                  FROM delivery.campaign_runs WHERE campaign_id = :c) AS run
            WHERE r.campaign_id = :c AND r.recipient_id = ANY(CAST(:ids AS bigint[]))
              AND r.status = '{RecipientStatus.SENDING}' AND r.claimed_by = :w
            """
        ),
        {"c": campaign_id, "w": claimant, "ids": list(recipient_ids)},
    )
    return result.rowcount
