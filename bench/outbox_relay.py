"""The outbox relay alone: how long it takes to publish a send's DeliveryEvents, one acknowledgement at a time or pipelined.

    .venv/bin/python bench/outbox_relay.py [--rounds 3]

Against an embedded PostgreSQL and NATS JetStream of its own (temporary folders), each round fills an outbox
table with what a 20,000-recipient send puts there — 40 queued-event messages of 500 events, then 40 ordered
batch-like rows each followed by 10 window messages of 50 events (~200 bytes per event) — and times
`OutboxRelay.publish_pending` until the table is empty: once with every row ordered (each publish waits for
its acknowledgement), once with the DeliveryEvents subjects pipelined in order (`pipelined_prefix`). Prints
the wall time and this process's CPU time of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import nats
from harness import free_port
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.common import db
from services.common.embedded import EmbeddedNats, EmbeddedPostgres
from services.common.outbox import OutboxRelay

EVENTS = "bench.events.delivery.recipients."
EVENT = {
    "kind": "DELIVERY_EVENT_KIND_SENT",
    "owner_user_id": "7",
    "campaign_id": "42",
    "recipient_id": "123456",
    "subscriber_id": "654321",
    "email_address": "someone.long@example.com",
    "occur_time": "2026-12-06T21:00:00.123456Z",
}


def payload(events: int) -> bytes:
    return json.dumps({"events": [EVENT] * events}).encode()


async def fill(engine: AsyncEngine) -> int:
    rows = [(f"{EVENTS}7.42", payload(500)) for _ in range(40)]
    for _ in range(40):
        rows.append(("bench.batches.ready", b'{"batch_id":"1"}'))
        rows += [(f"{EVENTS}7.42", payload(50)) for _ in range(10)]
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO bench.outbox (subject, msg_id, payload) VALUES (:s, :m, :p)"),
            [{"s": subject, "m": str(uuid.uuid4()), "p": body} for subject, body in rows],
        )
    return len(rows)


async def measure(rounds: int, folder: Path) -> None:
    postgres = EmbeddedPostgres(folder / "pg")
    server = EmbeddedNats(folder / "nats", free_port())
    engine = create_async_engine(postgres.start().replace("postgresql://", "postgresql+psycopg://"))
    server.start()
    client = await nats.connect(server.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE SCHEMA bench"))
            await conn.execute(text("SET LOCAL search_path TO bench"))
            await conn.exec_driver_sql(db.OUTBOX_DDL.read_text())
        js = client.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench.>"])
        for _ in range(rounds):
            for mode, prefix in (("one acknowledgement at a time", None), ("DeliveryEvents pipelined", EVENTS)):
                rows = await fill(engine)
                relay = OutboxRelay(engine, "bench", js, asyncio.Event(), pipelined_prefix=prefix)
                wall, cpu = time.perf_counter(), time.process_time()
                published = 0
                while published < rows:
                    published += await relay.publish_pending()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(f"{mode:30} {rows} rows: {wall * 1000:6.0f} ms, relay CPU {cpu * 1000:5.0f} ms", flush=True)
    finally:
        await client.close()
        await engine.dispose()
        server.stop()
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="herald-relay-bench-") as folder:
        asyncio.run(measure(args.rounds, Path(folder)))


if __name__ == "__main__":
    main()
