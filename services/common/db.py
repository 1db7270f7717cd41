"""The database side every service shares: an async SQLAlchemy engine and a versioned, per-schema migration runner."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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
