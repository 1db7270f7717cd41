"""SQL for imports: the job table on the service's engine, and the row writer (COPY + one upsert per batch) on a connection of its own."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience.import_domain import MAX_REPORTED_ROWS, RejectedRow

SCHEMA = "audience"
metadata = MetaData(schema=SCHEMA)

imports = Table(
    "imports",
    metadata,
    Column("import_id", BigInteger, primary_key=True),
    Column("list_id", BigInteger, nullable=False),
    Column("owner_user_id", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("format", JSONB, nullable=False),
    Column("update_duplicates", Boolean, nullable=False),
    Column("add_to_suppression", Boolean, nullable=False),
    Column("trigger_actions", Boolean, nullable=False),
    Column("tags", JSONB, nullable=False),
    Column("source_url", Text, nullable=False),
    Column("status_webhook_url", Text, nullable=False),
    Column("source_bytes", BigInteger, nullable=False),
    Column("total_rows", BigInteger, nullable=False),
    Column("imported", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Column("duplicates", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("rejected_rows", JSONB, nullable=False),
    Column("rows_done", BigInteger, nullable=False),
    Column("failure", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("claimed_by", Text, nullable=False),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

import_sources = Table(
    "import_sources",
    metadata,
    Column("import_id", BigInteger, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

_STALE = text("now() - make_interval(secs => :stale_seconds)")


async def insert_import(conn: AsyncConnection, **values: Any) -> Row[Any]:
    """A new import job, as stored."""
    row = (await conn.execute(insert(imports).values(**values).returning(imports))).one()
    return row


async def insert_source_piece(conn: AsyncConnection, import_id: int, seq: int, data: bytes) -> None:
    await conn.execute(insert(import_sources).values(import_id=import_id, seq=seq, data=data))


async def source_piece(conn: AsyncConnection, import_id: int, seq: int) -> bytes | None:
    """Piece `seq` of a stored job's source, or None past the last one."""
    query = select(import_sources.c.data).where(
        import_sources.c.import_id == import_id, import_sources.c.seq == seq
    )
    data: bytes | None = (await conn.execute(query)).scalar_one_or_none()
    return data


async def import_by_id(conn: AsyncConnection, import_id: int, owner: int | None) -> Row[Any] | None:
    """An import the caller may see (owner None: any), or None."""
    query = select(imports).where(imports.c.import_id == import_id)
    if owner is not None:
        query = query.where(imports.c.owner_user_id == owner)
    return (await conn.execute(query)).one_or_none()


