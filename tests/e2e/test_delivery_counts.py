"""The per-campaign counts that triggers on delivery's queue keep (migration 0005), on the real PostgreSQL.

Each test migrates the delivery schema into a schema of its own on the backing database, writes queue
rows with the kinds of statement the send pipeline runs (and some it never runs, such as deletes), and
checks after every statement that the kept counts equal a fresh count over the queue rows.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from sqlalchemy.ext.asyncio import create_async_engine

from services.common import db
from services.common.config import Settings
from tests.conftest import Backing

pytestmark = pytest.mark.asyncio(loop_scope="session")

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "delivery" / "migrations"
COUNTS_MIGRATION = "0005_recipient_counts.sql"
T0 = datetime(2025, 6, 1, 10, 0, 0, tzinfo=UTC)

# (rows, Sent, Failed, first send, last send) of one campaign.
Counts = tuple[int, int, int, datetime | None, datetime | None]
NOTHING: Counts = (0, 0, 0, None, None)

KEPT = "SELECT campaign_id, total, sent, failed, first_sent_at, last_sent_at FROM {q}.recipient_counts"
COUNTED = (
    "SELECT campaign_id, count(*), count(*) FILTER (WHERE status = 'Sent'), "
    "count(*) FILTER (WHERE status = 'Failed'), min(sent_at) FILTER (WHERE status = 'Sent'), "
    "max(sent_at) FILTER (WHERE status = 'Sent') FROM {q}.recipients GROUP BY campaign_id"
)


@dataclass
class Queue:
    """A migrated delivery schema of one test, reached with the default search_path as the pipeline does."""

    conn: psycopg.AsyncConnection[Any]
    schema: str
    url: str

    def statement(self, text: str) -> sql.Composed:
        """The statement with {q} naming this test's schema."""
        return sql.SQL(text).format(q=sql.Identifier(self.schema))  # type: ignore[arg-type]

    async def run(self, text: str, params: dict[str, Any] | None = None) -> int:
        """Runs a statement; returns how many rows it changed."""
        cursor = await self.conn.execute(self.statement(text), params)
        return cursor.rowcount

    async def figures(self, text: str) -> dict[int, Counts]:
        cursor = await self.conn.execute(self.statement(text))
        return {
            int(row[0]): (int(row[1]), int(row[2]), int(row[3]), row[4], row[5]) for row in await cursor.fetchall()
        }

    async def enqueue(self, campaign_ids: list[int], count: int, *, start: int = 1) -> None:
        """`count` Pending rows for each campaign, all in one INSERT … SELECT (batches of 10)."""
        await self.run(
            "INSERT INTO {q}.recipients (campaign_id, owner_user_id, subscriber_id, email_address, domain, batch_id) "
            "SELECT c, 7, n, 'r' || n || '@d' || (n %% 3) || '.example', 'd' || (n %% 3) || '.example', "
            "1 + (n - 1) / 10 "
            "FROM unnest(CAST(%(c)s AS bigint[])) AS c, generate_series(%(s)s, %(s)s + %(n)s - 1) AS n",
            {"c": campaign_ids, "s": start, "n": count},
        )

    async def assert_counts_agree(self) -> dict[int, Counts]:
        """The kept counts equal a fresh count over the queue rows (a campaign without rows keeps zeros)."""
        async with self.conn.transaction():
            await self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            kept = await self.figures(KEPT)
            counted = await self.figures(COUNTED)
        assert {c: figures for c, figures in kept.items() if figures != NOTHING} == counted
        return counted


async def migrate(url: str, schema: str, directory: Path) -> None:
    engine = create_async_engine(Settings(database_url=url).sqlalchemy_url())
    try:
        await db.migrate(engine, schema, directory)
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def bare_queue(backing: Backing) -> AsyncIterator[Queue]:
    """A schema of its own, not migrated yet."""
    schema = f"counts_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(backing.database_url, autocommit=True) as conn:
        try:
            yield Queue(conn, schema, backing.database_url)
        finally:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest_asyncio.fixture(loop_scope="session")
async def queue(bare_queue: Queue) -> Queue:
    await migrate(bare_queue.url, bare_queue.schema, MIGRATIONS)
    return bare_queue


