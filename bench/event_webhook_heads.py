"""Event webhook dispatcher benchmark: the query that finds the head of each (endpoint, campaign) queue on a backlog,
as Herald runs it (a loose index scan through the partial index, services/delivery/event_webhook_store.py) next to
the plain DISTINCT ON it replaced, which reads every undelivered row on each dispatcher pass.

Run: `.venv/bin/python bench/event_webhook_heads.py` (or `--events 200000 --queues 100`; ~30 s). Starts an embedded
PostgreSQL in a temporary folder, migrates the delivery schema, writes the backlog, and prints the best and median
of 5 runs of each query in ms. Wall time on one connection: noisy on a shared machine, so compare the two lines of
one run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.common import db
from services.common.config import Settings
from services.common.embedded import EmbeddedPostgres
from services.delivery import event_webhook_store

MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "delivery" / "migrations"
DISTINCT_ON = """
WITH heads AS (
  SELECT DISTINCT ON (w.endpoint_id, w.campaign_id) w.endpoint_id, w.event_id, w.next_attempt_at
  FROM delivery.webhook_events w JOIN delivery.webhook_endpoints e USING (endpoint_id)
  WHERE NOT w.delivered AND e.enabled
  ORDER BY w.endpoint_id, w.campaign_id, w.stream_sequence, w.position
) SELECT endpoint_id, event_id FROM heads WHERE next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 32
"""
SKIP_SCAN = (
    event_webhook_store.HEADS
    + """, due AS (SELECT h.endpoint_id, h.event_id FROM heads h JOIN delivery.webhook_endpoints e USING (endpoint_id)
  WHERE e.enabled AND h.next_attempt_at <= now() ORDER BY h.next_attempt_at LIMIT 32) SELECT * FROM due"""
)


async def measure(database_url: str, events: int, queues: int) -> None:
    engine = create_async_engine(Settings(database_url=database_url).sqlalchemy_url())
    try:
        await db.migrate(engine, "delivery", MIGRATIONS)
        endpoints = max(1, queues // 10)
        async with engine.begin() as conn:
            for _ in range(endpoints):
                await conn.execute(
                    sa.text(
                        "INSERT INTO delivery.webhook_endpoints (owner_user_id, url, event_kinds, sealed_secret) "
                        "VALUES (1, 'https://hooks.example/', '{campaign.status_changed}', 'x')"
                    )
                )
            await conn.execute(
                sa.text(
                    "INSERT INTO delivery.webhook_events "
                    "(endpoint_id, event_id, stream_sequence, position, campaign_id, event_type, body) "
                    "SELECT 1 + (g % :endpoints), 'e' || g, g, 0, 1 + (g / :endpoints) % (:queues / :endpoints), "
                    "'campaign.status_changed', 'x' FROM generate_series(1, :events) g"
                ),
                {"endpoints": endpoints, "queues": queues, "events": events},
            )
            await conn.execute(sa.text("ANALYZE delivery.webhook_events"))
        print(f"{events} undelivered events in {queues} (endpoint, campaign) queues")
        for name, query in (("DISTINCT ON", DISTINCT_ON), ("loose index scan", SKIP_SCAN)):
            async with engine.connect() as conn:
                times = []
                for _ in range(5):
                    started = time.perf_counter()
                    heads = len((await conn.execute(sa.text(query))).all())
                    times.append((time.perf_counter() - started) * 1000)
            times.sort()
            print(f"{name:>17}: {heads} heads, best {times[0]:.1f} ms, median {times[2]:.1f} ms")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--queues", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        postgres = EmbeddedPostgres(Path(folder) / "pg")
        url = postgres.start()
        try:
            asyncio.run(measure(url, args.events, args.queues))
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
