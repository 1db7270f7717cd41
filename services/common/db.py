"""The database side every service shares: an async SQLAlchemy engine and a versioned, per-schema migration runner."""

from __future__ import annotations

import json
import re
import zlib
from collections import namedtuple
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import psycopg
import sqlalchemy.exc
import structlog
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from services.common.config import Settings
from services.common.logging import RepeatingFailure

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
    """A SQLAlchemy Core SELECT compiled once to asyncpg's SQL ($n parameters), with the order of its parameters
    and the values of its literal ones."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]

    @classmethod
    def of(cls, statement: ClauseElement) -> CompiledRead:
        compiled = cast(SQLCompiler, statement.compile(dialect=asyncpg_dialect.dialect()))
        return cls(str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self.defaults[name] for name in self.names]


class ReadPool:
    """Single-statement reads on plain asyncpg connections, for the hottest queries (GetCampaign).

    SQLAlchemy's per-call work (checkout with a ping, execution context, result processing) costs
    about four times the query itself there, and psycopg's async waiting (a reader added and removed
    on the event loop for every wait) another third; asyncpg reads the socket as a protocol and
    prepares each statement once per connection. A connection is checked only when a read on it fails.
    """

    def __init__(self, settings: Settings, size: int, *, name: str) -> None:
        self._dsn, self._connect_args = asyncpg_connection(settings.sqlalchemy_url())
        self._size = size
        # Shown in pg_stat_activity, so an operator can tell these connections from the main pool's.
        self._connect_args.setdefault("server_settings", {})["application_name"] = f"herald-{name}"
        self._pool: asyncpg.Pool | None = None
        self._rows: dict[str, Any] = {}
        # While PostgreSQL is away every read fails: logged once per interval with a count, not per read.
        self._failing = RepeatingFailure(
            "a pooled read connection failed; dropping the pool's connections and retrying"
        )

    async def open(self) -> None:
        # Connections are made on first use: the service starts even while PostgreSQL does not.
        self._pool = asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._size,
            max_inactive_connection_lifetime=1800,
            init=_init_connection,
            **self._connect_args,
            # The reads leave no session state behind (no transactions, locks, LISTEN or SET), so the
            # reset asyncpg runs on every release, one more round trip to PostgreSQL, is skipped.
            reset=_keep_session,
        )
        await self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def one_or_none(self, read: CompiledRead, **params: Any) -> Any:
        """The only row of the read (a named tuple), or None; a connection PostgreSQL dropped is replaced once."""
        assert self._pool is not None, "ReadPool.open() first"
        arguments = read.arguments(params)
        try:
            record = await self._fetchrow(read.sql, arguments)
        except _CONNECTION_LOST as exc:
            # A restarted PostgreSQL leaves every pooled connection dead: drop them all, then retry once.
            self._failing.failed(exc)
            await self._pool.expire_connections()
            record = await self._fetchrow(read.sql, arguments)
        else:
            self._failing.recovered()
        return None if record is None else self._row_type(read.sql, record)._make(record.values())

    async def _fetchrow(self, sql: str, arguments: list[Any]) -> asyncpg.Record | None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            try:
                return await conn.fetchrow(sql, *arguments)
            except _CONNECTION_LOST:
                # Its protocol may be in a state nobody knows (a termination that arrived mid-read):
                # closed here, it never goes back to the pool.
                conn.terminate()
                raise

    def _row_type(self, sql: str, record: asyncpg.Record) -> Any:
        """A named tuple type with the read's columns, made on its first row (GetCampaign's code reads
        columns as attributes, as on SQLAlchemy's rows)."""
        row_type = self._rows.get(sql)
        if row_type is None:
            row_type = self._rows[sql] = namedtuple("Row", record.keys(), rename=True)
        return row_type