async def test_the_migration_counts_the_rows_queued_before_it(bare_queue: Queue, tmp_path: Path) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in MIGRATIONS.glob("*.sql"):
        if path.name < COUNTS_MIGRATION:
            shutil.copy(path, before / path.name)
    await migrate(bare_queue.url, bare_queue.schema, before)
    await bare_queue.enqueue([1, 2], 30)
    await bare_queue.run(
        "UPDATE {q}.recipients SET status = CASE WHEN subscriber_id %% 3 = 0 THEN 'Sent' ELSE 'Failed' END, "
        "sent_at = CASE WHEN subscriber_id %% 3 = 0 THEN %(t)s + make_interval(secs => subscriber_id) END "
        "WHERE campaign_id = 1 AND subscriber_id <= 20",
        {"t": T0},
    )

    await migrate(bare_queue.url, bare_queue.schema, MIGRATIONS)

    counted = await bare_queue.assert_counts_agree()
    assert counted == {
        1: (30, 6, 14, T0 + timedelta(seconds=3), T0 + timedelta(seconds=18)),
        2: (30, 0, 0, None, None),
    }


async def test_counts_follow_every_statement_the_send_pipeline_runs(queue: Queue) -> None:
    # Queueing: one statement for two campaigns.
    await queue.enqueue([10, 11], 40)
    assert await queue.assert_counts_agree() == {10: (40, 0, 0, None, None), 11: (40, 0, 0, None, None)}

    # A worker claims a window of batch 1 (Pending → Sending): nothing counted changes.
    claimed = await queue.run(
        "UPDATE {q}.recipients SET status = 'Sending', claimed_by = 'w#1', claimed_at = now() "
        "WHERE campaign_id = 10 AND batch_id = 1"
    )
    assert claimed == 10
    await queue.assert_counts_agree()

    # One statement records the window (Sent and Failed), puts a lost claim back and claims the next
    # window, as claim_store.recorded_and_claimed does with three UPDATEs of the queue in one WITH.
    await queue.run(
        """
        WITH recorded AS (
            UPDATE {q}.recipients
            SET status = CASE WHEN subscriber_id %% 4 = 0 THEN 'Failed' ELSE 'Sent' END,
                sent_at = CASE WHEN subscriber_id %% 4 = 0 THEN NULL ELSE %(t)s + make_interval(secs => subscriber_id) END
            WHERE campaign_id = 10 AND batch_id = 1 AND status = 'Sending' AND subscriber_id <> 5
            RETURNING recipient_id),
        lost AS (
            UPDATE {q}.recipients SET status = 'Pending', claimed_by = NULL
            WHERE campaign_id = 10 AND batch_id = 1 AND subscriber_id = 5
            RETURNING recipient_id),
        claimed AS (
            UPDATE {q}.recipients SET status = 'Sending', claimed_by = 'w#1'
            WHERE campaign_id = 10 AND batch_id = 2
            RETURNING recipient_id)
        SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM lost), (SELECT count(*) FROM claimed)
        """,
        {"t": T0},
    )
    assert (await queue.assert_counts_agree())[10] == (
        40,
        7,
        2,
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=10),
    )

    # A stale claim is resolved as ambiguous (Sending → Failed).
    await queue.run(
        "UPDATE {q}.recipients SET status = 'Failed', failed_at = now(), last_error = 'ambiguous: worker stopped' "
        "WHERE campaign_id = 10 AND batch_id = 2 AND status = 'Sending'"
    )
    assert (await queue.assert_counts_agree())[10][:3] == (40, 7, 12)

    # retryfailed puts the Failed rows back to Pending under a new generation.
    await queue.run(
        "UPDATE {q}.recipients SET status = 'Pending', generation = 2, failed_at = NULL "
        "WHERE campaign_id = 10 AND status = 'Failed'"
    )
    assert (await queue.assert_counts_agree())[10][:3] == (40, 7, 0)

    # A cancel drops what is still Pending; the other campaign is untouched.
    await queue.run("UPDATE {q}.recipients SET status = 'Dropped' WHERE campaign_id = 10 AND status = 'Pending'")
    assert await queue.assert_counts_agree() == {
        10: (40, 7, 0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=10)),
        11: (40, 0, 0, None, None),
    }


