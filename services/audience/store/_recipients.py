"""SQL of a targeting spec's recipients: how many, and the stream of them in subscriber id order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience import domain, rules
from services.audience.store._tables import is_suppressed, subscribers, suppressions
from services.common.sql import id_array


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
                    t.c.bounce_type,
                    t.c.subscription_date,
                    t.c.subscription_ip,
                    t.c.optin_date,
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


# subscriber id, list id, address, first name, last name, custom fields (JSON text or None), bounce type,
# subscription date, subscription IP, opt-in date
RecipientRow = tuple[int, int, str, str, str, str | None, str, datetime | None, str, datetime | None]


async def recipient_rows(
    conn: AsyncConnection, query: RecipientQuery, after: int, limit: int
) -> list[RecipientRow]:
    """The next `limit` recipients after subscriber id `after`, in id order; custom fields as JSON text or None,
    the bounce type, which delivery needs to announce a later delivery to a bounced address, and the
    subscription dates and address personalization shows."""
    if query.is_empty:
        return []
    result = await conn.execute(query.chunk(after, limit))
    return [tuple(row) for row in result]


def custom_fields_of(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    return {str(k): str(v) for k, v in json.loads(text).items()}
