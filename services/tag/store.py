"""SQL of the tag service: one function per statement over the `tag` schema; `owner=None` means an admin (no owner filter)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg.errors
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.sql import id_array
from services.tag import domain
from services.tag.domain import Tag

SCHEMA = "tag"
_NAME_INDEX = "tags_owner_name_key"

metadata = sa.MetaData(schema=SCHEMA)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("tag_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("name_key", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("archive_template_url", sa.Text, nullable=False, server_default=""),
)

campaign_tags = sa.Table(
    "campaign_tags",
    metadata,
    sa.Column("tag_id", sa.BigInteger, sa.ForeignKey(tags.c.tag_id, ondelete="CASCADE"), primary_key=True),
    sa.Column("campaign_id", sa.BigInteger, primary_key=True),
    sa.Column("owner_user_id", sa.BigInteger, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

_TAG_COLUMNS = (
    tags.c.tag_id,
    tags.c.owner_user_id,
    tags.c.name,
    tags.c.create_time,
    tags.c.update_time,
    tags.c.archive_template_url,
)


def _owned_by(column: sa.ColumnElement[Any], owner: int | None) -> sa.ColumnElement[bool]:
    return sa.true() if owner is None else column == owner


def _tag(row: sa.Row[*tuple[Any, ...]]) -> Tag:
    return Tag(
        tag_id=row.tag_id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        create_time=row.create_time,
        update_time=row.update_time,
        archive_template_url=row.archive_template_url,
    )


def _is_duplicate_name(error: IntegrityError) -> bool:
    cause = error.orig
    return isinstance(cause, psycopg.errors.UniqueViolation) and cause.diag.constraint_name == _NAME_INDEX


async def tags_of_owner(conn: AsyncConnection, owner: int | None) -> list[Tag]:
    """The owner's tags (every tag for an admin) ordered by name, case-insensitively, then id."""
    query = (
        sa.select(*_TAG_COLUMNS)
        .where(_owned_by(tags.c.owner_user_id, owner))
        .order_by(tags.c.name_key, tags.c.tag_id)
    )
    return [_tag(row) for row in await conn.execute(query)]


async def tag_by_id(conn: AsyncConnection, tag_id: int, owner: int | None, *, lock: bool = False) -> Tag | None:
    """The tag if it exists and is the owner's; `lock` keeps it from being deleted until the transaction ends."""
    query = sa.select(*_TAG_COLUMNS).where(tags.c.tag_id == tag_id, _owned_by(tags.c.owner_user_id, owner))
    if lock:
        query = query.with_for_update(key_share=True)
    row = (await conn.execute(query)).first()
    return _tag(row) if row is not None else None


async def inserted_tag(conn: AsyncConnection, owner: int, name: str) -> Tag:
    """The new tag; TAG_ALREADY_EXISTS if the owner has one of that name (concurrent creations included)."""
    statement = (
        postgresql.insert(tags)
        .values(owner_user_id=owner, name=name, name_key=domain.tag_name_key(name))
        .on_conflict_do_nothing(index_elements=[tags.c.owner_user_id, tags.c.name_key])
        .returning(*_TAG_COLUMNS)
    )
    row = (await conn.execute(statement)).first()
    if row is None:
        raise domain.tag_already_exists(name)
    return _tag(row)


async def renamed_tag(conn: AsyncConnection, tag_id: int, owner: int | None, name: str) -> Tag:
    """The tag after renaming; TAG_NOT_FOUND if it is not the owner's, TAG_ALREADY_EXISTS if another tag has the name."""
    statement = (
        sa.update(tags)
        .where(tags.c.tag_id == tag_id, _owned_by(tags.c.owner_user_id, owner))
        .values(name=name, name_key=domain.tag_name_key(name), update_time=sa.func.now())
        .returning(*_TAG_COLUMNS)
    )
    try:
        row = (await conn.execute(statement)).first()
    except IntegrityError as exc:
        # The index only compares with the owner's other tags, so renaming a tag to itself
        # in another case passes.
        if _is_duplicate_name(exc):
            raise domain.tag_already_exists(name) from exc
        raise
    if row is None:
        raise domain.tag_not_found(tag_id)
    return _tag(row)


