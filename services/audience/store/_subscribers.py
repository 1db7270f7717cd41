"""SQL of subscribers: add or update one, read and page them, and the bulk unsubscribe and delete of a selection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience import domain, rules
from services.audience.domain import NewSubscriber, SubscriberRecord
from services.audience.store._tables import is_suppressed, subscribers, suppression_reason, suppressions
from services.common.sql import LIKE_ESCAPE, contains_pattern, id_array

_SUBSCRIBER_COLUMNS = (
    subscribers.c.subscriber_id,
    subscribers.c.list_id,
    subscribers.c.owner_user_id,
    subscribers.c.email_address,
    subscribers.c.first_name,
    subscribers.c.last_name,
    subscribers.c.custom_fields,
    subscribers.c.status,
    subscribers.c.bounce_type,
    subscribers.c.subscription_date,
    subscribers.c.subscription_ip,
    subscribers.c.unsubscription_date,
    subscribers.c.unsubscription_ip,
    subscribers.c.optin_date,
    subscribers.c.source,
    subscribers.c.source_ref,
    subscribers.c.unsubscription_channel,
    suppression_reason(subscribers).label("suppression_reason"),
)


def _subscriber(row: Any, segments_of: tuple[tuple[int, str], ...] = ()) -> SubscriberRecord:
    return SubscriberRecord(
        subscriber_id=row.subscriber_id,
        list_id=row.list_id,
        owner_user_id=row.owner_user_id,
        email_address=row.email_address,
        first_name=row.first_name,
        last_name=row.last_name,
        custom_fields={str(k): str(v) for k, v in (row.custom_fields or {}).items()},
        status=row.status,
        bounce_type=row.bounce_type,
        subscription_date=row.subscription_date,
        subscription_ip=row.subscription_ip,
        unsubscription_date=row.unsubscription_date,
        unsubscription_ip=row.unsubscription_ip,
        optin_date=row.optin_date,
        source=row.source,
        source_ref=row.source_ref,
        suppressed=row.suppression_reason is not None,
        segments=segments_of,
        unsubscription_channel=row.unsubscription_channel,
        suppression_reason=row.suppression_reason or "",
    )


def _subscriber_values(new: NewSubscriber) -> dict[str, Any]:
    return {
        "email_address": new.email_address,
        "email_key": new.email_key,
        "first_name": new.first_name,
        "last_name": new.last_name,
        "custom_fields": dict(new.custom_fields),
        "status": new.status,
        "bounce_type": new.bounce_type,
        "subscription_date": new.subscription_date,
        "subscription_ip": new.subscription_ip,
        "unsubscription_date": new.unsubscription_date,
        "unsubscription_ip": new.unsubscription_ip,
        "optin_date": new.optin_date,
        "source": new.source,
        "source_ref": new.source_ref,
    }


async def inserted_subscriber_id(conn: AsyncConnection, owner: int, new: NewSubscriber) -> int | None:
    """The new subscriber's id, or None when the list already has the address (concurrent adds included)."""
    statement = (
        postgresql.insert(subscribers)
        .values(list_id=new.list_id, owner_user_id=owner, **_subscriber_values(new))
        .on_conflict_do_nothing(index_elements=[subscribers.c.list_id, subscribers.c.email_key])
        .returning(subscribers.c.subscriber_id)
    )
    return (await conn.execute(statement)).scalar_one_or_none()


async def existing_subscriber(conn: AsyncConnection, list_id: int, key: str) -> tuple[int, str] | None:
    """(id, status) of the list's subscriber with that address, locked for an update."""
    query = (
        sa.select(subscribers.c.subscriber_id, subscribers.c.status)
        .where(subscribers.c.list_id == list_id, subscribers.c.email_key == key)
        .with_for_update()
    )
    row = (await conn.execute(query)).first()
    return (row.subscriber_id, row.status) if row is not None else None