async def claim_stored_job(
    conn: AsyncConnection, worker: str, *, stale_seconds: float, max_attempts: int
) -> Row[Any] | None:
    """Takes the oldest stored job that is Pending, or Running with a stale heartbeat (its worker died).

    SKIP LOCKED lets every replica claim at once without taking the same job twice.
    """
    candidate = (
        select(imports.c.import_id)
        .where(
            imports.c.origin == "stored",
            imports.c.attempts < max_attempts,
            or_(
                imports.c.status == "Pending",
                and_(imports.c.status == "Running", imports.c.heartbeat_at < _STALE),
            ),
        )
        .order_by(imports.c.import_id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claim = (
        update(imports)
        .where(imports.c.import_id == candidate)
        .values(
            status="Running",
            claimed_by=worker,
            heartbeat_at=func.now(),
            started_at=func.coalesce(imports.c.started_at, func.now()),
            attempts=imports.c.attempts + 1,
        )
        .returning(imports)
    )
    return (await conn.execute(claim, {"stale_seconds": stale_seconds})).one_or_none()


async def fail_abandoned_jobs(conn: AsyncConnection, *, stale_seconds: float, max_attempts: int) -> list[int]:
    """Marks Failed the jobs nobody can finish: streams whose replica died, and stored jobs whose
    max_attempts attempts all ended in an error or a dead worker. Returns their ids."""
    abandoned = or_(
        and_(imports.c.origin == "stream", imports.c.status == "Running", imports.c.heartbeat_at < _STALE),
        and_(
            imports.c.origin == "stored",
            imports.c.attempts >= max_attempts,
            or_(
                imports.c.status == "Pending",
                and_(imports.c.status == "Running", imports.c.heartbeat_at < _STALE),
            ),
        ),
    )
    failure: ColumnElement[str] = literal_column(
        "CASE WHEN origin = 'stream' THEN 'the import stream was interrupted (the service stopped); rows "
        "up to ' || rows_done || ' were written' ELSE 'the import was given up after ' || attempts || "
        "' attempts that ended in an error or a dead worker (see the service log); rows up to ' || rows_done "
        "|| ' were written' END"
    )
    query = (
        update(imports)
        .where(abandoned)
        .values(status="Failed", failure=failure, finished_at=func.now(), claimed_by="")
        .returning(imports.c.import_id)
    )
    ids = list((await conn.execute(query, {"stale_seconds": stale_seconds})).scalars())
    if ids:
        await conn.execute(delete(import_sources).where(import_sources.c.import_id.in_(ids)))
    return ids


async def beat(conn: AsyncConnection, worker: str, import_ids: Sequence[int]) -> None:
    """Shows that this worker is still running these imports."""
    await conn.execute(
        update(imports)
        .where(imports.c.import_id.in_(import_ids), imports.c.claimed_by == worker, imports.c.status == "Running")
        .values(heartbeat_at=func.now())
    )


async def release_job(conn: AsyncConnection, import_id: int, worker: str, *, count_attempt: bool) -> None:
    """Hands a stored job back, Pending again, so that the next worker resumes it at once. An attempt
    stopped by an error counts towards the job's limit; one stopped because its worker is stopping does not."""
    await conn.execute(
        update(imports)
        .where(imports.c.import_id == import_id, imports.c.claimed_by == worker, imports.c.status == "Running")
        .values(status="Pending", claimed_by="", attempts=imports.c.attempts - (0 if count_attempt else 1))
    )


async def finish_import(conn: AsyncConnection, import_id: int, worker: str, *, failure: str | None) -> bool:
    """Completed (failure None) or Failed; False when the job is no longer this worker's."""
    done = await conn.execute(
        update(imports)
        .where(imports.c.import_id == import_id, imports.c.claimed_by == worker, imports.c.status == "Running")
        .values(
            status="Completed" if failure is None else "Failed",
            failure=failure or "",
            finished_at=func.now(),
            claimed_by="",
        )
    )
    await conn.execute(delete(import_sources).where(import_sources.c.import_id == import_id))
    return bool(done.rowcount)


# --- the row writer -----------------------------------------------------------------------------------------


class ClaimLost(Exception):
    """The import is no longer this worker's to write (another took it over, or the list was deleted)."""


@dataclass(frozen=True)
class ImportTarget:
    """What the writer needs to know of the job it writes for."""

    import_id: int
    list_id: int
    owner_user_id: int
    update_duplicates: bool
    add_to_suppression: bool
    worker: str
    # A double opt-in list: new subscribers are Opt-In Pending and are sent the list's confirmation email.
    pending: bool = False


@dataclass(frozen=True)
class PendingSubscriber:
    """A subscriber a batch added Opt-In Pending, to be sent the list's confirmation email."""

    subscriber_id: int
    email_address: str
    first_name: str
    last_name: str
    subscription_date: datetime | None = None


@dataclass(frozen=True)
class Confirmations:
    """How a writer asks for the confirmation emails of the subscribers it adds Opt-In Pending: `rows` makes the
    outbox rows (written in the batch's transaction), `committed` wakes the relay once it has committed."""

    rows: Callable[[Sequence[PendingSubscriber], datetime], list[dict[str, object]]]
    committed: Callable[[], None]


@dataclass(frozen=True)
class UniqueColumn:
    """A unique custom field an import fills: its position among a row's custom values, its key and name."""

    position: int
    key: str
    name: str


@dataclass
class BatchCounts:
    """What became of one batch's rows."""

    imported: int = 0
    updated: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class WrittenFields:
    """What a writer does beyond names and addresses: the defaults a new subscriber gets, the unique fields it
    checks against the list, and the confirmation requests of a double opt-in list."""

    defaults: tuple[tuple[str, str], ...] = ()
    unique: tuple[UniqueColumn, ...] = ()
    confirmations: Confirmations | None = None


def _rejected_json(rows: Sequence[RejectedRow]) -> str:
    return json.dumps([{"row": r.row_number, "reason": r.reason, "raw": r.raw} for r in rows], ensure_ascii=False)


class RowWriter:
    """Writes one import's rows into audience.subscribers, a batch per transaction, with its progress.

    Each batch is COPYed into a temporary table and written by one set-based statement:
    DISTINCT ON keeps an address's first row in the batch, `import_seen` (every address this
    import has written) turns later rows of an address into duplicates, and INSERT … ON CONFLICT
    (list_id, email_key) inserts new subscribers and updates (or leaves) existing ones; `xmax = 0`
    tells an inserted row from an updated one. The progress update is in the same transaction, so
    a job re-run after a crash resumes exactly after the last committed batch.

    It uses a connection of its own so that a long import never holds one of the service's pool.
    """

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        target: ImportTarget,
        custom_ids: Sequence[str],
        reported: int,
        fields: WrittenFields,
    ) -> None:
        self.conn = conn
        self.target = target
        self.custom_ids = list(custom_ids)  # the custom values at the end of each row are for these fields
        self.reported = reported  # rejected rows already in the report
        self.fields = fields
        self._upsert = _upsert_statement(target.update_duplicates, len(custom_ids))

    @classmethod
    async def open(
        cls,
        conninfo: str,
        target: ImportTarget,
        custom_ids: Sequence[str],
        reported: int,
        fields: WrittenFields | None = None,
    ) -> RowWriter:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        try:
            # Sorting a batch (DISTINCT ON, the insert's key order) fits in memory; the temporary
            # tables (a batch, and one key per address of the file) stay in local buffers; and a
            # batch's commit need not wait for the disk, since its progress commits with it (a
            # crash loses both, and the job resumes before that batch).
            await conn.execute("SET work_mem = '64MB'")
            await conn.execute("SET temp_buffers = '128MB'")
            await conn.execute("SET synchronous_commit = off")
            custom_columns = sql.SQL("").join(
                sql.SQL(", c{} text").format(sql.SQL(str(i))) for i in range(len(custom_ids))
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE import_stage (row_number bigint, email_address text, email_key text, "
                    "first_name text, last_name text{}) ON COMMIT DELETE ROWS"
                ).format(custom_columns)
            )
            await conn.execute("CREATE TEMP TABLE import_seen (email_key text PRIMARY KEY, row_number bigint)")
            await conn.set_autocommit(False)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, target, custom_ids, reported, fields or WrittenFields())

    async def close(self) -> None:
        await self.conn.close()

    async def _stage(self, rows: Sequence[tuple[object, ...]]) -> None:
        async with self.conn.cursor().copy("COPY import_stage FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)

    async def replay(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Remembers the addresses of rows an earlier run already wrote (resuming a job): later rows
        with those addresses are duplicates within the file."""
        async with self.conn.transaction():
            await self._stage(rows)
            await self.conn.execute(
                "INSERT INTO import_seen (email_key, row_number) "
                "SELECT DISTINCT ON (email_key) email_key, row_number FROM import_stage "
                "ORDER BY email_key, row_number ON CONFLICT (email_key) DO NOTHING"
            )

    async def write(
        self,
        rows: Sequence[tuple[object, ...]],
        raws: Sequence[str],
        rejected: Sequence[RejectedRow],
        *,
        data_rows: int,
        last_row: int,
    ) -> BatchCounts:
        """Writes a batch and the job's progress in one transaction; ClaimLost when the job is no longer ours."""
        target = self.target
        counts = BatchCounts()
        rejected = list(rejected)
        confirming = False
        try:
            async with self.conn.transaction():
                fresh = 0
                if rows and self.fields.unique:
                    await self._stage(rows)
                    taken = await self._taken_unique_values(rows, raws)
                    if taken:
                        rejected += taken
                        failed = {r.row_number for r in taken}
                        kept = [i for i, row in enumerate(rows) if row[0] not in failed]
                        # _taken_unique_values removed them from the stage too.
                        rows, raws = [rows[i] for i in kept], [raws[i] for i in kept]
                elif rows:
                    await self._stage(rows)
                report = list(rejected)
                if rows:
                    now = datetime.now(UTC)
                    cursor = await self.conn.execute(
                        self._upsert,
                        {
                            "list_id": target.list_id,
                            "owner": target.owner_user_id,
                            "source_ref": f"import {target.import_id}"[:64],
                            "custom_ids": self.custom_ids,
                            "defaults": json.dumps(dict(self.fields.defaults)),
                            "default_keys": [key for key, _ in self.fields.defaults],
                            "status": "Opt-In Pending" if target.pending else "Subscribed",
                            "requested": now if target.pending else None,
                        },
                    )
                    result = await cursor.fetchone()
                    assert result is not None
                    fresh, counts.imported, counts.updated = (int(v) for v in result[:3])
                    counts.duplicates = len(rows) - counts.imported - counts.updated
                    if target.pending and result[3]:
                        confirming = await self._request_confirmations(result[3:], now)
                    if fresh < len(rows) and self.reported + len(report) < MAX_REPORTED_ROWS:
                        report += await self._duplicate_rows(rows, raws, MAX_REPORTED_ROWS - self.reported)
                    if target.add_to_suppression:
                        # The user's own entry: one a bounce made becomes manual (a delivery keeps it).
                        await self.conn.execute(
                            "UPDATE audience.suppressions SET reason = 'manual', campaign_id = 0, created_at = now() "
                            "WHERE owner_user_id = %(owner)s AND reason = 'bounce' "
                            "AND email_key IN (SELECT email_key FROM import_stage)",
                            {"owner": target.owner_user_id},
                        )
                        await self.conn.execute(
                            "INSERT INTO audience.suppressions (owner_user_id, email_key) "
                            "SELECT DISTINCT %(owner)s::bigint, email_key FROM import_stage "
                            "ON CONFLICT DO NOTHING",
                            {"owner": target.owner_user_id},
                        )
                report.sort(key=lambda r: r.row_number)
                report = report[: max(0, MAX_REPORTED_ROWS - self.reported)]
                cursor = await self.conn.execute(
                    "UPDATE audience.imports SET total_rows = total_rows + %(data_rows)s, "
                    "imported = imported + %(imported)s, updated = updated + %(updated)s, "
                    "duplicates = duplicates + %(duplicates)s, rejected = rejected + %(rejected)s, "
                    "rejected_rows = rejected_rows || %(report)s::jsonb, rows_done = %(last_row)s, "
                    "heartbeat_at = now() "
                    "WHERE import_id = %(import_id)s AND claimed_by = %(worker)s AND status = 'Running'",
                    {
                        "data_rows": data_rows,
                        "imported": counts.imported,
                        "updated": counts.updated,
                        "duplicates": counts.duplicates,
                        "rejected": len(rejected),
                        "report": _rejected_json(report),
                        "last_row": last_row,
                        "import_id": target.import_id,
                        "worker": target.worker,
                    },
                )
                if cursor.rowcount != 1:
                    raise ClaimLost(f"import {target.import_id} is no longer run by {target.worker}")
        except psycopg.errors.ForeignKeyViolation as exc:
            raise ClaimLost(f"the list of import {target.import_id} was deleted") from exc
        if confirming and self.fields.confirmations is not None:
            self.fields.confirmations.committed()
        self.reported += len(report)
        return counts

    async def _request_confirmations(self, columns: Sequence[Any], now: datetime) -> bool:
        """Writes the confirmation requests of the subscribers the batch added Opt-In Pending into the outbox,
        in the batch's transaction (so a batch re-run after a crash asks for none twice)."""
        confirmations = self.fields.confirmations
        if confirmations is None:
            return False
        pending = [PendingSubscriber(*values) for values in zip(*columns, strict=True)]
        outbox_rows = confirmations.rows(pending, now)
        async with self.conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO audience.outbox (subject, msg_id, payload) VALUES (%(s)s, %(m)s, %(p)s) "
                "ON CONFLICT (msg_id) DO NOTHING",
                outbox_rows,
            )
        return bool(outbox_rows)

    async def _taken_unique_values(
        self, rows: Sequence[tuple[object, ...]], raws: Sequence[str]
    ) -> list[RejectedRow]:
        """The staged rows whose value of a unique field another subscriber of the list has, or an earlier row of
        the file with another address (compared case-insensitively after trimming, as subscriber.create does).
        The list's uniqueness lock is held until the batch commits, like subscriber.create's."""
        await self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))",
            {"key": f"audience.unique_values:{self.target.list_id}"},
        )
        index = {row[0]: i for i, row in enumerate(rows)}
        failed: list[RejectedRow] = []
        for column in self.fields.unique:
            value = sql.SQL("c{}").format(sql.SQL(str(column.position)))
            # First the values other subscribers of the list have, then (among the rows left) those an
            # earlier row of the file has: a row refused for the first reason holds no value for the second.
            for query in (_TAKEN_BY_SUBSCRIBERS, _TAKEN_IN_FILE):
                cursor = await self.conn.execute(
                    query.format(value=value), {"key": column.key, "list_id": self.target.list_id}
                )
                found = await cursor.fetchall()
                for row_number, earlier in found:
                    holder = "another subscriber" if earlier is None else f"row {earlier} of the file"
                    reason = f"custom field {column.key} ({column.name}) must be unique: {holder} has that value"
                    failed.append(RejectedRow(row_number, reason, raws[index[row_number]][:1000]))
                if found:
                    await self.conn.execute(
                        "DELETE FROM import_stage WHERE row_number = ANY(%(rows)s)",
                        {"rows": [r for r, _ in found]},
                    )
        return failed

    async def _duplicate_rows(
        self, rows: Sequence[tuple[object, ...]], raws: Sequence[str], room: int
    ) -> list[RejectedRow]:
        """The batch's rows whose address an earlier row of the file already has (staged rows only)."""
        cursor = await self.conn.execute(
            "SELECT st.row_number, k.row_number FROM import_stage st JOIN import_seen k USING (email_key) "
            "WHERE k.row_number <> st.row_number ORDER BY st.row_number LIMIT %(room)s",
            {"room": room},
        )
        found = await cursor.fetchall()
        if not found:
            return []
        index = {row[0]: i for i, row in enumerate(rows)}
        result = []
        for row_number, first in found:
            i = index[row_number]
            reason = f"duplicate: {rows[i][1]} is already in row {first} of the file"
            result.append(RejectedRow(row_number, reason, raws[i][:1000]))
        return result