async def templated_tag(conn: AsyncConnection, tag_id: int, owner: int | None, template_url: str) -> Tag:
    """The tag after setting its archive template URL ("" clears it); TAG_NOT_FOUND if it is not the owner's."""
    statement = (
        sa.update(tags)
        .where(tags.c.tag_id == tag_id, _owned_by(tags.c.owner_user_id, owner))
        .values(archive_template_url=template_url, update_time=sa.func.now())
        .returning(*_TAG_COLUMNS)
    )
    row = (await conn.execute(statement)).first()
    if row is None:
        raise domain.tag_not_found(tag_id)
    return _tag(row)


async def deleted_tag_count(conn: AsyncConnection, tag_ids: Sequence[int], owner: int | None) -> int:
    """Deletes the owner's tags among `tag_ids` (assignments go by cascade); returns how many."""
    statement = sa.delete(tags).where(
        tags.c.tag_id == sa.any_(id_array(tag_ids)), _owned_by(tags.c.owner_user_id, owner)
    )
    result = await conn.execute(statement)
    return result.rowcount


async def assigned_count(conn: AsyncConnection, tag: Tag, campaign_ids: Sequence[int]) -> int:
    """Assigns the tag to the campaigns not yet carrying it; returns how many assignments are new."""
    rows = sa.select(
        sa.literal(tag.tag_id, sa.BigInteger),
        sa.func.unnest(id_array(campaign_ids)),
        sa.literal(tag.owner_user_id, sa.BigInteger),
    )
    statement = (
        postgresql.insert(campaign_tags)
        .from_select(["tag_id", "campaign_id", "owner_user_id"], rows)
        .on_conflict_do_nothing(index_elements=[campaign_tags.c.tag_id, campaign_tags.c.campaign_id])
        # SQLAlchemy keeps an INSERT's rowcount only when asked (it would read -1).
        .execution_options(preserve_rowcount=True)
    )
    result = await conn.execute(statement)
    return result.rowcount


async def unassigned_count(conn: AsyncConnection, tag_id: int, campaign_ids: Sequence[int]) -> int:
    """Removes the tag from the campaigns; returns how many assignments existed."""
    statement = sa.delete(campaign_tags).where(
        campaign_tags.c.tag_id == tag_id, campaign_tags.c.campaign_id == sa.any_(id_array(campaign_ids))
    )
    result = await conn.execute(statement)
    return result.rowcount


async def tags_by_campaign(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner: int | None
) -> dict[int, list[Tag]]:
    """The owner's tags of each campaign that has any, each list ordered like tags_of_owner."""
    query = (
        sa.select(campaign_tags.c.campaign_id, *_TAG_COLUMNS)
        .join(tags, tags.c.tag_id == campaign_tags.c.tag_id)
        .where(
            campaign_tags.c.campaign_id == sa.any_(id_array(campaign_ids)),
            _owned_by(campaign_tags.c.owner_user_id, owner),
        )
        .order_by(campaign_tags.c.campaign_id, tags.c.name_key, tags.c.tag_id)
    )
    found: dict[int, list[Tag]] = {}
    for row in await conn.execute(query):
        found.setdefault(row.campaign_id, []).append(_tag(row))
    return found


async def tagged_campaign_ids(conn: AsyncConnection, tag_ids: Sequence[int], owner: int | None) -> list[int]:
    """The distinct ids of the owner's campaigns carrying any of the tags, ascending."""
    query = (
        sa.select(campaign_tags.c.campaign_id)
        .where(
            campaign_tags.c.tag_id == sa.any_(id_array(tag_ids)),
            _owned_by(campaign_tags.c.owner_user_id, owner),
        )
        .distinct()
        .order_by(campaign_tags.c.campaign_id)
    )
    return list((await conn.execute(query)).scalars())


async def deleted_campaign_assignment_count(
    conn: AsyncConnection, owner_user_id: int, campaign_ids: Sequence[int]
) -> int:
    """Removes every assignment of the owner's deleted campaigns; returns how many there were."""
    statement = sa.delete(campaign_tags).where(
        campaign_tags.c.owner_user_id == owner_user_id,
        campaign_tags.c.campaign_id == sa.any_(id_array(campaign_ids)),
    )
    result = await conn.execute(statement)
    return result.rowcount
