"""SQL of bounces and complaints: recording them (deduplicated by event key), counting them per campaign, a recipient's log.

Recording is one statement: the reports are joined to their queue rows (which name the owner, list,
subscriber and address the announcement needs), inserted unless their event key was recorded before,
and a hard or soft bounce marks its row `bounced_before` unless the row is Sent, so that a later
delivery of the row (after admin.campaign.retryfailed re-queued it) is announced. The classifier has judged every report before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.bounces import BounceKind, BounceSource
from services.common.sql import id_array
from services.delivery.domain import BounceCounts, ClassifiedBounce, RecipientStatus, RecordedBounce
from services.delivery.store import events, metadata

bounces = sa.Table(
    "bounces",
    metadata,
    sa.Column("bounce_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("campaign_id", sa.BigInteger, nullable=False),
    sa.Column("recipient_id", sa.BigInteger, nullable=False),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("status_code", sa.Text, nullable=False, server_default=""),
    sa.Column("reply_code", sa.Integer, nullable=False, server_default="0"),
    sa.Column("diagnostic", sa.Text, nullable=False, server_default=""),
    sa.Column("event_key", sa.Text, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


def _scoped(table: sa.Table, campaign_ids: Sequence[int], owner: int | None) -> sa.ColumnElement[bool]:
    """The rows of the campaigns that the owner may see (all of them for an admin)."""
    in_request = table.c.campaign_id == sa.any_(id_array(campaign_ids))
    return in_request if owner is None else sa.and_(in_request, table.c.owner_user_id == owner)


@dataclass(frozen=True)
class QueuedAddress:
    """Whom a queue row stands for: what an announcement about the recipient carries."""

    campaign_id: int
    recipient_id: int
    owner_user_id: int
    list_id: int
    subscriber_id: int
    email_address: str


@dataclass(frozen=True)
class Recording:
    """What became of one report naming a queue row: `bounce_id` is None when its event key was recorded before."""

    bounce: ClassifiedBounce
    recipient: QueuedAddress
    bounce_id: int | None


_BOUNCE_KINDS_THAT_FLAG = f"('{BounceKind.HARD}', '{BounceKind.SOFT}')"

_RECORD = f"""
    WITH reported AS (
        SELECT * FROM unnest(
            CAST(:campaign_ids AS bigint[]), CAST(:recipient_ids AS bigint[]), CAST(:kinds AS text[]),
            CAST(:sources AS text[]), CAST(:status_codes AS text[]), CAST(:reply_codes AS integer[]),
            CAST(:diagnostics AS text[]), CAST(:event_keys AS text[]), CAST(:occurred_ats AS timestamptz[]))
            AS r(campaign_id, recipient_id, kind, source, status_code, reply_code, diagnostic, event_key,
                 occurred_at)
    ),
    known AS (
        SELECT r.*, q.owner_user_id, q.list_id, q.subscriber_id, q.email_address
        FROM reported AS r
        JOIN delivery.recipients AS q ON q.campaign_id = r.campaign_id AND q.recipient_id = r.recipient_id
        WHERE CAST(:owner AS bigint) IS NULL OR q.owner_user_id = CAST(:owner AS bigint)
    ),
    inserted AS (
        INSERT INTO delivery.bounces (campaign_id, recipient_id, owner_user_id, kind, source, status_code,
                                      reply_code, diagnostic, event_key, occurred_at)
        SELECT campaign_id, recipient_id, owner_user_id, kind, source, status_code, reply_code, diagnostic,
               event_key, occurred_at
        FROM known
        ON CONFLICT (event_key) DO NOTHING
        RETURNING bounce_id, campaign_id, recipient_id, kind, event_key
    ),
    flagged AS (
        UPDATE delivery.recipients AS q SET bounced_before = true
        FROM (SELECT DISTINCT campaign_id, recipient_id FROM inserted
              WHERE kind IN {_BOUNCE_KINDS_THAT_FLAG}) AS i
        WHERE q.campaign_id = i.campaign_id AND q.recipient_id = i.recipient_id AND NOT q.bounced_before
          -- A Sent row is never sent again; leaving it alone also keeps the counts' triggers from
          -- recounting the campaign's send times (migration 0005).
          AND q.status <> '{RecipientStatus.SENT}'
    )
    SELECT i.bounce_id, k.event_key, k.owner_user_id, k.list_id, k.subscriber_id, k.email_address
    FROM known AS k LEFT JOIN inserted AS i ON i.event_key = k.event_key
