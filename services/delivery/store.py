"""SQL of the delivery service: one function per statement over the `delivery` schema; `owner=None` means an admin (no owner filter)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.sql import id_array
from services.delivery import domain
from services.delivery.domain import DomainFigures, EventCounts, RecipientCounts, RecipientStatus, VariationFigures
from services.delivery.sending import QueuedRow, QueuePage, RunState

SCHEMA = "delivery"

metadata = sa.MetaData(schema=SCHEMA)

campaign_runs = sa.Table(
    "campaign_runs",
    metadata,
    sa.Column("campaign_id", sa.BigInteger, primary_key=True),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("total_recipients", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    # The send pipeline's bookkeeping (migration 0004; services/delivery/queue_store.py).
    sa.Column("state", sa.Text, nullable=False, server_default=RunState.SENDING.value),
    sa.Column("content", postgresql.JSONB(none_as_null=True)),
    sa.Column("occurrence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("occurrence_started_at", sa.DateTime(timezone=True)),
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("batches", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    # The split test of the last occurrence (migration 0006; services/delivery/split_tests.py).
    sa.Column("split_test", postgresql.JSONB(none_as_null=True)),
    sa.Column("test_started_at", sa.DateTime(timezone=True)),
    sa.Column("winner_email_id", sa.BigInteger),
    sa.Column("winner_decided_at", sa.DateTime(timezone=True)),
    # The main send's figures, kept when the occurrence finished (migration 0011).
    sa.Column("main_sent", sa.BigInteger),
    sa.Column("main_last_sent_at", sa.DateTime(timezone=True)),
)

recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("campaign_id", sa.BigInteger, primary_key=True),
    sa.Column("recipient_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False, server_default="1"),
    sa.Column("batch_id", sa.Integer),
    sa.Column("subscriber_id", sa.BigInteger, nullable=False),
    sa.Column("email_address", sa.Text, nullable=False),
    sa.Column("domain", sa.Text, nullable=False),
    sa.Column("first_name", sa.Text, nullable=False, server_default=""),
    sa.Column("last_name", sa.Text, nullable=False, server_default=""),
    sa.Column("email_id", sa.BigInteger),
    sa.Column("status", sa.Text, nullable=False, server_default=RecipientStatus.PENDING.value),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("claimed_by", sa.Text),
    sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("failed_at", sa.DateTime(timezone=True)),
    sa.Column("message_id", sa.Text),
    sa.Column("occurrence", sa.Integer, nullable=False, server_default="1"),
    sa.Column("list_id", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("custom_fields", postgresql.JSONB(none_as_null=True)),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("deferred_since", sa.DateTime(timezone=True)),
    sa.Column("subscription_time", sa.DateTime(timezone=True)),
    sa.Column("subscription_ip", sa.Text, nullable=False, server_default=""),
    sa.Column("opt_in_time", sa.DateTime(timezone=True)),
)

# What each campaign's queue rows add up to, kept by triggers on `recipients` (migrations 0005, 0009, 0022).
recipient_count_rows = sa.Table(
    "recipient_counts",
    metadata,
    sa.Column("campaign_id", sa.BigInteger, primary_key=True),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("sent", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("deferred", sa.BigInteger, nullable=False),
    sa.Column("held", sa.BigInteger, nullable=False),
    sa.Column("dropped", sa.BigInteger, nullable=False),
    # Pending, Held or Sending: total less Sent, Failed, Deferred and Dropped (a generated column).
    sa.Column("unsent", sa.BigInteger, sa.Computed("total - sent - failed - deferred - dropped"), nullable=False),
    sa.Column("first_sent_at", sa.DateTime(timezone=True)),
    sa.Column("last_sent_at", sa.DateTime(timezone=True)),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("campaign_id", sa.BigInteger, nullable=False),
    sa.Column("recipient_id", sa.BigInteger, nullable=False),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False, server_default=""),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("event_key", sa.Text),
)


def _scoped(table: sa.Table, campaign_ids: Sequence[int], owner: int | None) -> sa.ColumnElement[bool]:
    """The rows of the requested campaigns that the owner may see (all of them for an admin)."""
    in_request = table.c.campaign_id == sa.any_(id_array(campaign_ids))
    return in_request if owner is None else sa.and_(in_request, table.c.owner_user_id == owner)


def _count_where(condition: sa.ColumnElement[bool]) -> sa.FunctionFilter[Any]:
    return sa.func.count().filter(condition)


async def run_totals(conn: AsyncConnection, campaign_ids: Sequence[int], owner: int | None) -> dict[int, int]:
    """TotalRecipients fixed when each queued campaign was queued, by campaign id."""
    query = sa.select(campaign_runs.c.campaign_id, campaign_runs.c.total_recipients).where(
        _scoped(campaign_runs, campaign_ids, owner)
    )
    return {row.campaign_id: row.total_recipients for row in await conn.execute(query)}


async def split_test_standings(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner: int | None
) -> dict[int, domain.SplitTestStanding]:
    """The split test of each campaign whose last occurrence ran one: test group, rows still Held (from the
    counts the triggers keep), winner."""
    query = (
        sa.select(
            campaign_runs.c.campaign_id,
            campaign_runs.c.split_test,
            campaign_runs.c.winner_email_id,
            campaign_runs.c.winner_decided_at,
            sa.func.coalesce(recipient_count_rows.c.held, 0).label("held"),
        )
        .select_from(
            campaign_runs.outerjoin(
                recipient_count_rows, recipient_count_rows.c.campaign_id == campaign_runs.c.campaign_id
            )
        )
        .where(_scoped(campaign_runs, campaign_ids, owner), campaign_runs.c.split_test.is_not(None))
    )
    return {
        row.campaign_id: domain.SplitTestStanding(
            test_recipients=int(row.split_test.get("test_recipients") or 0),
            held_recipients=row.held,
            winner_email_id=row.winner_email_id or 0,
            decided_at=row.winner_decided_at,
        )
        for row in await conn.execute(query)
    }


async def recipient_counts(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner: int | None
) -> dict[int, RecipientCounts]:
    """Rows, Sent, Failed and Deferred rows, and the first and last send of each campaign that has queue rows.

    Read from the counts the triggers keep (one primary-key lookup per campaign), not by scanning the queue.
    """
    # A campaign whose rows were all deleted keeps a row of zeros: like one never queued, it is left out.
    # The main send's figures are those kept when the run finished; while it sends, the current ones.
    finished = campaign_runs.c.finished_at.is_not(None) & campaign_runs.c.main_sent.is_not(None)
    query = (
        sa.select(
            recipient_count_rows,
            sa.case((finished, campaign_runs.c.main_sent), else_=recipient_count_rows.c.sent).label("main_sent"),
            sa.case(
                (finished, campaign_runs.c.main_last_sent_at), else_=recipient_count_rows.c.last_sent_at
            ).label("main_last_sent_at"),
        )
        .select_from(
            recipient_count_rows.outerjoin(
                campaign_runs, campaign_runs.c.campaign_id == recipient_count_rows.c.campaign_id
            )
        )
        .where(_scoped(recipient_count_rows, campaign_ids, owner), recipient_count_rows.c.total > 0)
    )
    return {
        row.campaign_id: RecipientCounts(
            total=row.total,
            sent=row.sent,
            failed=row.failed,
            deferred=row.deferred,
            first_sent_at=row.first_sent_at,
            last_sent_at=row.last_sent_at,
            main_sent=row.main_sent,
            main_last_sent_at=row.main_last_sent_at,
        )
        for row in await conn.execute(query)
    }


async def queue_rows_by_status(conn: AsyncConnection) -> dict[str, int]:
    """Queue rows of every campaign by status, from the per-campaign counts (a row per campaign, not per
    recipient): Sent, Failed, Deferred, Dropped, and Unsent (Pending, Held or Sending, which the counts do not tell
    apart)."""
    c = recipient_count_rows.c
    labels = {"Sent": c.sent, "Failed": c.failed, "Deferred": c.deferred, "Dropped": c.dropped, "Unsent": c.unsent}
    sums = (
        await conn.execute(sa.select(*(sa.func.coalesce(sa.func.sum(column), 0) for column in labels.values())))
    ).one()
    return {label: int(total) for label, total in zip(labels, sums, strict=True)}


async def event_counts(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner: int | None
) -> dict[int, EventCounts]:
    """Opens and clicks of each campaign that has any: every hit, and distinct recipients."""
    is_open = events.c.kind == domain.OPEN
    is_click = events.c.kind == domain.CLICK
    query = (
        sa.select(
            events.c.campaign_id,
            _count_where(is_open).label("opens"),
            sa.func.count(sa.distinct(events.c.recipient_id)).filter(is_open).label("unique_opens"),
            _count_where(is_click).label("clicks"),
            sa.func.count(sa.distinct(events.c.recipient_id)).filter(is_click).label("unique_clicks"),
        )
        .where(_scoped(events, campaign_ids, owner))
        .group_by(events.c.campaign_id)
    )
    return {
        row.campaign_id: EventCounts(
            opens=row.opens, unique_opens=row.unique_opens, clicks=row.clicks, unique_clicks=row.unique_clicks
        )
        for row in await conn.execute(query)
    }


async def variation_figures(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner: int | None
) -> dict[int, list[VariationFigures]]:
    """Per A/B variation of each campaign: rows, Sent, Failed, Deferred, and who opened or clicked, by email id."""
    # Each recipient's events reduced to "opened?" and "clicked?" first, so the join adds one row at most.
    engaged = (
        sa.select(
            events.c.campaign_id,
            events.c.recipient_id,
            sa.func.bool_or(events.c.kind == domain.OPEN).label("opened"),
            sa.func.bool_or(events.c.kind == domain.CLICK).label("clicked"),
        )
        .where(_scoped(events, campaign_ids, owner))
        .group_by(events.c.campaign_id, events.c.recipient_id)
        .subquery("engaged")
    )
    query = (
        sa.select(
            recipients.c.campaign_id,
            recipients.c.email_id,
            sa.func.count().label("total"),
            _count_where(recipients.c.status == RecipientStatus.SENT).label("sent"),
            _count_where(recipients.c.status == RecipientStatus.FAILED).label("failed"),
            _count_where(recipients.c.status == RecipientStatus.DEFERRED).label("deferred"),
            _count_where(engaged.c.opened).label("unique_opens"),
            _count_where(engaged.c.clicked).label("unique_clicks"),
        )
        .select_from(
            recipients.outerjoin(
                engaged,
                sa.and_(
                    engaged.c.campaign_id == recipients.c.campaign_id,
                    engaged.c.recipient_id == recipients.c.recipient_id,
                ),
            )
        )
        .where(_scoped(recipients, campaign_ids, owner), recipients.c.email_id.is_not(None))
        .group_by(recipients.c.campaign_id, recipients.c.email_id)
        .order_by(recipients.c.campaign_id, recipients.c.email_id)
    )
    found: dict[int, list[VariationFigures]] = {}
    for row in await conn.execute(query):
        found.setdefault(row.campaign_id, []).append(
            VariationFigures(
                email_id=row.email_id,
                total_recipients=row.total,
                sent=row.sent,
                failed=row.failed,
                deferred=row.deferred,
                unique_opens=row.unique_opens,
                unique_clicks=row.unique_clicks,
            )
        )
    return found


async def domain_figures(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner: int | None, limit: int
) -> dict[int, list[DomainFigures]]:
    """The `limit` recipient domains with the most recipients of each campaign (ties by name), by status."""
    total = sa.func.count()
    per_domain = (
        sa.select(
            recipients.c.campaign_id,
            recipients.c.domain,
            total.label("total"),
            _count_where(recipients.c.status == RecipientStatus.SENT).label("sent"),
            _count_where(recipients.c.status == RecipientStatus.FAILED).label("failed"),
            _count_where(recipients.c.status == RecipientStatus.DEFERRED).label("deferred"),
            sa.func.row_number()
            .over(partition_by=recipients.c.campaign_id, order_by=(total.desc(), recipients.c.domain))
            .label("rank"),
        )
        .where(_scoped(recipients, campaign_ids, owner))
        .group_by(recipients.c.campaign_id, recipients.c.domain)
        .subquery("per_domain")
    )
    query = (
        sa.select(
            per_domain.c.campaign_id,
            per_domain.c.domain,
            per_domain.c.total,
            per_domain.c.sent,
            per_domain.c.failed,
            per_domain.c.deferred,
        )
        .where(per_domain.c.rank <= limit)
        .order_by(per_domain.c.campaign_id, per_domain.c.rank)
    )
    found: dict[int, list[DomainFigures]] = {}
    for row in await conn.execute(query):
        found.setdefault(row.campaign_id, []).append(
            DomainFigures(
                domain=row.domain,
                total_recipients=row.total,
                sent=row.sent,
                failed=row.failed,
                deferred=row.deferred,
            )
        )
    return found


# --- tracking events --------------------------------------------------------------------------------------


async def insert_tracking_events(
    conn: AsyncConnection, hits: Sequence[domain.TrackingHit], owner: int | None
) -> int:
    """Records the hits whose queue row exists (and is the owner's); returns how many were new."""
    return len(await inserted_tracking_event_ids(conn, hits, owner))


async def inserted_tracking_event_ids(
    conn: AsyncConnection, hits: Sequence[domain.TrackingHit], owner: int | None
) -> list[int]:
    """Records the hits whose queue row exists (and is the owner's); returns the ids of the new events.

    One statement: the hits are joined to their queue rows, which also supplies the owner, and a
    hit whose key was recorded before (or a second unsubscribe) is skipped by the unique indexes.
    """
    reported = (
        sa.func.unnest(
            sa.bindparam(None, [h.campaign_id for h in hits], type_=postgresql.ARRAY(sa.BigInteger)),
            sa.bindparam(None, [h.recipient_id for h in hits], type_=postgresql.ARRAY(sa.BigInteger)),
            sa.bindparam(None, [h.kind for h in hits], type_=postgresql.ARRAY(sa.Text)),
            sa.bindparam(None, [h.url for h in hits], type_=postgresql.ARRAY(sa.Text)),
            sa.bindparam(None, [h.occurred_at for h in hits], type_=postgresql.ARRAY(sa.DateTime(timezone=True))),
            # NULL keys (no deduplication) are never equal to each other, so they never conflict.
            sa.bindparam(None, [h.event_key or None for h in hits], type_=postgresql.ARRAY(sa.Text)),
        )
        .table_valued("campaign_id", "recipient_id", "kind", "url", "occurred_at", "event_key")
        .render_derived(name="reported")
    )
    matched = sa.and_(
        recipients.c.campaign_id == reported.c.campaign_id, recipients.c.recipient_id == reported.c.recipient_id
    )
    if owner is not None:
        matched = sa.and_(matched, recipients.c.owner_user_id == owner)
    select = sa.select(
        reported.c.campaign_id,
        reported.c.recipient_id,
        recipients.c.owner_user_id,
        reported.c.kind,
        reported.c.url,
        reported.c.occurred_at,
        reported.c.event_key,
    ).select_from(reported.join(recipients, matched))
    statement = (
        postgresql.insert(events)
        .from_select(
            ["campaign_id", "recipient_id", "owner_user_id", "kind", "url", "occurred_at", "event_key"], select
        )
        .on_conflict_do_nothing()
        .returning(events.c.event_id)
    )
    return [int(row.event_id) for row in await conn.execute(statement)]


# Each subscriber's latest Sent row of the campaign, from the list named, and of the email named (its A/B
# variation, or the run's default email for a row without one); the rows are found through the unique
# (campaign, occurrence, address) index, one occurrence at a time. A subscriber already counted in the
# campaign's unsubscriptions (an unsubscribe event, or a complaint, in any occurrence) gets no event more.
_INSERT_UNSUBSCRIPTIONS = sa.text(
    """
    WITH reported AS (
        SELECT * FROM unnest(CAST(:subscriber_ids AS bigint[]), CAST(:addresses AS text[]))
            AS reported(subscriber_id, address)
    ), sent AS (
        SELECT DISTINCT ON (r.subscriber_id) r.campaign_id, r.recipient_id, r.owner_user_id, r.subscriber_id
        FROM delivery.campaign_runs AS run
        CROSS JOIN generate_series(1, run.occurrence) AS o(occurrence)
        JOIN delivery.recipients AS r ON r.campaign_id = run.campaign_id AND r.occurrence = o.occurrence
        JOIN reported ON lower(r.email_address) = reported.address AND r.subscriber_id = reported.subscriber_id
        WHERE run.campaign_id = :campaign_id
          AND r.list_id = :list_id
          AND r.status = 'Sent'
          AND (CAST(:owner AS bigint) IS NULL OR r.owner_user_id = CAST(:owner AS bigint))
          AND (:email_id = 0
               OR coalesce(r.email_id, CAST(run.content ->> 'default_email_id' AS bigint)) = :email_id)
        ORDER BY r.subscriber_id, r.occurrence DESC
    )
    INSERT INTO delivery.events (campaign_id, recipient_id, owner_user_id, kind, occurred_at)
    SELECT sent.campaign_id, sent.recipient_id, sent.owner_user_id, 'unsubscribe', :occurred_at
    FROM sent
    WHERE NOT EXISTS (
        SELECT 1
        FROM (
            SELECT recipient_id FROM delivery.events WHERE campaign_id = :campaign_id AND kind = 'unsubscribe'
            UNION ALL
            SELECT recipient_id FROM delivery.bounces WHERE campaign_id = :campaign_id AND kind = 'complaint'
        ) AS gone
        JOIN delivery.recipients AS before ON before.campaign_id = :campaign_id
                                          AND before.recipient_id = gone.recipient_id
        WHERE before.subscriber_id = sent.subscriber_id
    )
    ON CONFLICT DO NOTHING
    RETURNING event_id
    """
)


async def inserted_unsubscription_count(
    conn: AsyncConnection, unsubscriptions: domain.Unsubscriptions, owner: int | None
) -> int:
    """Counts unsubscriptions made through the API in the campaign's statistics, as the link's are counted
    (an `unsubscribe` event), for the subscribers the campaign was sent to; returns how many were new."""
    return len(await inserted_unsubscription_ids(conn, unsubscriptions, owner))


async def inserted_unsubscription_ids(
    conn: AsyncConnection, unsubscriptions: domain.Unsubscriptions, owner: int | None
) -> list[int]:
    """As `inserted_unsubscription_count`; returns the ids of the new events."""
    if not unsubscriptions.subscribers:
        return []
    rows = await conn.execute(
        _INSERT_UNSUBSCRIPTIONS,
        {
            "subscriber_ids": [subscriber_id for subscriber_id, _ in unsubscriptions.subscribers],
            "addresses": [address.lower() for _, address in unsubscriptions.subscribers],
            "campaign_id": unsubscriptions.campaign_id,
            "list_id": unsubscriptions.list_id,
            "owner": owner,
            "email_id": unsubscriptions.email_id,
            "occurred_at": unsubscriptions.occurred_at,
        },
    )
    return [int(row.event_id) for row in rows]


async def run_owner(conn: AsyncConnection, campaign_id: int) -> int | None:
    """Whose campaign the run is; None when the campaign was never queued."""
    owner = (
        await conn.execute(
            sa.text("SELECT owner_user_id FROM delivery.campaign_runs WHERE campaign_id = :c"), {"c": campaign_id}
        )
    ).scalar_one_or_none()
    return None if owner is None else int(owner)


@dataclass(frozen=True)
class RecipientActivity:
    """An open, click or unsubscription recorded, with whom it is about: what its DeliveryEvent says."""

    kind: str
    url: str
    occurred_at: datetime
    owner_user_id: int
    campaign_id: int
    recipient_id: int
    subscriber_id: int
    email_address: str


async def recipient_activities(conn: AsyncConnection, event_ids: Sequence[int]) -> list[RecipientActivity]:
    """The events of `event_ids` with their recipients, in the order they were recorded."""
    if not event_ids:
        return []
    rows = await conn.execute(
        sa.text(
            """
            SELECT e.kind, coalesce(e.url, ''), e.occurred_at, r.owner_user_id, r.campaign_id, r.recipient_id,
                   r.subscriber_id, r.email_address
            FROM delivery.events AS e
            JOIN delivery.recipients AS r ON r.campaign_id = e.campaign_id AND r.recipient_id = e.recipient_id
            WHERE e.event_id = ANY(CAST(:ids AS bigint[]))
            ORDER BY e.event_id
            """
        ),
        {"ids": list(event_ids)},
    )
    return [RecipientActivity(*row) for row in rows]


# --- mail capture -----------------------------------------------------------------------------------------

captured_messages = sa.Table(
    "captured_messages",
    metadata,
    sa.Column("captured_message_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("session_id", postgresql.UUID(as_uuid=False), nullable=False),
    sa.Column("peer", sa.Text, nullable=False, server_default=""),
    sa.Column("helo_name", sa.Text, nullable=False, server_default=""),
    sa.Column("envelope_from", sa.Text, nullable=False),
    sa.Column("envelope_to", postgresql.ARRAY(sa.Text), nullable=False),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("message_id", sa.Text, nullable=False, server_default=""),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

_CAPTURED_SUMMARY = (
    captured_messages.c.captured_message_id,
    captured_messages.c.session_id,
    captured_messages.c.envelope_from,
    captured_messages.c.envelope_to,
    captured_messages.c.subject,
    captured_messages.c.message_id,
    captured_messages.c.received_at,
    sa.func.octet_length(captured_messages.c.raw).label("size_bytes"),
)


async def insert_captured_messages(conn: AsyncConnection, messages: Sequence[domain.CapturedMessage]) -> None:
    """Stores received messages, all in one multi-row INSERT."""
    await conn.execute(
        sa.insert(captured_messages).values(
            [
                {
                    "session_id": message.session_id,
                    "peer": message.peer,
                    "helo_name": message.helo_name,
                    "envelope_from": message.envelope_from,
                    "envelope_to": message.envelope_to,
                    "subject": message.subject,
                    "message_id": message.message_id,
                    "raw": message.raw,
                    "received_at": message.received_at,
                }
                for message in messages
            ]
        )
    )


def _captured_summary(row: sa.Row[*tuple[Any, ...]], raw: bytes = b"") -> domain.CapturedSummary:
    return domain.CapturedSummary(
        captured_message_id=row.captured_message_id,
        session_id=str(row.session_id),
        envelope_from=row.envelope_from,
        envelope_to=list(row.envelope_to),
        subject=row.subject,
        message_id=row.message_id,
        received_at=row.received_at,
        size_bytes=row.size_bytes,
        raw=raw,
    )


async def captured_message_summaries(
    conn: AsyncConnection, page: domain.CapturedPage
) -> list[domain.CapturedSummary]:
    """Captured messages without their content, newest first: one more than the page when more exist."""
    query = (
        sa.select(*_CAPTURED_SUMMARY)
        .order_by(captured_messages.c.captured_message_id.desc())
        .limit(page.limit + 1)
    )
    if page.before_id is not None:
        query = query.where(captured_messages.c.captured_message_id < page.before_id)
    return [_captured_summary(row) for row in await conn.execute(query)]


async def captured_message_count(conn: AsyncConnection) -> int:
    """How many messages the capture holds."""
    return int((await conn.execute(sa.select(sa.func.count()).select_from(captured_messages))).scalar_one())


async def captured_message(conn: AsyncConnection, captured_message_id: int) -> domain.CapturedSummary | None:
    """One captured message with its raw content, or None."""
    query = sa.select(*_CAPTURED_SUMMARY, captured_messages.c.raw).where(
        captured_messages.c.captured_message_id == captured_message_id
    )
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _captured_summary(row, bytes(row.raw))


# --- the queue as operators see it ----------------------------------------------------------------------------------


def _queue_filter(page: QueuePage, owner: int | None) -> list[sa.ColumnElement[bool]]:
    conditions = [recipients.c.campaign_id == page.campaign_id]
    if owner is not None:
        conditions.append(recipients.c.owner_user_id == owner)
    if page.status is not None:
        conditions.append(recipients.c.status == page.status)
    return conditions


async def queued_rows(conn: AsyncConnection, page: QueuePage, owner: int | None) -> list[QueuedRow]:
    """One page of a campaign's queue rows in recipient id order (only the owner's, unless admin)."""
    c = recipients.c
    query = (
        sa.select(
            c.recipient_id,
            c.email_address,
            c.status,
            c.attempts,
            c.generation,
            sa.func.coalesce(c.batch_id, 0).label("batch_id"),
            c.last_error,
            c.sent_at,
            sa.func.coalesce(c.email_id, 0).label("email_id"),
            # A row that left Deferred may keep its last due time: it is shown on Deferred rows only.
            sa.case((c.status == RecipientStatus.DEFERRED, c.next_attempt_at)).label("next_attempt_at"),
        )
        .where(*_queue_filter(page, owner), c.recipient_id > page.after_recipient_id)
        .order_by(c.recipient_id)
        .limit(page.limit)
    )
    return [
        QueuedRow(
            recipient_id=row.recipient_id,
            email_address=row.email_address,
            status=RecipientStatus(row.status),
            attempts=row.attempts,
            generation=row.generation,
            batch_id=row.batch_id,
            last_error=row.last_error,
            sent_at=row.sent_at,
            email_id=row.email_id,
            next_attempt_at=row.next_attempt_at,
        )
        for row in await conn.execute(query)
    ]


async def queued_row_count(conn: AsyncConnection, page: QueuePage, owner: int | None) -> int:
    query = sa.select(sa.func.count()).select_from(recipients).where(*_queue_filter(page, owner))
    return int((await conn.execute(query)).scalar_one())
