"""Store tests: each service's SQL against the test session's real PostgreSQL, with no service started.

Isolation is a database per test module, migrated with that service's migrations under the service's
own schema name. The stores name their schema in their SQL (the `audience` MetaData, text statements
on `delivery.recipients`), so a schema under another name would need every statement rewritten; a
database of its own keeps the production names, costs one CREATE DATABASE (a fraction of a second),
and keeps the module away from what `herald run` writes in the session's database.

Inside a module, each test runs on `conn`, a transaction rolled back when the test ends, so tests
see none of each other's rows. A test that needs two connections at once (a claim with SKIP LOCKED)
commits on `engine` and uses ids of its own.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.common import db
from services.common.config import Settings
from tests.conftest import Backing, database_url_named

ROOT = Path(__file__).resolve().parents[2]
# What each service migrates on start: (schema, migrations, with the shared outbox table).
MIGRATIONS = {
    "audience": ("audience", ROOT / "services" / "audience" / "migrations", True),
    "campaign": ("campaign", ROOT / "services" / "campaign" / "migrations", True),
    "delivery": ("delivery", ROOT / "services" / "delivery" / "migrations", True),
    "tag": ("tag", ROOT / "services" / "tag" / "migrations", True),
}

_ids = itertools.count(1_000_001)


def new_id() -> int:
    """An id no other test of the session uses (for owners, campaigns and such)."""
    return next(_ids)


@pytest.fixture(scope="module")
def database_url(backing: Backing, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this test module's own on the session's PostgreSQL, dropped after the module."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:30]
    name = f"store_{module}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(backing.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url_named(backing.database_url, name)
    finally:
        with psycopg.connect(backing.database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    """An engine on the module's database, migrated for the services the module names in SERVICES."""
    engine = create_async_engine(Settings(database_url=database_url).sqlalchemy_url())
    try:
        for service in request.module.SERVICES:
            schema, directory, with_outbox = MIGRATIONS[service]
            await db.migrate(engine, schema, directory, with_outbox=with_outbox)
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that is rolled back after the test."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()
