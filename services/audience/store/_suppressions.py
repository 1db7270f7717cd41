"""SQL of an owner's suppression list: entries with their reason (manual, bounce, complaint)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience.domain import SUPPRESSION_BOUNCE, SUPPRESSION_MANUAL
from services.audience.store._tables import suppressions
from services.common.sql import text_array


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
