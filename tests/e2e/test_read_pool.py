"""The read pool GetCampaign uses (services/common/db.py), against the real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Integer, String, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB

from services.common import db
from tests.conftest import System

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_read_is_answered_with_named_columns_and_parameters_in_order(system: System) -> None:
    reads = db.ReadPool(system.settings, 1, name="test-reads-columns")
    await reads.open()
    try:
        statement = select(
            bindparam("b", type_=String).label("b"),
            bindparam("a", type_=Integer).label("a"),
            literal({"k": [1, 2]}, JSONB).label("j"),
        )
        row = await reads.one_or_none(db.CompiledRead.of(statement), a=1, b="two")
        assert row is not None and (row.b, row.a, row.j) == ("two", 1, {"k": [1, 2]})
        empty = select(literal(1).label("x")).where(bindparam("n", type_=Integer) > 5)
        assert await reads.one_or_none(db.CompiledRead.of(empty), n=1) is None
    finally:
        await reads.close()


async def test_a_read_on_a_connection_postgresql_closed_is_retried_on_a_new_one(system: System) -> None:
    reads = db.ReadPool(system.settings, 1, name="test-reads-retry")
    await reads.open()
    try:
        read = db.CompiledRead.of(select(literal(1).label("one"), bindparam("x", type_=Integer).label("x")))
        first = await reads.one_or_none(read, x=1)
        assert first is not None and first.x == 1
        # Blocking on purpose: the event loop does not run until the next read has been sent on the
        # closed connection, so the read itself fails and must be retried, not just the checkout.
        with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'herald-test-reads-retry'"
            ).fetchone()
        assert killed == (1,)
        again = await reads.one_or_none(read, x=2)
        assert again is not None and again.x == 2
    finally:
        await reads.close()


async def test_a_database_url_with_libpq_only_parameters_connects(system: System) -> None:
    url = system.env["DATABASE_URL"]
    url += ("&" if "?" in url else "?") + "connect_timeout=5&keepalives=1&options=-c%20statement_timeout%3D5s"
    reads = db.ReadPool(system.settings.model_copy(update={"database_url": url}), 1, name="test-reads-url")
    await reads.open()
    try:
        timeout = await reads.one_or_none(db.CompiledRead.of(select(func.current_setting("statement_timeout"))))
        assert timeout is not None and timeout[0] == "5s"
    finally:
        await reads.close()