# URL parameters asyncpg reads itself; it sends any other one to PostgreSQL as a setting.
_ASYNCPG_PARAMETERS = frozenset(
    "host port user password passfile database dbname service sslmode sslcert sslkey sslrootcert sslcrl "
    "sslpassword sslnegotiation ssl_min_protocol_version ssl_max_protocol_version target_session_attrs "
    "krbsrvname gsslib".split()
)
# libpq's connection parameters that are no PostgreSQL setting: sending them would fail the connection.
_LIBPQ_ONLY = frozenset(
    "connect_timeout options fallback_application_name keepalives keepalives_idle keepalives_interval "
    "keepalives_count tcp_user_timeout channel_binding gssencmode gssdelegation requiressl sslcompression "
    "sslsni sslcertmode require_auth load_balance_hosts hostaddr replication".split()
)


def asyncpg_connection(url: str) -> tuple[str, dict[str, Any]]:
    """DATABASE_URL (any libpq URL) as an asyncpg DSN and connect arguments.

    asyncpg passes URL parameters it does not know to PostgreSQL as settings, so libpq-only ones
    would fail every connection: connect_timeout becomes asyncpg's timeout, options' `-c name=value`
    become settings, and the others (keepalives, channel_binding, ...) are left out with a log line.
    """
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
    kept: list[tuple[str, str]] = []
    args: dict[str, Any] = {}
    settings: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _ASYNCPG_PARAMETERS or key not in _LIBPQ_ONLY:
            kept.append((key, value))
        elif key == "connect_timeout":
            args["timeout"] = float(value)
        elif key == "options":
            settings.update(_settings_in_options(value))
        else:
            log.info("a libpq connection parameter is not used by the read pool", parameter=key)
    if settings:
        args["server_settings"] = settings
    return urlunsplit(parts._replace(query=urlencode(kept))), args


def _settings_in_options(options: str) -> dict[str, str]:
    """libpq's `options` ("-c name=value", "-cname=value" or "--name=value", space-separated) as settings."""
    found: dict[str, str] = {}
    words = iter(options.split())
    for word in words:
        if word == "-c":
            pair = next(words, "")
        elif word.startswith(("-c", "--")):
            pair = word[2:]
        else:
            continue
        name, equals, value = pair.partition("=")
        if name and equals:
            found[name.replace("-", "_")] = value
    return found


# A connection PostgreSQL closed (restart, failover, pg_terminate_backend) or cannot accept yet; not a
# cancelled query (statement_timeout), which a retry would only make wait twice as long. A termination
# that reaches asyncpg while it starts a read can also surface as InternalClientError ("cannot switch
# to state 12; another operation is in progress"; seen over TCP under load, and asyncpg#1069).
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


# SQLSTATEs that mean the server cannot be used (it is down, restarting, full), whatever the statement.
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "53300")


def is_connection_failure(exc: BaseException) -> bool:
    """Whether `exc` says that PostgreSQL cannot be reached or used now (refused, terminated, restarting, too many
    connections, no pooled connection in time), as opposed to a fault of the statement (a constraint, bad SQL, a
    cancelled query): the first is worth retrying later, the second is not.

    SQLAlchemy's wrapper is looked through (its `orig`), and so is an explicit `raise ... from` cause.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.TimeoutError):  # the pool had no connection within pool_timeout
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError):
            if current.connection_invalidated:
                return True
            current = current.orig if current.orig is not None else current.__cause__
            continue
        if isinstance(current, (psycopg.Error, asyncpg.PostgresError)):
            state = getattr(current, "sqlstate", None) or ""
            if state.startswith("08") or state in _UNAVAILABLE_STATES:
                return True
            # psycopg's own OperationalErrors without a SQLSTATE: it could not connect, or lost the connection.
            return isinstance(current, psycopg.OperationalError) and not state
        if isinstance(current, (asyncpg.InterfaceError, asyncpg.InternalClientError)):
            return "connection" in str(current)  # "connection is closed", "connection was closed in the middle..."
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        current = current.__cause__
    return False


async def _keep_session(conn: asyncpg.Connection) -> None:
    return None


async def _init_connection(conn: asyncpg.Connection) -> None:
    # json and jsonb as Python values, as psycopg and SQLAlchemy give them everywhere else.
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


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