async def updated_subscriber_id(conn: AsyncConnection, subscriber_id: int, new: NewSubscriber) -> int:
    """Overwrites a duplicate with the new values; names and custom fields given empty keep the old ones."""
    values = _subscriber_values(new)
    values["first_name"] = sa.func.coalesce(sa.func.nullif(new.first_name, ""), subscribers.c.first_name)
    values["last_name"] = sa.func.coalesce(sa.func.nullif(new.last_name, ""), subscribers.c.last_name)
    values["custom_fields"] = subscribers.c.custom_fields.op("||")(
        sa.cast(dict(new.custom_fields), postgresql.JSONB)
    )
    # The caller's bounce type and unsubscription replace the ones bounces and complaints recorded.
    values["soft_bounce_campaign_ids"] = id_array([])
    values["unsubscription_channel"] = ""
    values["updated_at"] = sa.func.now()
    statement = (
        sa.update(subscribers)
        .where(subscribers.c.subscriber_id == subscriber_id)
        .values(**values)
        .returning(subscribers.c.subscriber_id)
    )
    return int((await conn.execute(statement)).scalar_one())


async def subscriber_by(
    conn: AsyncConnection, list_id: int, *, subscriber_id: int = 0, key: str = ""
) -> SubscriberRecord | None:
    """The list's subscriber by id or by address key (the caller checked the list is theirs)."""
    condition = subscribers.c.subscriber_id == subscriber_id if subscriber_id else subscribers.c.email_key == key
    query = sa.select(*_SUBSCRIBER_COLUMNS).where(subscribers.c.list_id == list_id, condition)
    row = (await conn.execute(query)).first()
    return _subscriber(row) if row is not None else None


async def segments_containing(
    conn: AsyncConnection,
    subscriber_id: int,
    definitions: Mapping[int, rules.SegmentDefinition],
    names: Mapping[int, str],
) -> tuple[tuple[int, str], ...]:
    """The segments (of the subscriber's list) the subscriber is in, by id."""
    if not definitions:
        return ()
    compiler = rules.Compiler(subscribers, suppressions, definitions)
    ordered = sorted(definitions)
    query = sa.select(
        *[
            compiler.membership(definitions[segment_id], subscribers).label(f"s{segment_id}")
            for segment_id in ordered
        ]
    ).where(subscribers.c.subscriber_id == subscriber_id)
    row = (await conn.execute(query)).first()
    if row is None:
        return ()
    return tuple(
        (segment_id, names[segment_id]) for segment_id, inside in zip(ordered, row, strict=True) if inside
    )


def _search_condition(column_name: str, keyword: str) -> sa.ColumnElement[bool]:
    if "\x00" in keyword:
        return sa.false()  # no text holds NUL (and PostgreSQL refuses it in a query)
    if column_name.startswith(rules.CUSTOM_PREFIX):
        key = column_name.removeprefix(rules.CUSTOM_PREFIX)
        return sa.func.coalesce(
            subscribers.c.custom_fields.op("->>", return_type=sa.Text)(sa.literal(key, sa.Text)), ""
        ).ilike(contains_pattern(keyword), escape=LIKE_ESCAPE)
    column = subscribers.c[column_name]
    if column_name == "subscriber_id":
        text = keyword.strip()
        return column == int(text) if text.isdigit() and len(text) <= 18 else sa.false()
    if column_name in ("subscription_date", "optin_date"):
        shown = sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD HH24:MI:SS")
        return sa.func.coalesce(shown, "").ilike(contains_pattern(keyword), escape=LIKE_ESCAPE)
    return column.ilike(contains_pattern(keyword), escape=LIKE_ESCAPE)


async def subscribers_page(
    conn: AsyncConnection,
    list_id: int,
    *,
    status: str,
    bounce_type: str,
    segment: rules.SegmentDefinition | None,
    segment_definitions: Mapping[int, rules.SegmentDefinition],
    suppressed_only: bool,
    search_column: str,
    keyword: str,
    order_column: str,
    descending: bool,
    page_size: int,
    skip: int,
) -> tuple[list[SubscriberRecord], int]:
    """A page of a list's subscribers passing the filters, and how many pass them."""
    conditions: list[sa.ColumnElement[bool]] = [subscribers.c.list_id == list_id]
    if status:
        conditions.append(subscribers.c.status == status)
    if bounce_type:
        conditions.append(subscribers.c.bounce_type == bounce_type)
    if segment is not None:
        compiler = rules.Compiler(subscribers, suppressions, segment_definitions)
        conditions.append(compiler.membership(segment, subscribers))
    if suppressed_only:
        conditions.append(is_suppressed(subscribers))
    if keyword:
        conditions.append(_search_condition(search_column, keyword))
    total = (
        await conn.execute(sa.select(sa.func.count()).select_from(subscribers).where(*conditions))
    ).scalar_one()
    order = subscribers.c[order_column]
    query = (
        sa.select(*_SUBSCRIBER_COLUMNS)
        .where(*conditions)
        .order_by(
            order.desc().nulls_last() if descending else order.asc().nulls_last(),
            subscribers.c.subscriber_id.desc() if descending else subscribers.c.subscriber_id,
        )
        .offset(skip)
    )
    if page_size > 0:
        query = query.limit(page_size)
    return [_subscriber(row) for row in await conn.execute(query)], total


