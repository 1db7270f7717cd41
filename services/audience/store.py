"""SQL of the audience service: one function per statement over the `audience` schema; `owner=None` means an admin (no owner filter)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience import domain, rules
from services.audience.domain import (
    MailingList,
    NewList,
    NewSegment,
    NewSubscriber,
    SegmentRecord,
    SubscriberRecord,
)
from services.common.sql import LIKE_ESCAPE, contains_pattern, id_array, text_array

SCHEMA = "audience"

metadata = sa.MetaData(schema=SCHEMA)

lists = sa.Table(
    "lists",
    metadata,
    sa.Column("list_id", sa.BigInteger, primary_key=True),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("opt_in_mode", sa.Text, nullable=False),
    sa.Column("sender_name", sa.Text, nullable=False),
    sa.Column("sender_email_address", sa.Text, nullable=False),
    sa.Column("sender_company", sa.Text, nullable=False),
    sa.Column("sender_address", sa.Text, nullable=False),
    sa.Column("confirmation_email_id", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("archived_at", sa.DateTime(timezone=True)),
)

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("subscriber_id", sa.BigInteger, primary_key=True),
    sa.Column("list_id", sa.BigInteger, sa.ForeignKey(lists.c.list_id, ondelete="CASCADE"), nullable=False),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("email_address", sa.Text, nullable=False),
    sa.Column("email_key", sa.Text, nullable=False),
    sa.Column("first_name", sa.Text, nullable=False),
    sa.Column("last_name", sa.Text, nullable=False),
    sa.Column("custom_fields", postgresql.JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("bounce_type", sa.Text, nullable=False),
    sa.Column("subscription_date", sa.DateTime(timezone=True)),
    sa.Column("subscription_ip", sa.Text, nullable=False),
    sa.Column("unsubscription_date", sa.DateTime(timezone=True)),
    sa.Column("unsubscription_ip", sa.Text, nullable=False),
    sa.Column("optin_date", sa.DateTime(timezone=True)),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("source_ref", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("segment_id", sa.BigInteger, primary_key=True),
    sa.Column("list_id", sa.BigInteger, sa.ForeignKey(lists.c.list_id, ondelete="CASCADE"), nullable=False),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("operator", sa.Text, nullable=False),
    sa.Column("rules", postgresql.JSONB, nullable=False),
    sa.Column("randomness", sa.Boolean, nullable=False),
    sa.Column("randomness_audience_size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("owner_user_id", sa.BigInteger, primary_key=True),
    sa.Column("email_key", sa.Text, primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


def _owned_by(column: sa.ColumnElement[Any], owner: int | None) -> sa.ColumnElement[bool]:
    return sa.true() if owner is None else column == owner


def is_suppressed(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """Whether the row's address is on its owner's suppression list."""
    return (
        sa.exists()
        .where(
            suppressions.c.owner_user_id == table.c.owner_user_id, suppressions.c.email_key == table.c.email_key
        )
        .correlate(table)
    )


# --- lists ------------------------------------------------------------------------------------------------

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
    query = sa.select(*columns).where(lists.c.list_id == list_id, _owned_by(lists.c.owner_user_id, owner))
    if lock:
        query = query.with_for_update(key_share=True, of=lists)
    row = (await conn.execute(query)).first()
    return _mailing_list(row, counted=counted) if row is not None else None


async def lists_by_id(conn: AsyncConnection, list_ids: Sequence[int], owner: int | None) -> dict[int, MailingList]:
    """Those of the lists that exist and are the owner's."""
    query = sa.select(*_LIST_COLUMNS).where(
        lists.c.list_id == sa.any_(id_array(list_ids)), _owned_by(lists.c.owner_user_id, owner)
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
    conditions: list[sa.ColumnElement[bool]] = [_owned_by(lists.c.owner_user_id, owner)]
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
        lists.c.list_id == sa.any_(id_array(list_ids)), _owned_by(lists.c.owner_user_id, owner)
    )
    return (await conn.execute(statement)).rowcount


# --- subscribers ------------------------------------------------------------------------------------------

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
        suppressed=bool(row.suppressed),
        segments=segments_of,
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
    query = sa.select(*_SUBSCRIBER_COLUMNS, is_suppressed(subscribers).label("suppressed")).where(
        subscribers.c.list_id == list_id, condition
    )
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
        return sa.func.coalesce(subscribers.c.custom_fields.op("->>")(sa.literal(key, sa.Text)), "").ilike(
            contains_pattern(keyword), escape=LIKE_ESCAPE
        )
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
        sa.select(*_SUBSCRIBER_COLUMNS, is_suppressed(subscribers).label("suppressed"))
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