# A staged row's value of a unique field (column {value}, key %(key)s) that another subscriber of the list has
# (another address; compared case-insensitively after trimming, as subscriber.create compares).
_TAKEN_BY_SUBSCRIBERS = sql.SQL(
    """
    SELECT DISTINCT st.row_number, NULL::bigint
    FROM import_stage st JOIN audience.subscribers s
        ON s.list_id = %(list_id)s AND s.custom_fields ? %(key)s AND s.email_key <> st.email_key
        AND lower(btrim(s.custom_fields ->> %(key)s)) = lower(btrim(st.{value}))
    WHERE st.{value} <> ''
    """
)
# ... or that an earlier staged row with another address has (the first row of the file to hold it keeps it).
_TAKEN_IN_FILE = sql.SQL(
    """
    SELECT st.row_number, min(e.row_number)
    FROM import_stage st JOIN import_stage e
        ON e.row_number < st.row_number AND e.email_key <> st.email_key
        AND lower(btrim(e.{value})) = lower(btrim(st.{value}))
    WHERE st.{value} <> ''
    GROUP BY st.row_number
    """
)


def _upsert_statement(update_duplicates: bool, width: int) -> sql.Composed:
    custom: sql.Composable
    # A new subscriber gets the list fields' defaults for the fields no column fills (an update keeps its own).
    if width:
        values = sql.SQL(", ").join(sql.SQL("NULLIF(f.c{}, '')").format(sql.SQL(str(i))) for i in range(width))
        custom = sql.SQL(
            "%(defaults)s::jsonb || jsonb_strip_nulls(jsonb_object(%(custom_ids)s::text[], ARRAY[{}]))"
        ).format(values)
    else:
        custom = sql.SQL("%(defaults)s::jsonb")
    if update_duplicates:
        # Empty names and custom values never overwrite what a subscriber has; status and the
        # subscription stay as they are (an import does not re-subscribe anyone).
        conflict = sql.SQL(
            "DO UPDATE SET first_name = CASE WHEN EXCLUDED.first_name <> '' THEN EXCLUDED.first_name "
            "ELSE s.first_name END, last_name = CASE WHEN EXCLUDED.last_name <> '' THEN EXCLUDED.last_name "
            "ELSE s.last_name END, updated_at = now(), "
            "custom_fields = s.custom_fields || (EXCLUDED.custom_fields - %(default_keys)s::text[])"
        )
    else:
        conflict = sql.SQL("DO NOTHING")
    return sql.SQL(
        """
        WITH firsts AS (
            SELECT DISTINCT ON (email_key) * FROM import_stage ORDER BY email_key, row_number
        ), fresh AS (
            INSERT INTO import_seen (email_key, row_number)
            SELECT email_key, row_number FROM firsts
            ON CONFLICT (email_key) DO NOTHING
            RETURNING email_key
        ), written AS (
            INSERT INTO audience.subscribers AS s (list_id, owner_user_id, email_address, email_key,
                first_name, last_name, custom_fields, status, bounce_type, subscription_date, source,
                source_ref, opt_in_requested_at)
            SELECT %(list_id)s, %(owner)s, f.email_address, f.email_key, f.first_name, f.last_name, {custom},
                %(status)s, 'Not Bounced', now(), 'CSVImport', %(source_ref)s, %(requested)s::timestamptz
            FROM firsts f JOIN fresh USING (email_key)
            -- One lock order for every writer, so two imports into one list cannot deadlock.
            ORDER BY f.email_key
            ON CONFLICT (list_id, email_key) {conflict}
            RETURNING xmax = 0 AS inserted, s.subscriber_id, s.email_address, s.first_name, s.last_name,
                s.subscription_date
        ), pending AS (
            -- The subscribers added Opt-In Pending (on a double opt-in list): each is sent the confirmation.
            SELECT * FROM written WHERE inserted AND %(requested)s::timestamptz IS NOT NULL
        )
        SELECT (SELECT count(*) FROM fresh), count(*) FILTER (WHERE inserted),
            count(*) FILTER (WHERE NOT inserted),
            (SELECT array_agg(subscriber_id ORDER BY subscriber_id) FROM pending),
            (SELECT array_agg(email_address ORDER BY subscriber_id) FROM pending),
            (SELECT array_agg(first_name ORDER BY subscriber_id) FROM pending),
            (SELECT array_agg(last_name ORDER BY subscriber_id) FROM pending),
            (SELECT array_agg(subscription_date ORDER BY subscriber_id) FROM pending)
        FROM written
        """
    ).format(custom=custom, conflict=conflict)
