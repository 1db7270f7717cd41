"""SQL of custom field definitions: create, read, change and delete them, and the lookups subscriber values need (aliases, uniqueness)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience.domain import CustomFieldRecord, FieldOption, FieldSpec
from services.audience.store._tables import custom_fields, lists, owned_by, subscribers
from services.common.sql import id_array, text_array

# What ListCustomFields orders by (then the id).
FIELD_ORDER: Mapping[str, sa.ColumnElement[Any]] = {
    "name": sa.func.lower(custom_fields.c.name),
    "custom_field_id": custom_fields.c.custom_field_id,
    "type": custom_fields.c.field_type,
    "required": custom_fields.c.required,
    "unique": custom_fields.c.is_unique,
    "visibility": custom_fields.c.visibility,
    "global": custom_fields.c.list_id.is_(None),
}


def _record(row: Any) -> CustomFieldRecord:
    return CustomFieldRecord(
        custom_field_id=row.custom_field_id,
        owner_user_id=row.owner_user_id,
        list_id=row.list_id,
        created_at=row.created_at,
        spec=FieldSpec(
            name=row.name,
            field_type=row.field_type,
            default_value=row.default_value,
            options=tuple(
                FieldOption(str(o["label"]), str(o["value"]), bool(o.get("selected"))) for o in row.options
            ),
            required=row.required,
            unique=row.is_unique,
            validation_method=row.validation_method,
            validation_rule=row.validation_rule,
            merge_tag_alias=row.merge_tag_alias,
            visibility=row.visibility,
            is_global=row.list_id is None,
            first_year=row.first_year,
            last_year=row.last_year,
        ),
    )


def _values(spec: FieldSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "field_type": spec.field_type,
        "default_value": spec.default_value,
        "options": [{"label": o.label, "value": o.value, "selected": o.selected} for o in spec.options],
        "required": spec.required,
        "is_unique": spec.unique,
        "validation_method": spec.validation_method,
        "validation_rule": spec.validation_rule,
        "merge_tag_alias": spec.merge_tag_alias,
        "visibility": spec.visibility,
        "first_year": spec.first_year,
        "last_year": spec.last_year,
    }


async def lock_owner_fields(conn: AsyncConnection, owner: int) -> None:
    """Serialises changes of one owner's field definitions until the transaction ends, so that two of them
    cannot both take an alias that is free when each looks."""
    key = sa.func.hashtextextended(sa.literal(f"audience.custom_fields:{owner}"), 0)
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


async def inserted_custom_field(
    conn: AsyncConnection, owner: int, list_id: int | None, spec: FieldSpec
) -> CustomFieldRecord:
    statement = (
        sa.insert(custom_fields)
        .values(owner_user_id=owner, list_id=list_id, **_values(spec))
        .returning(*custom_fields.c)
    )
    return _record((await conn.execute(statement)).one())


async def custom_field_by_id(
    conn: AsyncConnection, custom_field_id: int, owner: int | None, *, lock: bool = False
) -> CustomFieldRecord | None:
    """The field, if it is the owner's (any owner's for None)."""
    query = sa.select(*custom_fields.c).where(
        custom_fields.c.custom_field_id == custom_field_id, owned_by(custom_fields.c.owner_user_id, owner)
    )
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _record(row) if row is not None else None


async def custom_fields_page(
    conn: AsyncConnection,
    *,
    owner: int,
    list_id: int | None,
    include_global: bool,
    order_by: str = "name",
    descending: bool = False,
) -> list[CustomFieldRecord]:
    """The owner's fields of a list (and the global ones with `include_global`), or only the global ones
    for list_id None, in the order asked for (then by id)."""
    scope: sa.ColumnElement[bool]
    if list_id is None:
        scope = custom_fields.c.list_id.is_(None)
    elif include_global:
        scope = sa.or_(custom_fields.c.list_id == list_id, custom_fields.c.list_id.is_(None))
    else:
        scope = custom_fields.c.list_id == list_id
    order = FIELD_ORDER.get(order_by, FIELD_ORDER["name"])
    direction = (
        [order.desc(), custom_fields.c.custom_field_id.desc()]
        if descending
        else [
            order.asc(),
            custom_fields.c.custom_field_id.asc(),
        ]
    )
    query = sa.select(*custom_fields.c).where(custom_fields.c.owner_user_id == owner, scope).order_by(*direction)
    return [_record(row) for row in await conn.execute(query)]


async def fields_of_lists(conn: AsyncConnection, list_ids: Sequence[int]) -> dict[int, list[CustomFieldRecord]]:
    """The fields each list sees (its own and its owner's global ones), by list, in id order."""
    if not list_ids:
        return {}
    owners = sa.select(lists.c.list_id, lists.c.owner_user_id).where(
        lists.c.list_id == sa.any_(id_array(list_ids))
    )
    owner_of = {row.list_id: row.owner_user_id for row in await conn.execute(owners)}
    query = (
        sa.select(*custom_fields.c)
        .where(
            sa.or_(
                custom_fields.c.list_id == sa.any_(id_array(list(owner_of))),
                sa.and_(
                    custom_fields.c.list_id.is_(None),
                    custom_fields.c.owner_user_id == sa.any_(id_array(sorted(set(owner_of.values())))),
                ),
            )
        )
        .order_by(custom_fields.c.custom_field_id)
    )
    found: dict[int, list[CustomFieldRecord]] = {list_id: [] for list_id in owner_of}
    for row in await conn.execute(query):
        record = _record(row)
        for list_id, owner in owner_of.items():
            if record.list_id == list_id or (record.list_id is None and record.owner_user_id == owner):
                found[list_id].append(record)
    return found


async def alias_in_use(
    conn: AsyncConnection, owner: int, alias: str, list_id: int | None, *, except_id: int = 0
) -> bool:
    """Whether another of the owner's fields that a list sees together with this one has the alias
    (case-insensitively): for a list field, the list's fields and the global ones; for a global field, all."""
    seen_together = (
        sa.true()
        if list_id is None
        else sa.or_(custom_fields.c.list_id == list_id, custom_fields.c.list_id.is_(None))
    )
    query = sa.select(
        sa.exists().where(
            custom_fields.c.owner_user_id == owner,
            custom_fields.c.custom_field_id != except_id,
            sa.func.lower(custom_fields.c.merge_tag_alias) == alias.lower(),
            seen_together,
        )
    )
    return bool((await conn.execute(query)).scalar_one())


async def updated_custom_field(
    conn: AsyncConnection, custom_field_id: int, list_id: int | None, spec: FieldSpec
) -> CustomFieldRecord:
    statement = (
        sa.update(custom_fields)
        .where(custom_fields.c.custom_field_id == custom_field_id)
        .values(list_id=list_id, **_values(spec))
        .returning(*custom_fields.c)
    )
    return _record((await conn.execute(statement)).one())


async def deleted_custom_field_ids(conn: AsyncConnection, ids: Sequence[int], owner: int | None) -> list[int]:
    """Deletes the owner's fields among `ids` and every subscriber's value of them; the ids deleted."""
    statement = (
        sa.delete(custom_fields)
        .where(
            custom_fields.c.custom_field_id == sa.any_(id_array(ids)),
            owned_by(custom_fields.c.owner_user_id, owner),
        )
        .returning(custom_fields.c.custom_field_id, custom_fields.c.owner_user_id)
    )
    deleted = (await conn.execute(statement)).all()
    if deleted:
        keys = [str(row.custom_field_id) for row in deleted]
        owners = sorted({row.owner_user_id for row in deleted})
        # A field id is never reused, so its key holds that field's values on whichever list.
        await conn.execute(
            sa.update(subscribers)
            .where(
                subscribers.c.owner_user_id == sa.any_(id_array(owners)),
                subscribers.c.custom_fields.op("?|")(text_array(keys)),
            )
            .values(custom_fields=subscribers.c.custom_fields.op("-")(text_array(keys)), updated_at=sa.func.now())
        )
    return [row.custom_field_id for row in deleted]


async def lock_unique_values(conn: AsyncConnection, list_id: int) -> None:
    """Serialises the uniqueness checks of one list's custom field values until the transaction ends."""
    key = sa.func.hashtextextended(sa.literal(f"audience.unique_values:{list_id}"), 0)
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


async def clashing_field_ids(
    conn: AsyncConnection, list_id: int, values: Mapping[int, str], except_key: str
) -> set[int]:
    """The fields among `values` (id → value) whose value another subscriber of the list (any address but
    `except_key`) already has, compared case-insensitively after trimming."""
    if not values:
        return set()
    given = (
        sa.func.unnest(id_array(list(values)), text_array(list(values.values())))
        .table_valued("field_id", "value")
        .render_derived(name="given")
    )
    other = subscribers.alias("other")
    query = sa.select(given.c.field_id).where(
        sa.exists().where(
            other.c.list_id == list_id,
            other.c.email_key != except_key,
            sa.func.lower(
                sa.func.btrim(
                    other.c.custom_fields.op("->>", return_type=sa.Text)(sa.cast(given.c.field_id, sa.Text))
                )
            )
            == sa.func.lower(sa.func.btrim(given.c.value)),
        )
    )
    return {int(row.field_id) for row in await conn.execute(query)}
