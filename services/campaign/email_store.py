"""SQL for the campaign schema's emails: one function per query, each limited to the owner it is given (None: every owner)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    MetaData,
    Row,
    Table,
    Text,
    any_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from services.campaign.email_domain import ContentType, Email, EmailMode, Utm
from services.campaign.store import SCHEMA
from services.common.sql import id_array

metadata = MetaData(schema=SCHEMA)

emails = Table(
    "emails",
    metadata,
    Column("email_id", BigInteger, primary_key=True),
    Column("owner_user_id", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("preheader_text", Text, nullable=False),
    Column("from_name", Text, nullable=False),
    Column("from_email", Text, nullable=False),
    Column("reply_to_name", Text, nullable=False),
    Column("reply_to_email", Text, nullable=False),
    Column("html_content", Text, nullable=False),
    Column("plain_content", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("fetch_url", Text, nullable=False),
    Column("fetch_plain_url", Text, nullable=False),
    Column("template_id", BigInteger, nullable=False),
    Column("image_embedding", Boolean, nullable=False),
    Column("is_email_template", Boolean, nullable=False),
    Column("extra_content1", Text, nullable=False),
    Column("extra_content2", Text, nullable=False),
    Column("open_tracking", Boolean, nullable=False),
    Column("link_tracking", Boolean, nullable=False),
    Column("utm", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True)),
)

_c = emails.c
# The columns an update writes (and a copy takes): everything but identity, owner and timestamps.
CONTENT_COLUMNS: tuple[str, ...] = (
    "name",
    "subject",
    "preheader_text",
    "from_name",
    "from_email",
    "reply_to_name",
    "reply_to_email",
    "html_content",
    "plain_content",
    "content_type",
    "mode",
    "fetch_url",
    "fetch_plain_url",
    "template_id",
    "image_embedding",
    "is_email_template",
    "extra_content1",
    "extra_content2",
    "open_tracking",
    "link_tracking",
    "utm",
)


def _email(row: Row[Any]) -> Email:
    utm = row.utm if isinstance(row.utm, Mapping) else {}
    return Email(
        email_id=row.email_id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        subject=row.subject,
        preheader_text=row.preheader_text,
        from_name=row.from_name,
        from_email=row.from_email,
        reply_to_name=row.reply_to_name,
        reply_to_email=row.reply_to_email,
        html_content=row.html_content,
        plain_content=row.plain_content,
        content_type=ContentType(row.content_type),
        mode=EmailMode(row.mode),
        fetch_url=row.fetch_url,
        fetch_plain_url=row.fetch_plain_url,
        template_id=row.template_id,
        image_embedding=row.image_embedding,
        is_email_template=row.is_email_template,
        extra_content1=row.extra_content1,
        extra_content2=row.extra_content2,
        open_tracking=row.open_tracking,
        link_tracking=row.link_tracking,
        utm=Utm.from_json(utm),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _content_values(email: Email) -> dict[str, Any]:
    values: dict[str, Any] = {column: getattr(email, column) for column in CONTENT_COLUMNS}
    values["content_type"] = email.content_type.value
    values["mode"] = email.mode.value
    values["utm"] = email.utm.to_json()
    return values


def _live_and_owned_by(owner_user_id: int | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_c.deleted_at.is_(None)]
    if owner_user_id is not None:
        conditions.append(_c.owner_user_id == owner_user_id)
    return conditions


async def insert_email(conn: AsyncConnection, email: Email) -> Email:
    """The new email with the owner and content columns of `email` (its id and times are the table's)."""
    stmt = insert(emails).values(owner_user_id=email.owner_user_id, **_content_values(email)).returning(*emails.c)
    return _email((await conn.execute(stmt)).one())


async def email_by_id(
    conn: AsyncConnection, email_id: int, owner_user_id: int | None, *, for_update: bool = False
) -> Email | None:
    """The email unless it is deleted or out of scope; `for_update` locks it until the transaction ends."""
    stmt = select(emails).where(_c.email_id == email_id, *_live_and_owned_by(owner_user_id))
    if for_update:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).one_or_none()
    return _email(row) if row is not None else None


async def emails_by_ids(conn: AsyncConnection, email_ids: Sequence[int], owner_user_id: int | None) -> list[Email]:
    """Those of the emails that exist, are not deleted and are in scope, by email id."""
    stmt = (
        select(emails)
        .where(_c.email_id == any_(id_array(email_ids)), *_live_and_owned_by(owner_user_id))
        .order_by(_c.email_id)
    )
    return [_email(row) for row in await conn.execute(stmt)]


async def emails_by_name(conn: AsyncConnection, owner_user_id: int | None) -> list[Email]:
    """Every email in scope that is not deleted, by name as people read it (not capitals first), then id."""
    stmt = select(emails).where(*_live_and_owned_by(owner_user_id)).order_by(func.lower(_c.name), _c.email_id)
    return [_email(row) for row in await conn.execute(stmt)]


async def update_email(conn: AsyncConnection, email: Email) -> Email | None:
    """The email with its content columns set from `email`; None when it was deleted meanwhile."""
    stmt = (
        update(emails)
        .where(_c.email_id == email.email_id, _c.deleted_at.is_(None))
        .values(**_content_values(email), updated_at=func.now())
        .returning(*emails.c)
    )
    row = (await conn.execute(stmt)).one_or_none()
    return _email(row) if row is not None else None


async def delete_email(conn: AsyncConnection, email_id: int, owner_user_id: int | None) -> int | None:
    """The id of the email now marked deleted; None when it was not found, already deleted or out of scope."""
    stmt = (
        update(emails)
        .where(_c.email_id == email_id, *_live_and_owned_by(owner_user_id))
        .values(deleted_at=func.now(), updated_at=func.now())
        .returning(_c.email_id)
    )
    return (await conn.execute(stmt)).scalar_one_or_none()


async def owned_email_ids(conn: AsyncConnection, email_ids: Sequence[int], owner_user_id: int | None) -> set[int]:
    """Those of the ids that name emails in scope and not deleted (for campaigns pointing at emails)."""
    stmt = select(_c.email_id).where(_c.email_id == any_(id_array(email_ids)), *_live_and_owned_by(owner_user_id))
    return set((await conn.execute(stmt)).scalars())


async def insert_email_copies(
    conn: AsyncConnection, email_ids: Sequence[int], owner_user_id: int | None
) -> dict[int, int]:
    """New copies of the emails in scope and not deleted (same owner, same content): source id -> copy id."""
    # The new ids are drawn before the insert so that one statement can report which copy came from which
    # source (RETURNING cannot name the rows an INSERT ... SELECT read). A CTE with nextval() is evaluated once.
    sources = (
        select(
            _c.email_id.label("source_id"),
            func.nextval(func.pg_get_serial_sequence(f"{SCHEMA}.emails", "email_id")).label("copy_id"),
            _c.owner_user_id,
            *(_c[column] for column in CONTENT_COLUMNS),
        )
        .where(_c.email_id == any_(id_array(email_ids)), *_live_and_owned_by(owner_user_id))
        .cte("sources")
    )
    inserted = (
        insert(emails)
        .from_select(
            ["email_id", "owner_user_id", *CONTENT_COLUMNS],
            select(sources.c.copy_id, sources.c.owner_user_id, *(sources.c[column] for column in CONTENT_COLUMNS)),
        )
        .returning(_c.email_id)
        .cte("inserted")
    )
    stmt = select(sources.c.source_id, sources.c.copy_id).join_from(
        sources, inserted, inserted.c.email_id == sources.c.copy_id
    )
    return {row.source_id: row.copy_id for row in await conn.execute(stmt)}
