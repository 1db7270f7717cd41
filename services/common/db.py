"""The database side every service shares: an async SQLAlchemy engine and a versioned, per-schema migration runner."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ClauseElement

from services.common.config import Settings

log = structlog.get_logger()
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
OUTBOX_DDL = Path(__file__).with_name("outbox.sql")


def make_engine(settings: Settings, pool_size: int | None = None) -> AsyncEngine:
    """A pooled async engine on psycopg 3; connections are checked before use so a restarted PostgreSQL heals."""
    return create_async_engine(
        settings.sqlalchemy_url(),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=pool_size or settings.db_pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


@dataclass(frozen=True)
class CompiledRead:
    """A SQLAlchemy Core SELECT compiled once to psycopg's SQL, with the values of its literal parameters."""

    sql: str
    defaults: Mapping[str, Any]

    @classmethod
    def of(cls, statement: ClauseElement) -> CompiledRead:
        compiled = statement.compile(dialect=psycopg_dialect.dialect())
        return cls(str(compiled), dict(compiled.params))


class ReadPool:
    """Single-statement reads on plain psycopg connections, for the hottest queries (GetCampaign).

    SQLAlchemy's per-call work (checkout with a ping, execution context, result processing) costs
    about four times the query itself there; this pool keeps autocommit connections with
    server-side prepared statements and checks a connection only when a read on it fails.
    """

    def __init__(self, settings: Settings, size: int) -> None:
        conninfo = settings.sqlalchemy_url().replace("postgresql+psycopg://", "postgresql://", 1)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=size,
            max_size=size,
            open=False,
            max_lifetime=1800,
            kwargs={"autocommit": True, "prepare_threshold": 0},
            name="reads",
        )

    async def open(self) -> None:
        # Connections are made in the background: the service starts even while PostgreSQL does not.
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def one_or_none(self, read: CompiledRead, **params: Any) -> Any:
        """The only row of the read (a named tuple), or None; a connection PostgreSQL dropped is replaced once."""
        values = {**read.defaults, **params}
        try:
            return await self._fetch(read.sql, values)
        except psycopg.OperationalError as exc:
            # A restarted PostgreSQL leaves every pooled connection dead: drop them all, then retry once.
            log.info("a pooled read connection failed; checking the pool and retrying", error=str(exc))
            await self._pool.check()
            return await self._fetch(read.sql, values)

    async def _fetch(self, sql: str, values: dict[str, Any]) -> Any:
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=namedtuple_row)
            await cursor.execute(sql, values)
            return await cursor.fetchone()


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same pool without transactions: for single-statement reads, it saves the BEGIN and ROLLBACK round trips."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _migrations(directory: Path) -> list[tuple[int, str, str]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise RuntimeError(f"badly named migration {path}")
        found.append((int(match.group(1)), path.name, path.read_text()))
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration versions in {directory}")
    return found


async def _execute_script(conn: AsyncConnection, sql: str) -> None:
    # psycopg runs several statements in one execute when there are no parameters.
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await driver.execute(sql)


async def migrate(engine: AsyncEngine, schema: str, directory: Path, *, with_outbox: bool = True) -> None:
    """Applies the schema's pending migrations in order, each in its own transaction.

    An advisory lock per schema lets many replicas start at once; version 0 is the shared outbox table.
    """
    migrations = _migrations(directory)
    if with_outbox:
        migrations.insert(0, (0, "0000_outbox.sql", OUTBOX_DDL.read_text()))
    lock_key = zlib.crc32(f"herald-migrate-{schema}".encode())
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key})
        try:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.execute(
                text(
                    f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                    "version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            await conn.commit()
            rows = await conn.execute(text(f'SELECT version FROM "{schema}".schema_migrations'))
            applied = {r[0] for r in rows}
            await conn.commit()
            for version, name, sql in migrations:
                if version in applied:
                    continue
                await conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))
                await _execute_script(conn, sql)
                await conn.execute(
                    text(f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES (:v, :n)'),
                    {"v": version, "n": name},
                )
                await conn.commit()
                log.info("migration applied", schema=schema, migration=name)
        finally:
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})
            await conn.commit()
