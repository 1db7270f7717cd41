"""SQL of segments: create, read a list's segments, count members, delete."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience import rules
from services.audience.domain import NewSegment, SegmentRecord
from services.audience.store._tables import owned_by, segments, subscribers, suppressions
from services.common.sql import id_array

_SEGMENT_COLUMNS = tuple(segments.c)


def _segment(row: Any, count: int = 0) -> SegmentRecord:
    return SegmentRecord(
        segment_id=row.segment_id,
        list_id=row.list_id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        operator=row.operator,
        rules=list(row.rules),
        randomness=row.randomness,
        randomness_audience_size=row.randomness_audience_size,
        created_at=row.created_at,
        subscriber_count=count,
    )


async def inserted_segment(conn: AsyncConnection, owner: int, new: NewSegment) -> SegmentRecord:
    statement = (
        sa.insert(segments)
        .values(
            list_id=new.list_id,
            owner_user_id=owner,
            name=new.name,
            operator=new.operator,
            rules=new.rules,
            randomness=new.randomness,
            randomness_audience_size=new.randomness_audience_size,
        )
        .returning(*_SEGMENT_COLUMNS)
    )
    return _segment((await conn.execute(statement)).one())


async def segments_of_lists(conn: AsyncConnection, list_ids: Sequence[int]) -> list[SegmentRecord]:
    """Every segment of the lists (the caller checked the lists are theirs), by id."""
    query = (
        sa.select(*_SEGMENT_COLUMNS)
        .where(segments.c.list_id == sa.any_(id_array(list_ids)))
        .order_by(segments.c.segment_id)
    )
    return [_segment(row) for row in await conn.execute(query)]


async def member_count(
    conn: AsyncConnection, segment: rules.SegmentDefinition, definitions: Mapping[int, rules.SegmentDefinition]
) -> int:
    """How many subscribers of the segment's list (any status) are in it."""
    compiler = rules.Compiler(subscribers, suppressions, definitions)
    query = (
        sa.select(sa.func.count())
        .select_from(subscribers)
        .where(subscribers.c.list_id == segment.list_id, compiler.membership(segment, subscribers))
    )
    return int((await conn.execute(query)).scalar_one())


async def deleted_segment_count(conn: AsyncConnection, segment_ids: Sequence[int], owner: int | None) -> int:
    statement = sa.delete(segments).where(
        segments.c.segment_id == sa.any_(id_array(segment_ids)), owned_by(segments.c.owner_user_id, owner)
    )
    return (await conn.execute(statement)).rowcount
