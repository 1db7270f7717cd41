"""SQL of an owner's suppression list."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience.store._tables import suppressions
from services.common.sql import text_array


async def added_suppression_count(conn: AsyncConnection, owner: int, keys: Sequence[str]) -> int:
    """Adds the address keys to the owner's suppression list; returns how many were new."""
    if not keys:
        return 0
    rows = sa.select(sa.literal(owner, sa.BigInteger), sa.func.unnest(text_array(keys)))
    statement = (
        postgresql.insert(suppressions)
        .from_select(["owner_user_id", "email_key"], rows)
        .on_conflict_do_nothing(index_elements=[suppressions.c.owner_user_id, suppressions.c.email_key])
        # SQLAlchemy keeps an INSERT's rowcount only when asked (it would read -1).
        .execution_options(preserve_rowcount=True)
    )
    return (await conn.execute(statement)).rowcount