async def unsubscribed_keys(
    conn: AsyncConnection,
    list_id: int,
    selection: domain.Selection,
    definitions: Mapping[int, rules.SegmentDefinition],
    ip_address: str,
) -> list[str]:
    """Unsubscribes the selected subscribers that are not unsubscribed yet; returns their address keys."""
    statement = (
        sa.update(subscribers)
        .where(_selected(subscribers, list_id, selection, definitions), subscribers.c.status != "Unsubscribed")
        .values(
            status="Unsubscribed",
            unsubscription_date=sa.func.now(),
            unsubscription_ip=ip_address.strip(),
            updated_at=sa.func.now(),
        )
        .returning(subscribers.c.email_key)
    )
    return list((await conn.execute(statement)).scalars())


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


# --- suppressions -----------------------------------------------------------------------------------------


async def added_suppression_count(conn: AsyncConnection, owner: int, keys: Sequence[str]) -> int:
    """Adds the address keys to the owner's suppression list; returns how many were new."""
    if not keys:
        return 0
    rows = sa.select(sa.literal(owner, sa.BigInteger), sa.func.unnest(text_array(keys)))
    statement = (
        postgresql.insert(suppressions)
        .from_select(["owner_user_id", "email_key"], rows)
        .on_conflict_do_nothing(index_elements=[suppressions.c.owner_user_id, suppressions.c.email_key])
    )
    return (await conn.execute(statement)).rowcount


# --- segments ---------------------------------------------------------------------------------------------

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
        segments.c.segment_id == sa.any_(id_array(segment_ids)), _owned_by(segments.c.owner_user_id, owner)
    )
    return (await conn.execute(statement)).rowcount


# --- recipients -------------------------------------------------------------------------------------------


