"""SQL of an owner's suppression list: entries with their reason (manual, bounce, complaint)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience.domain import SUPPRESSION_BOUNCE, SUPPRESSION_MANUAL
from services.audience.store._tables import suppressions
from services.common.sql import id_array, text_array


async def added_suppression_count(
    conn: AsyncConnection,
    owner: int,
    keys: Sequence[str],
    *,
    reason: str = SUPPRESSION_MANUAL,
    campaign_id: int = 0,
) -> int:
    """Adds the address keys to the owner's suppression list for `reason`; returns how many were new.

    An address suppressed only by a bounce takes the new reason when that is not a bounce too, so that a
    later delivery does not remove what the user or a complaint put there; other entries keep theirs.
    """
    if not keys:
        return 0
    if reason != SUPPRESSION_BOUNCE:
        await conn.execute(
            sa.update(suppressions)
            .where(
                suppressions.c.owner_user_id == owner,
                suppressions.c.email_key == sa.any_(text_array(keys)),
                suppressions.c.reason == SUPPRESSION_BOUNCE,
            )
            .values(reason=reason, campaign_id=campaign_id, created_at=sa.func.now())
        )
    rows = sa.select(
        sa.literal(owner, sa.BigInteger),
        sa.func.unnest(text_array(keys)),
        sa.literal(reason, sa.Text),
        sa.literal(campaign_id, sa.BigInteger),
    )
    statement = (
        postgresql.insert(suppressions)
        .from_select(["owner_user_id", "email_key", "reason", "campaign_id"], rows)
        .on_conflict_do_nothing(index_elements=[suppressions.c.owner_user_id, suppressions.c.email_key])
        # SQLAlchemy keeps an INSERT's rowcount only when asked (it would read -1).
        .execution_options(preserve_rowcount=True)
    )
    return (await conn.execute(statement)).rowcount


async def removed_bounce_suppression_count(conn: AsyncConnection, owner: int, key: str) -> int:
    """Removes the owner's entry for the address if a bounce made it (never a manual or complaint one)."""
    statement = sa.delete(suppressions).where(
        suppressions.c.owner_user_id == owner,
        suppressions.c.email_key == key,
        suppressions.c.reason == SUPPRESSION_BOUNCE,
    )
    return (await conn.execute(statement)).rowcount


async def added_bounce_suppression_counts(
    conn: AsyncConnection, entries: Sequence[tuple[int, str, int]]
) -> list[int]:
    """`added_suppression_count(..., reason=bounce)` for several (owner, address key, campaign id) in one
    statement, as if one after the other: an address given twice is suppressed by the first. Returns
    whether each entry added its address (1) or found it there (0)."""
    if not entries:
        return []
    given = (
        sa.func.unnest(
            id_array([owner for owner, _, _ in entries]),
            text_array([key for _, key, _ in entries]),
            id_array([campaign_id for _, _, campaign_id in entries]),
        )
        .table_valued("owner_user_id", "email_key", "campaign_id", with_ordinality="n")
        .render_derived()
    )
    rows = (
        sa.select(
            given.c.owner_user_id, given.c.email_key, sa.literal(SUPPRESSION_BOUNCE, sa.Text), given.c.campaign_id
        )
        .ext(postgresql.distinct_on(given.c.owner_user_id, given.c.email_key))
        .order_by(given.c.owner_user_id, given.c.email_key, given.c.n)
    )
    statement = (
        postgresql.insert(suppressions)
        .from_select(["owner_user_id", "email_key", "reason", "campaign_id"], rows)
        .on_conflict_do_nothing(index_elements=[suppressions.c.owner_user_id, suppressions.c.email_key])
        .returning(suppressions.c.owner_user_id, suppressions.c.email_key)
    )
    added = {(row.owner_user_id, row.email_key) for row in await conn.execute(statement)}
    counts = []
    for owner, key, _ in entries:
        counts.append(1 if (owner, key) in added else 0)
        added.discard((owner, key))
    return counts
