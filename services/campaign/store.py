"""SQL for the campaign schema: one function per query, each limited to the owner it is given (None: every owner)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    ForeignKey,
    MetaData,
    Row,
    Table,
    Text,
    any_,
    asc,
    delete,
    desc,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from services.campaign import domain
from services.campaign.domain import Campaign, CampaignFilter, CampaignStatus, ListQuery, OrderField, ScheduleType

SCHEMA = "campaign"
metadata = MetaData(schema=SCHEMA)

campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", BigInteger, primary_key=True),
    Column("owner_user_id", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("status_reason", Text, nullable=False),
    Column("email_id", BigInteger),
    Column("schedule_type", Text, nullable=False),
    Column("original_campaign_id", BigInteger, ForeignKey("campaigns.campaign_id", ondelete="CASCADE")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("send_started_at", DateTime(timezone=True)),
)

# What a copy takes from its source: content, targeting and schedule settings. Status, statistics and
# send times are never copied; every later content or targeting column belongs in this list.
COPIED_COLUMNS: tuple[str, ...] = ("email_id", "schedule_type")

_c = campaigns.c


def _campaign(row: Row[Any]) -> Campaign:
    return Campaign(
        campaign_id=row.campaign_id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        status=CampaignStatus(row.status),
        status_reason=row.status_reason,
        email_id=row.email_id,
        schedule_type=ScheduleType(row.schedule_type),
        original_campaign_id=row.original_campaign_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        send_started_at=row.send_started_at,
    )


def _id_array(ids: Sequence[int]) -> Any:
    # One array parameter instead of one parameter per id keeps long id lists cheap to send and plan.
    return any_(literal(list(ids), ARRAY(BigInteger)))


def _owned_by(owner_user_id: int | None) -> list[ColumnElement[bool]]:
    return [] if owner_user_id is None else [_c.owner_user_id == owner_user_id]


async def insert_campaign(conn: AsyncConnection, *, owner_user_id: int, name: str) -> Campaign:
    """The new Draft, not yet scheduled campaign."""
    stmt = (
        insert(campaigns)
        .values(
            owner_user_id=owner_user_id,
            name=name,
            status=CampaignStatus.DRAFT.value,
            schedule_type=ScheduleType.NOT_SCHEDULED.value,
        )
        .returning(*campaigns.c)
    )
    return _campaign((await conn.execute(stmt)).one())


async def campaign_by_id(conn: AsyncConnection, campaign_id: int, owner_user_id: int | None) -> Campaign | None:
    stmt = select(campaigns).where(_c.campaign_id == campaign_id, *_owned_by(owner_user_id))
    row = (await conn.execute(stmt)).one_or_none()
    return _campaign(row) if row is not None else None


async def campaigns_by_ids(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner_user_id: int | None
) -> list[Campaign]:
    """Those of the campaigns that exist and are in scope, by campaign id."""
    stmt = (
        select(campaigns)
        .where(_c.campaign_id == _id_array(campaign_ids), *_owned_by(owner_user_id))
        .order_by(_c.campaign_id)
    )
    return [_campaign(row) for row in await conn.execute(stmt)]


def _matching(campaign_filter: CampaignFilter) -> list[ColumnElement[bool]]:
    conditions = _owned_by(campaign_filter.owner_user_id)
    if campaign_filter.statuses:
        conditions.append(_c.status.in_([status.value for status in campaign_filter.statuses]))
    if campaign_filter.search:
        pattern = domain.name_contains_pattern(campaign_filter.search)
        conditions.append(_c.name.ilike(pattern, escape=domain.LIKE_ESCAPE))
    if campaign_filter.campaign_ids:
        conditions.append(_c.campaign_id == _id_array(campaign_filter.campaign_ids))
    if not campaign_filter.include_auto_resend:
        conditions.append(_c.original_campaign_id.is_(None))
    return conditions


def _ordering(campaign_filter: CampaignFilter) -> list[Any]:
    direction = desc if campaign_filter.descending else asc
    tiebreak = direction(_c.campaign_id)
    if campaign_filter.order_by is OrderField.CAMPAIGN_ID:
        return [tiebreak]
    if campaign_filter.order_by is OrderField.SEND_TIME:
        # Campaigns never sent have no send time; they come last whichever the direction.
        return [direction(_c.send_started_at).nulls_last(), tiebreak]
    column: Any = {
        # Names sort the way people read them, not capitals first.
        OrderField.NAME: func.lower(_c.name),
        OrderField.STATUS: _c.status,
        OrderField.CREATE_TIME: _c.created_at,
        OrderField.UPDATE_TIME: _c.updated_at,
    }[campaign_filter.order_by]
    return [direction(column), tiebreak]


async def count_matching_campaigns(conn: AsyncConnection, campaign_filter: CampaignFilter) -> int:
    stmt = select(func.count()).select_from(campaigns).where(*_matching(campaign_filter))
    return int((await conn.execute(stmt)).scalar_one())


async def campaign_page(conn: AsyncConnection, query: ListQuery) -> tuple[list[Campaign], int]:
    """One page of the matching campaigns in the filter's order, and how many match in all."""
    stmt = (
        select(campaigns, func.count().over().label("total_matches"))
        .where(*_matching(query.filter))
        .order_by(*_ordering(query.filter))
        .offset(query.offset)
    )
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    rows = (await conn.execute(stmt)).all()
    if rows:
        return [_campaign(row) for row in rows], int(rows[0].total_matches)
    # A page past the end has no row to carry the window count, so count separately.
    total = 0 if query.offset == 0 else await count_matching_campaigns(conn, query.filter)
    return [], total


async def insert_copy_of_campaign(
    conn: AsyncConnection, source_id: int, owner_user_id: int | None, *, name: str
) -> Campaign | None:
    """The new Draft copied from the source (same owner); None when the source is not in scope."""
    source = select(
        _c.owner_user_id,
        literal(name, Text),
        literal(CampaignStatus.DRAFT.value, Text),
        *(_c[column] for column in COPIED_COLUMNS),
    ).where(_c.campaign_id == source_id, *_owned_by(owner_user_id))
    stmt = (
        insert(campaigns)
        .from_select(["owner_user_id", "name", "status", *COPIED_COLUMNS], source)
        .returning(*campaigns.c)
    )
    row = (await conn.execute(stmt)).one_or_none()
    return _campaign(row) if row is not None else None


async def delete_campaigns_with_auto_resends(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner_user_id: int | None
) -> list[tuple[int, int]]:
    """(campaign_id, owner_user_id) of every campaign deleted: those in scope and, recursively, their auto-resends."""
    doomed = (
        select(_c.campaign_id)
        .where(_c.campaign_id == _id_array(campaign_ids), *_owned_by(owner_user_id))
        .cte("doomed", recursive=True)
    )
    child = campaigns.alias("child")
    doomed = doomed.union(
        select(child.c.campaign_id).join_from(child, doomed, child.c.original_campaign_id == doomed.c.campaign_id)
    )
    stmt = (
        delete(campaigns)
        .where(_c.campaign_id.in_(select(doomed.c.campaign_id)))
        .returning(_c.campaign_id, _c.owner_user_id)
    )
    return [(row.campaign_id, row.owner_user_id) for row in await conn.execute(stmt)]