async def test_a_sent_row_that_changes_or_goes_moves_the_first_and_last_send(queue: Queue) -> None:
    await queue.enqueue([20], 10)
    await queue.run(
        "UPDATE {q}.recipients SET status = 'Sent', sent_at = %(t)s + make_interval(secs => subscriber_id) "
        "WHERE campaign_id = 20",
        {"t": T0},
    )
    assert (await queue.assert_counts_agree())[20] == (
        10,
        10,
        0,
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=10),
    )

    # No code path does these; the counts stay right all the same.
    await queue.run("UPDATE {q}.recipients SET status = 'Failed', sent_at = NULL WHERE subscriber_id = 10")
    await queue.run("DELETE FROM {q}.recipients WHERE campaign_id = 20 AND subscriber_id = 1")
    assert (await queue.assert_counts_agree())[20] == (
        9,
        8,
        1,
        T0 + timedelta(seconds=2),
        T0 + timedelta(seconds=9),
    )
    await queue.run("UPDATE {q}.recipients SET sent_at = sent_at - interval '1 hour' WHERE subscriber_id = 5")
    assert (await queue.assert_counts_agree())[20][3:] == (
        T0 + timedelta(seconds=5) - timedelta(hours=1),
        T0 + timedelta(seconds=9),
    )

    await queue.run("DELETE FROM {q}.recipients WHERE campaign_id = 20")
    assert await queue.assert_counts_agree() == {}
    assert (await queue.figures(KEPT))[20] == NOTHING


async def test_truncating_the_queue_empties_the_counts(queue: Queue) -> None:
    await queue.enqueue([30, 31], 5)
    await queue.run("TRUNCATE {q}.recipients CASCADE")
    assert await queue.figures(KEPT) == {}


async def test_a_statement_that_changes_no_count_does_not_wait_for_a_writer_of_the_counts(queue: Queue) -> None:
    await queue.enqueue([40], 20)
    async with await psycopg.AsyncConnection.connect(queue.url) as writer:
        # An open transaction has recorded a send: it holds the campaign's counts row until it ends.
        await writer.execute(
            queue.statement("UPDATE {q}.recipients SET status = 'Sent', sent_at = now() WHERE subscriber_id = 1")
        )
        await queue.conn.execute("SET lock_timeout = '500ms'")
        try:
            # A claim (Pending → Sending) changes no count: it goes ahead.
            assert await queue.run("UPDATE {q}.recipients SET status = 'Sending' WHERE subscriber_id = 2") == 1
            # A send recorded meanwhile waits for the counts row.
            with pytest.raises(psycopg.errors.LockNotAvailable):
                await queue.run(
                    "UPDATE {q}.recipients SET status = 'Sent', sent_at = now() WHERE subscriber_id = 2"
                )
        finally:
            await queue.conn.execute("RESET lock_timeout")
        await writer.commit()
    assert (await queue.assert_counts_agree())[40][:3] == (20, 1, 0)


async def test_concurrent_writers_of_one_campaign_keep_exact_counts(queue: Queue) -> None:
    await queue.enqueue([50], 200)

    async def worker(first: int) -> None:
        # Every fourth row from `first` on, one autocommit statement each, as workers record windows.
        async with await psycopg.AsyncConnection.connect(queue.url, autocommit=True) as conn:
            for subscriber_id in range(first, 201, 4):
                status = "Failed" if subscriber_id % 10 == 0 else "Sent"
                await conn.execute(
                    queue.statement(
                        "UPDATE {q}.recipients SET status = %(s)s, "
                        "sent_at = CASE WHEN %(s)s = 'Sent' THEN %(t)s + make_interval(secs => subscriber_id) END "
                        "WHERE campaign_id = 50 AND subscriber_id = %(n)s"
                    ),
                    {"s": status, "t": T0, "n": subscriber_id},
                )

    await asyncio.gather(*(worker(first) for first in range(1, 5)))

    assert (await queue.assert_counts_agree())[50] == (
        200,
        180,
        20,
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=199),
    )


async def test_recounting_repairs_counts_changed_by_hand(queue: Queue) -> None:
    await queue.enqueue([60, 61], 12)
    await queue.run("UPDATE {q}.recipients SET status = 'Sent', sent_at = %(t)s WHERE campaign_id = 60", {"t": T0})
    await queue.run("UPDATE {q}.recipient_counts SET sent = 999, first_sent_at = NULL")
    await queue.run("INSERT INTO {q}.recipient_counts (campaign_id, owner_user_id, total) VALUES (62, 7, 5)")

    await queue.run("SELECT {q}.recount_recipient_counts()")

    assert await queue.assert_counts_agree() == {60: (12, 12, 0, T0, T0), 61: (12, 0, 0, None, None)}
    assert 62 not in await queue.figures(KEPT)