def _selected(
    table: sa.FromClause,
    list_id: int,
    selection: domain.Selection,
    definitions: Mapping[int, rules.SegmentDefinition],
) -> sa.ColumnElement[bool]:
    condition: sa.ColumnElement[bool]
    if selection.criteria is not None:
        compiler = rules.Compiler(subscribers, suppressions, definitions)
        condition = compiler.condition(selection.criteria, selection.operator, table)
    elif selection.email_key:
        condition = table.c.email_key == selection.email_key
    else:
        condition = table.c.subscriber_id == sa.any_(id_array(selection.subscriber_ids))
    return sa.and_(table.c.list_id == list_id, condition)


async def selected_statuses(
    conn: AsyncConnection,
    list_id: int,
    selection: domain.Selection,
    definitions: Mapping[int, rules.SegmentDefinition],
    *,
    lock: bool,
) -> list[str]:
    """The statuses of the selected subscribers (for one address or id: whether it exists and is unsubscribed)."""
    query = sa.select(subscribers.c.status).where(_selected(subscribers, list_id, selection, definitions))
    if lock:
        query = query.with_for_update()
    return list((await conn.execute(query)).scalars())


async def unsubscribed_subscribers(
    conn: AsyncConnection,
    list_id: int,
    selection: domain.Selection,
    definitions: Mapping[int, rules.SegmentDefinition],
    ip_address: str,
) -> list[tuple[int, str]]:
    """Unsubscribes the selected subscribers that are not unsubscribed yet; returns their ids and address keys."""
    statement = (
        sa.update(subscribers)
        .where(_selected(subscribers, list_id, selection, definitions), subscribers.c.status != "Unsubscribed")
        .values(
            status="Unsubscribed",
            unsubscription_date=sa.func.now(),
            unsubscription_ip=ip_address.strip(),
            updated_at=sa.func.now(),
        )
        .returning(subscribers.c.subscriber_id, subscribers.c.email_key)
    )
    return [(row.subscriber_id, row.email_key) for row in await conn.execute(statement)]


async def unsubscribable_count(
    conn: AsyncConnection,
    list_id: int,
    selection: domain.Selection,
    definitions: Mapping[int, rules.SegmentDefinition],
) -> int:
    """How many selected subscribers an unsubscribe would change (a preview)."""
    query = (
        sa.select(sa.func.count())
        .select_from(subscribers)
        .where(_selected(subscribers, list_id, selection, definitions), subscribers.c.status != "Unsubscribed")
    )
    return int((await conn.execute(query)).scalar_one())


async def deleted_subscriber_count(
    conn: AsyncConnection,
    list_id: int,
    selection: domain.Selection,
    definitions: Mapping[int, rules.SegmentDefinition],
) -> int:
    # The condition is computed before any row is deleted, so segments rules see the list as it was.
    statement = sa.delete(subscribers).where(_selected(subscribers, list_id, selection, definitions))
    return (await conn.execute(statement)).rowcount


async def unsuppressed_count(
    conn: AsyncConnection,
    owner: int,
    list_id: int,
    selection: domain.Selection,
    definitions: Mapping[int, rules.SegmentDefinition],
) -> int:
    """Removes the owner's suppression entries for the addresses of the selected subscribers; returns how many."""
    keys = sa.select(subscribers.c.email_key).where(_selected(subscribers, list_id, selection, definitions))
    statement = sa.delete(suppressions).where(
        suppressions.c.owner_user_id == owner, suppressions.c.email_key.in_(keys)
    )
    return (await conn.execute(statement)).rowcount