class RecipientQuery:
    """The SQL of a targeting spec: included sources (or the bundle's criteria) of Subscribed rows, narrowed
    by the bundle, minus addresses in excluded sources, minus suppressed addresses, each address once
    (its lowest subscriber id).

    Rows come from one branch per list; a list's rows never repeat an address, so with one branch
    there is nothing to deduplicate. Every branch is an index range scan in subscriber id order, which
    is what keyset pagination needs.
    """

    def __init__(self, targeting: domain.Targeting, definitions: Mapping[int, rules.SegmentDefinition]) -> None:
        self._targeting = targeting
        self._definitions = definitions
        self._compiler = rules.Compiler(subscribers, suppressions, definitions)
        self._branches = self._row_sources()

    @property
    def is_empty(self) -> bool:
        return not self._branches

    def _segment_condition(self, table: sa.FromClause, segment_ids: set[int]) -> sa.ColumnElement[bool]:
        if 0 in segment_ids:
            return sa.true()
        return sa.or_(*[self._compiler.membership(self._definitions[s], table) for s in sorted(segment_ids)])

    def _row_sources(self) -> dict[int, list[tuple[str, Any]]]:
        """Per list, what selects its rows: ("segments", {ids}) or ("criterion", Criterion)."""
        branches: dict[int, list[tuple[str, Any]]] = {}
        if self._targeting.included:
            by_list: dict[int, set[int]] = {}
            for source in self._targeting.included:
                by_list.setdefault(source.list_id, set()).add(source.segment_id)
            for list_id, segment_ids in by_list.items():
                branches[list_id] = [("segments", segment_ids)]
        elif self._targeting.bundle is not None:
            for criterion in self._targeting.bundle.criteria:
                branches.setdefault(criterion.list_id, []).append(("criterion", criterion))
        return branches

    def _source(self, table: sa.FromClause, list_id: int) -> sa.ColumnElement[bool]:
        parts: list[sa.ColumnElement[bool]] = []
        for kind, detail in self._branches[list_id]:
            if kind == "segments":
                parts.append(self._segment_condition(table, detail))
            else:
                parts.append(self._compiler.condition(detail.criteria, detail.operator, table))
        return sa.and_(table.c.list_id == list_id, sa.or_(*parts) if len(parts) > 1 else parts[0])

    def _in_criterion(
        self, table: sa.FromClause, index: int, criterion: domain.Criterion
    ) -> sa.ColumnElement[bool]:
        other = subscribers.alias(f"criterion{index}")
        return sa.exists().where(
            other.c.list_id == criterion.list_id,
            other.c.email_key == table.c.email_key,
            self._compiler.condition(criterion.criteria, criterion.operator, other),
        )

    def _narrowing(self, table: sa.FromClause) -> sa.ColumnElement[bool]:
        bundle = self._targeting.bundle
        if bundle is None:
            return sa.true()
        if not self._targeting.included and (bundle.operator == rules.OR or len(bundle.criteria) == 1):
            return sa.true()  # the rows come from the criteria themselves
        checks = [self._in_criterion(table, i, c) for i, c in enumerate(bundle.criteria)]
        return sa.and_(*checks) if bundle.operator == rules.AND else sa.or_(*checks)

    def _excluded(self, table: sa.FromClause) -> sa.ColumnElement[bool]:
        whole = sorted({s.list_id for s in self._targeting.excluded if s.segment_id == 0})
        checks: list[sa.ColumnElement[bool]] = []
        if whole:
            other = subscribers.alias("excluded")
            in_lists = (
                other.c.list_id == whole[0] if len(whole) == 1 else other.c.list_id == sa.any_(id_array(whole))
            )
            checks.append(sa.exists().where(in_lists, other.c.email_key == table.c.email_key))
        for i, source in enumerate(s for s in self._targeting.excluded if s.segment_id != 0):
            other = subscribers.alias(f"excluded{i}")
            checks.append(
                sa.exists().where(
                    other.c.list_id == source.list_id,
                    other.c.email_key == table.c.email_key,
                    self._compiler.membership(self._definitions[source.segment_id], other),
                )
            )
        return sa.or_(*checks) if checks else sa.false()

    def _candidate(self, table: sa.FromClause, list_id: int) -> sa.ColumnElement[bool]:
        return sa.and_(
            table.c.status == "Subscribed",
            self._source(table, list_id),
            self._narrowing(table),
            ~self._excluded(table),
            ~is_suppressed(table),
        )

    def _first_of_address(self, table: sa.FromClause) -> sa.ColumnElement[bool]:
        """No candidate row of another list has the same address and a lower id (the other checks only
        depend on the address, except suppression, whose owner may differ for an admin's targeting)."""
        if len(self._branches) < 2:
            return sa.true()
        earlier = subscribers.alias("earlier")
        return ~sa.exists().where(
            earlier.c.email_key == table.c.email_key,
            earlier.c.subscriber_id < table.c.subscriber_id,
            earlier.c.status == "Subscribed",
            sa.or_(*[self._source(earlier, list_id) for list_id in self._branches]),
            ~is_suppressed(earlier),
        )

    def count(self) -> sa.Select[Any]:
        selects = []
        for list_id in self._branches:
            t = subscribers.alias("t")
            selects.append(sa.select(t.c.email_key).where(t.c.list_id == list_id, self._candidate(t, list_id)))
        if len(selects) == 1:
            return sa.select(sa.func.count()).select_from(selects[0].subquery())
        union = sa.union_all(*selects).subquery()
        return sa.select(sa.func.count(sa.distinct(union.c.email_key)))

    def chunk(self, after: int, limit: int) -> sa.Select[Any] | sa.CompoundSelect:
        selects = []
        for list_id in self._branches:
            t = subscribers.alias("t")
            custom = sa.case(
                (t.c.custom_fields == sa.cast({}, postgresql.JSONB), sa.null()),
                else_=sa.cast(t.c.custom_fields, sa.Text),
            )
            selects.append(
                sa.select(
                    t.c.subscriber_id,
                    t.c.list_id,
                    t.c.email_address,
                    t.c.first_name,
                    t.c.last_name,
                    custom.label("custom_fields"),
                )
                .where(
                    t.c.list_id == list_id,
                    t.c.subscriber_id > after,
                    self._candidate(t, list_id),
                    self._first_of_address(t),
                )
                .order_by(t.c.subscriber_id)
                .limit(limit)
            )
        if len(selects) == 1:
            return selects[0]
        union = sa.union_all(*[s.subquery().select() for s in selects]).subquery()
        return sa.select(*union.c).order_by(union.c.subscriber_id).limit(limit)


async def recipient_count(conn: AsyncConnection, query: RecipientQuery) -> int:
    if query.is_empty:
        return 0
    return int((await conn.execute(query.count())).scalar_one())


RecipientRow = tuple[int, int, str, str, str, str | None]


async def recipient_rows(
    conn: AsyncConnection, query: RecipientQuery, after: int, limit: int
) -> list[RecipientRow]:
    """The next `limit` recipients after subscriber id `after`, in id order; custom fields as JSON text or None."""
    if query.is_empty:
        return []
    result = await conn.execute(query.chunk(after, limit))
    return [tuple(row) for row in result]


def custom_fields_of(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    return {str(k): str(v) for k, v in json.loads(text).items()}
