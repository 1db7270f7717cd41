"""SQL for the campaign schema's templates: one function per query, each limited to the owner it is given (None: every owner)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    MetaData,
    Row,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.campaign.store import SCHEMA
from services.campaign.template_domain import FIELDS, Template

metadata = MetaData(schema=SCHEMA)

templates = Table(
    "templates",
    metadata,
    Column("template_id", BigInteger, primary_key=True),
    Column("owner_user_id", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("preheader_text", Text, nullable=False),
    Column("html_content", Text, nullable=False),
    Column("plain_content", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

_c = templates.c
# What a listing without bodies reads: every column but the two that may be megabytes long.
_BASIC_COLUMNS = [column for column in templates.c if column.name not in ("html_content", "plain_content")]


def _template(row: Row[Any]) -> Template:
    mapping = row._mapping
    return Template(
        template_id=row.template_id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        subject=row.subject,
        preheader_text=row.preheader_text,
        html_content=mapping.get("html_content", ""),
        plain_content=mapping.get("plain_content", ""),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _owned_by(owner_user_id: int | None) -> list[ColumnElement[bool]]:
    return [] if owner_user_id is None else [_c.owner_user_id == owner_user_id]


async def insert_template(conn: AsyncConnection, template: Template) -> Template:
    """The new template with the owner and fields of `template` (its id and times are the table's)."""
    values = {name: getattr(template, name) for name in FIELDS}
    stmt = insert(templates).values(owner_user_id=template.owner_user_id, **values).returning(*templates.c)
    return _template((await conn.execute(stmt)).one())


async def template_by_id(
    conn: AsyncConnection, template_id: int, owner_user_id: int | None, *, for_update: bool = False
) -> Template | None:
    """The template unless it is out of scope; `for_update` locks it until the transaction ends."""
    stmt = select(templates).where(_c.template_id == template_id, *_owned_by(owner_user_id))
    if for_update:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).one_or_none()
    return _template(row) if row is not None else None


async def templates_after(
    conn: AsyncConnection, owner_user_id: int | None, after_id: int, limit: int, *, with_bodies: bool
) -> list[Template]:
    """At most `limit` templates in scope with an id above `after_id`, by id; without bodies ("") unless asked."""
    columns = list(templates.c) if with_bodies else _BASIC_COLUMNS
    stmt = (
        select(*columns)
        .where(_c.template_id > after_id, *_owned_by(owner_user_id))
        .order_by(_c.template_id)
        .limit(limit)
    )
    return [_template(row) for row in await conn.execute(stmt)]


async def update_template(conn: AsyncConnection, template: Template) -> Template | None:
    """The template with its fields set from `template`; None when it was deleted meanwhile."""
    values = {name: getattr(template, name) for name in FIELDS}
    stmt = (
        update(templates)
        .where(_c.template_id == template.template_id)
        .values(**values, updated_at=func.now())
        .returning(*templates.c)
    )
    row = (await conn.execute(stmt)).one_or_none()
    return _template(row) if row is not None else None


async def delete_template(conn: AsyncConnection, template_id: int, owner_user_id: int | None) -> int | None:
    """The id of the template now deleted; None when it was not found or out of scope."""
    stmt = (
        delete(templates).where(_c.template_id == template_id, *_owned_by(owner_user_id)).returning(_c.template_id)
    )
    return (await conn.execute(stmt)).scalar_one_or_none()
