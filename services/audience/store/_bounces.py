"""SQL of what bounces, complaints and deliveries do to subscribers: one idempotent UPDATE per effect.

Each statement changes only rows it would change (a repeated event finds nothing left to do), and
each is a single statement, so two replicas handling reports about one address never interleave
inside an effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience.domain import COMPLAINT_CHANNEL, BounceTarget
from services.audience.store._tables import subscribers
from services.common.sql import id_array, text_array


def _targeted(target: BounceTarget) -> sa.ColumnElement[bool]:
    conditions = [subscribers.c.owner_user_id == target.owner_user_id, subscribers.c.email_key == target.email_key]
    if target.list_id:
        conditions.append(subscribers.c.list_id == target.list_id)
    return sa.and_(*conditions)


def _has_soft_run() -> sa.ColumnElement[bool]:
    return sa.func.cardinality(subscribers.c.soft_bounce_campaign_ids) > 0


async def hard_bounced_count(conn: AsyncConnection, target: BounceTarget) -> int:
    """Makes the targeted subscribers Hard (ending any run of soft bounces); returns how many changed."""
    statement = (
        sa.update(subscribers)
        .where(_targeted(target), sa.or_(subscribers.c.bounce_type != "Hard", _has_soft_run()))
        .values(bounce_type="Hard", soft_bounce_campaign_ids=id_array([]), updated_at=sa.func.now())
    )
    return (await conn.execute(statement)).rowcount


async def soft_bounced_types(
    conn: AsyncConnection, target: BounceTarget, campaign_id: int, limit: int
) -> list[str]:
    """Records a soft bounce of `campaign_id` on the targeted subscribers that are not Hard; returns the bounce
    type of each changed one ('Soft', or 'Hard' when its run reached `limit` campaigns).

    A campaign counts once however often its mail to the subscriber soft-bounces (repeated reports,
    retries); a Hard subscriber stays Hard (a soft bounce never downgrades it).
    """
    run = subscribers.c.soft_bounce_campaign_ids
    counted = sa.literal(campaign_id, sa.BigInteger) == sa.any_(run)
    extended: Any = sa.case(
        (counted, run), else_=sa.func.array_append(run, sa.literal(campaign_id, sa.BigInteger))
    )
    reaches_limit = sa.func.cardinality(extended) >= limit
    statement = (
        sa.update(subscribers)
        .where(
            _targeted(target),
            subscribers.c.bounce_type != "Hard",
            ~sa.and_(subscribers.c.bounce_type == "Soft", counted),
        )
        .values(
            bounce_type=sa.case((reaches_limit, "Hard"), else_="Soft"),
            soft_bounce_campaign_ids=sa.case((reaches_limit, id_array([])), else_=extended),
            updated_at=sa.func.now(),
        )
        .returning(subscribers.c.bounce_type)
    )
    return list((await conn.execute(statement)).scalars())


async def complained_count(conn: AsyncConnection, target: BounceTarget) -> int:
    """Unsubscribes the targeted subscribers that are not unsubscribed yet, channel 'complaint'; returns how many."""
    statement = (
        sa.update(subscribers)
        .where(_targeted(target), subscribers.c.status != "Unsubscribed")
        .values(
            status="Unsubscribed",
            unsubscription_date=sa.func.now(),
            unsubscription_ip="",
            unsubscription_channel=COMPLAINT_CHANNEL,
            updated_at=sa.func.now(),
        )
    )
    return (await conn.execute(statement)).rowcount


async def delivered_count(conn: AsyncConnection, target: BounceTarget) -> int:
    """Clears the bounce state of the targeted subscribers (Not Bounced, no soft run); returns how many changed."""
    statement = (
        sa.update(subscribers)
        .where(_targeted(target), sa.or_(subscribers.c.bounce_type != "Not Bounced", _has_soft_run()))
        .values(bounce_type="Not Bounced", soft_bounce_campaign_ids=id_array([]), updated_at=sa.func.now())
    )
    return (await conn.execute(statement)).rowcount


async def hard_bounced_counts(conn: AsyncConnection, targets: Sequence[BounceTarget]) -> list[int]:
    """`hard_bounced_count` for several targets in one statement; how many subscribers each target changed.

    The same as applying them one after the other (a hard bounce leaves nothing for a later one to change):
    a subscriber that several targets name is counted for one of them (the first, when they are the same).
    """
    if not targets:
        return []
    given = (
        sa.func.unnest(
            id_array([t.owner_user_id for t in targets]),
            text_array([t.email_key for t in targets]),
            id_array([t.list_id for t in targets]),
        )
        .table_valued("owner_user_id", "email_key", "list_id", with_ordinality="n")
        .render_derived()
    )
    first = (
        sa.select(given.c.owner_user_id, given.c.email_key, given.c.list_id, sa.func.min(given.c.n).label("n"))
        .group_by(given.c.owner_user_id, given.c.email_key, given.c.list_id)
        .subquery("targets")
    )
    statement = (
        sa.update(subscribers)
        .where(
            subscribers.c.owner_user_id == first.c.owner_user_id,
            subscribers.c.email_key == first.c.email_key,
            sa.or_(first.c.list_id == 0, subscribers.c.list_id == first.c.list_id),
            sa.or_(subscribers.c.bounce_type != "Hard", _has_soft_run()),
        )
        .values(bounce_type="Hard", soft_bounce_campaign_ids=id_array([]), updated_at=sa.func.now())
        .returning(first.c.n)
    )
    counts = [0] * len(targets)
    for n in (await conn.execute(statement)).scalars():
        counts[n - 1] += 1
    return counts