"""


async def recorded_bounces(
    conn: AsyncConnection, reports: Sequence[ClassifiedBounce], owner: int | None
) -> list[Recording]:
    """Records the reports whose queue row exists (and is the owner's, unless None) in one statement.

    Returns one Recording per report that names such a row, new or not; the event keys of `reports`
    must be distinct. A report naming no row is left out (the caller counts it as unknown).
    """
    if not reports:
        return []
    rows = await conn.execute(
        sa.text(_RECORD),
        {
            "campaign_ids": [r.campaign_id for r in reports],
            "recipient_ids": [r.recipient_id for r in reports],
            "kinds": [str(r.kind) for r in reports],
            "sources": [str(r.source) for r in reports],
            "status_codes": [r.status_code for r in reports],
            "reply_codes": [r.reply_code for r in reports],
            "diagnostics": [r.diagnostic for r in reports],
            "event_keys": [r.event_key for r in reports],
            "occurred_ats": [r.occurred_at for r in reports],
            "owner": owner,
        },
    )
    by_key = {report.event_key: report for report in reports}
    recordings = []
    for row in rows:
        report = by_key[row.event_key]
        address = QueuedAddress(
            report.campaign_id,
            report.recipient_id,
            row.owner_user_id,
            row.list_id,
            row.subscriber_id,
            row.email_address,
        )
        recordings.append(Recording(report, address, row.bounce_id))
    return recordings


async def delivered_after_bounce(
    conn: AsyncConnection, campaign_id: int, recipient_ids: Sequence[int]
) -> list[QueuedAddress]:
    """Of the given rows, those that are Sent and whose address had bounced before: a delivery to announce."""
    if not recipient_ids:
        return []
    rows = await conn.execute(
        sa.text(
            f"""
            SELECT recipient_id, owner_user_id, list_id, subscriber_id, email_address
            FROM delivery.recipients
            WHERE campaign_id = :c AND recipient_id = ANY(CAST(:ids AS bigint[]))
              AND status = '{RecipientStatus.SENT}' AND bounced_before
            ORDER BY recipient_id
            """
        ),
        {"c": campaign_id, "ids": list(recipient_ids)},
    )
    return [
        QueuedAddress(
            campaign_id, row.recipient_id, row.owner_user_id, row.list_id, row.subscriber_id, row.email_address
        )
        for row in rows
    ]


async def bounce_counts(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner: int | None
) -> dict[int, BounceCounts]:
    """Distinct recipients per kind of each campaign that has any, and those who unsubscribed (link or complaint)."""

    def recipients_of(kind: BounceKind) -> sa.ColumnElement[int]:
        return sa.func.count(sa.distinct(bounces.c.recipient_id)).filter(bounces.c.kind == kind)

    by_kind = (
        sa.select(
            bounces.c.campaign_id,
            recipients_of(BounceKind.HARD).label("hard"),
            recipients_of(BounceKind.SOFT).label("soft"),
            recipients_of(BounceKind.POLICY).label("policy"),
            recipients_of(BounceKind.COMPLAINT).label("complaints"),
        )
        .where(_scoped(bounces, campaign_ids, owner))
        .group_by(bounces.c.campaign_id)
    )
    found = {
        row.campaign_id: BounceCounts(hard=row.hard, soft=row.soft, policy=row.policy, complaints=row.complaints)
        for row in await conn.execute(by_kind)
    }
    # A recipient who followed the unsubscribe link and also complained is one unsubscription.
    leavers = sa.union(
        sa.select(events.c.campaign_id, events.c.recipient_id).where(
            _scoped(events, campaign_ids, owner), events.c.kind == "unsubscribe"
        ),
        sa.select(bounces.c.campaign_id, bounces.c.recipient_id).where(
            _scoped(bounces, campaign_ids, owner), bounces.c.kind == BounceKind.COMPLAINT
        ),
    ).subquery("leavers")
    unsubscribed = sa.select(leavers.c.campaign_id, sa.func.count().label("n")).group_by(leavers.c.campaign_id)
    for row in await conn.execute(unsubscribed):
        counts = found.get(row.campaign_id, BounceCounts())
        found[row.campaign_id] = BounceCounts(
            counts.hard, counts.soft, counts.policy, counts.complaints, unsubscriptions=row.n
        )
    return found


async def bounce_logs(
    conn: AsyncConnection, campaign_id: int, recipient_ids: Sequence[int], owner: int | None
) -> dict[int, list[RecordedBounce]]:
    """The bounces and complaints of the given recipients of a campaign, each recipient's oldest first."""
    if not recipient_ids:
        return {}
    query = (
        sa.select(
            bounces.c.recipient_id,
            bounces.c.kind,
            bounces.c.source,
            bounces.c.status_code,
            bounces.c.reply_code,
            bounces.c.diagnostic,
            bounces.c.occurred_at,
        )
        .where(
            bounces.c.campaign_id == campaign_id,
            bounces.c.recipient_id == sa.any_(id_array(recipient_ids)),
        )
        .order_by(bounces.c.recipient_id, bounces.c.occurred_at, bounces.c.bounce_id)
    )
    if owner is not None:
        query = query.where(bounces.c.owner_user_id == owner)
    logs: dict[int, list[RecordedBounce]] = {}
    for row in await conn.execute(query):
        logs.setdefault(row.recipient_id, []).append(
            RecordedBounce(
                kind=BounceKind(row.kind),
                source=BounceSource(row.source),
                status_code=row.status_code,
                reply_code=row.reply_code,
                diagnostic=row.diagnostic,
                occurred_at=row.occurred_at,
            )
        )
    return logs
