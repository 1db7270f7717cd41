"""SQL of mailing lists: create, read with their counts, page, delete."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience.domain import MailingList, NewList
from services.audience.store._tables import lists, owned_by, segments, subscribers
from services.common.sql import LIKE_ESCAPE, contains_pattern, id_array

_LIST_COLUMNS = tuple(lists.c)


def _list_counts(table: sa.FromClause) -> list[sa.Label[Any]]:
    """Per-list counts as correlated subqueries: each is an index-only scan of one list's rows."""
    members = subscribers.alias("members")
    return [
        sa.select(sa.func.count())
        .where(members.c.list_id == table.c.list_id)
        .scalar_subquery()
        .label("subscriber_count"),
        sa.select(sa.func.count())
        .where(members.c.list_id == table.c.list_id, members.c.status == "Subscribed")
        .scalar_subquery()
        .label("active_subscriber_count"),
        sa.select(sa.func.count())
        .where(segments.c.list_id == table.c.list_id)
        .scalar_subquery()
        .label("segment_count"),
        sa.func.greatest(
            table.c.created_at,
            sa.select(sa.func.max(members.c.updated_at))
            .where(members.c.list_id == table.c.list_id)
            .scalar_subquery(),
        ).label("last_activity_at"),
    ]


def _mailing_list(row: Any, *, counted: bool) -> MailingList:
    return MailingList(
        list_id=row.list_id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        description=row.description,
        opt_in_mode=row.opt_in_mode,
        sender_name=row.sender_name,
        sender_email_address=row.sender_email_address,
        sender_company=row.sender_company,
        sender_address=row.sender_address,
        confirmation_email_id=row.confirmation_email_id,
        created_at=row.created_at,
        archived_at=row.archived_at,
        subscriber_count=row.subscriber_count if counted else 0,
        active_subscriber_count=row.active_subscriber_count if counted else 0,
        segment_count=row.segment_count if counted else 0,
        last_activity_at=row.last_activity_at if counted else None,
    )


async def inserted_list(conn: AsyncConnection, owner: int, new: NewList) -> MailingList:
    statement = (
        sa.insert(lists)
        .values(
            owner_user_id=owner,
            name=new.name,
            description=new.description,
            opt_in_mode=new.opt_in_mode,
            sender_name=new.sender_name,
            sender_email_address=new.sender_email_address,
            sender_company=new.sender_company,
            sender_address=new.sender_address,
            confirmation_email_id=0,
        )
        .returning(*_LIST_COLUMNS)
    )
    row = (await conn.execute(statement)).one()
    return _mailing_list(row, counted=False)


async def list_with_confirmation_email(conn: AsyncConnection, list_id: int, email_id: int) -> MailingList:
    statement = (
        sa.update(lists)
        .where(lists.c.list_id == list_id)
        .values(confirmation_email_id=email_id)
        .returning(*_LIST_COLUMNS)
    )
    return _mailing_list((await conn.execute(statement)).one(), counted=False)


async def list_by_id(
    conn: AsyncConnection, list_id: int, owner: int | None, *, counted: bool = False, lock: bool = False
) -> MailingList | None:
    """The list if it exists and is the owner's; `lock` keeps it from being deleted until the transaction ends."""
    columns = [*_LIST_COLUMNS, *(_list_counts(lists) if counted else [])]
    query = sa.select(*columns).where(lists.c.list_id == list_id, owned_by(lists.c.owner_user_id, owner))
    if lock:
        query = query.with_for_update(key_share=True, of=lists)
    row = (await conn.execute(query)).first()
    return _mailing_list(row, counted=counted) if row is not None else None


async def lists_by_id(conn: AsyncConnection, list_ids: Sequence[int], owner: int | None) -> dict[int, MailingList]:
    """Those of the lists that exist and are the owner's."""
    query = sa.select(*_LIST_COLUMNS).where(
        lists.c.list_id == sa.any_(id_array(list_ids)), owned_by(lists.c.owner_user_id, owner)
    )
    return {row.list_id: _mailing_list(row, counted=False) for row in await conn.execute(query)}


LIST_ORDER = {
    "list_id": lists.c.list_id,
    "name": sa.func.lower(lists.c.name),
    "create_time": lists.c.created_at,
    "archive_time": lists.c.archived_at,
    "active_subscriber_count": sa.literal_column("active_subscriber_count"),
    "segment_count": sa.literal_column("segment_count"),
    "last_activity_time": sa.literal_column("last_activity_at"),
}


async def lists_page(
    conn: AsyncConnection,
    owner: int | None,
    *,
    page_size: int,
    skip: int,
    order_by: str,
    descending: bool,
    search: str,
    archived: bool | None,
) -> tuple[list[MailingList], int]:
    """A page of the owner's lists with their counts, and how many lists pass the filters.

    `archived`: True only archived lists, False only the others, None all.
    """
    conditions: list[sa.ColumnElement[bool]] = [owned_by(lists.c.owner_user_id, owner)]
    if "\x00" in search:
        conditions.append(sa.false())  # no text holds NUL (and PostgreSQL refuses it in a query)
    elif search:
        pattern = contains_pattern(search)
        conditions.append(
            sa.or_(
                lists.c.name.ilike(pattern, escape=LIKE_ESCAPE),
                lists.c.description.ilike(pattern, escape=LIKE_ESCAPE),
            )
        )
    if archived is not None:
        conditions.append(lists.c.archived_at.is_not(None) if archived else lists.c.archived_at.is_(None))
    total = (await conn.execute(sa.select(sa.func.count()).select_from(lists).where(*conditions))).scalar_one()
    order = LIST_ORDER.get(order_by, lists.c.list_id)
    direction = order.desc().nulls_last() if descending else order.asc().nulls_last()
    query = (
        sa.select(*_LIST_COLUMNS, *_list_counts(lists))
        .where(*conditions)
        .order_by(direction, lists.c.list_id.desc() if descending else lists.c.list_id)
        .offset(skip)
    )
    if page_size > 0:
        query = query.limit(page_size)
    return [_mailing_list(row, counted=True) for row in await conn.execute(query)], total


async def deleted_list_count(conn: AsyncConnection, list_ids: Sequence[int], owner: int | None) -> int:
    """Deletes the owner's lists among `list_ids` (subscribers and segments go by cascade); returns how many."""
    statement = sa.delete(lists).where(
        lists.c.list_id == sa.any_(id_array(list_ids)), owned_by(lists.c.owner_user_id, owner)
    )
    return (await conn.execute(statement)).rowcount
