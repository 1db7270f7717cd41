"""The import writer's SQL on a real PostgreSQL: a double opt-in list's batch writes its pending subscribers and
their confirmation requests in one transaction, unique custom values are checked set-wise, defaults applied."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.audience import domain, store
from services.audience.import_store import (
    ClaimLost,
    Confirmations,
    ImportTarget,
    PendingSubscriber,
    RowWriter,
    UniqueColumn,
    WrittenFields,
)
from tests.store.conftest import new_id

SERVICES = ("audience",)
WORKER = "store-test"


async def _list_and_import(engine: AsyncEngine, owner: int) -> tuple[int, int]:
    """A double opt-in list and a Running import of it that WORKER holds (committed: the writer has its own
    connection)."""
    async with engine.begin() as conn:
        list_id = (
            await store.inserted_list(conn, owner, domain.NewList(name="Imports", opt_in_mode="Double"))
        ).list_id
        import_id = (
            await conn.execute(
                sa.text(
                    "INSERT INTO audience.imports (list_id, owner_user_id, status, origin, format, claimed_by) "
                    "VALUES (:l, :o, 'Running', 'stored', '{}', :w) RETURNING import_id"
                ),
                {"l": list_id, "o": owner, "w": WORKER},
            )
        ).scalar_one()
    return list_id, int(import_id)


async def test_a_double_opt_in_batch_adds_pending_subscribers_and_their_requests_in_its_transaction(
    engine: AsyncEngine, database_url: str
) -> None:
    owner = new_id()
    list_id, import_id = await _list_and_import(engine, owner)
    async with engine.begin() as conn:
        holder = domain.NewSubscriber(
            list_id=list_id,
            email_address="holder@example.com",
            email_key="holder@example.com",
            custom_fields={"2": "A-1"},
            status="Subscribed",
        )
        assert await store.inserted_subscriber_id(conn, owner, holder) is not None
    asked: list[tuple[list[PendingSubscriber], datetime]] = []
    woken: list[bool] = []

    def rows(pending: Sequence[PendingSubscriber], now: datetime) -> list[dict[str, object]]:
        asked.append((list(pending), now))
        return [{"s": "test.events.confirmations", "m": f"confirm:{import_id}", "p": b"{}"}]

    target = ImportTarget(import_id, list_id, owner, False, False, WORKER, pending=True)
    written = WrittenFields(
        defaults=(("3", "Berlin"),),
        unique=(UniqueColumn(0, "2", "Code"),),
        confirmations=Confirmations(rows=rows, committed=lambda: woken.append(True)),
    )
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    writer = await RowWriter.open(conninfo, target, ["2"], 0, written)
    try:
        batch = [
            (1, "ann@example.com", "ann@example.com", "Ann", "", "B-1"),
            (2, "bo@example.com", "bo@example.com", "Bo", "", "a-1"),  # the holder's code, another case
            (3, "cy@example.com", "cy@example.com", "Cy", "", " b-1"),  # row 1's code
            (4, "holder@example.com", "holder@example.com", "H", "", "A-1"),  # its own code: a duplicate
        ]
        raws = [f"row {row[0]}\n" for row in batch]
        counts = await writer.write(batch, raws, [], data_rows=4, last_row=4)
    finally:
        await writer.close()

    assert (counts.imported, counts.updated, counts.duplicates) == (1, 0, 1)
    [(pending, requested)] = asked
    assert [p.email_address for p in pending] == ["ann@example.com"] and woken == [True]
    async with engine.connect() as conn:
        ann = await store.subscriber_by(conn, list_id, key="ann@example.com")
        assert ann is not None and ann.status == "Opt-In Pending" and pending[0].subscriber_id == ann.subscriber_id
        assert ann.custom_fields == {"2": "B-1", "3": "Berlin"}
        stamped = (
            await conn.execute(
                sa.text("SELECT opt_in_requested_at FROM audience.subscribers WHERE subscriber_id = :s"),
                {"s": ann.subscriber_id},
            )
        ).scalar_one()
        assert stamped == requested
        outbox = (await conn.execute(sa.text("SELECT msg_id FROM audience.outbox"))).scalars().all()
        assert f"confirm:{import_id}" in outbox
        job = (
            await conn.execute(
                sa.text(
                    "SELECT imported, duplicates, rejected, rejected_rows FROM audience.imports WHERE import_id = :i"
                ),
                {"i": import_id},
            )
        ).one()
    assert (job.imported, job.duplicates, job.rejected) == (1, 1, 2)
    reasons = {r["row"]: r["reason"] for r in job.rejected_rows}
    assert reasons == {
        2: "custom field 2 (Code) must be unique: another subscriber has that value",
        3: "custom field 2 (Code) must be unique: row 1 of the file has that value",
    }, json.dumps(job.rejected_rows)


async def test_a_batch_that_fails_writes_no_confirmation_request(engine: AsyncEngine, database_url: str) -> None:
    owner = new_id()
    list_id, import_id = await _list_and_import(engine, owner)
    target = ImportTarget(import_id, list_id, owner, False, False, "another-worker", pending=True)
    woken: list[bool] = []

    def rows(pending: Sequence[PendingSubscriber], now: datetime) -> list[dict[str, object]]:
        return [{"s": "test.events.confirmations", "m": f"lost:{import_id}", "p": b"{}"}]

    written = WrittenFields(confirmations=Confirmations(rows=rows, committed=lambda: woken.append(True)))
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    writer = await RowWriter.open(conninfo, target, [], 0, written)
    try:
        # The import is not this writer's: the batch (subscribers and requests) rolls back.
        with pytest.raises(ClaimLost):
            await writer.write(
                [(1, "x@example.com", "x@example.com", "", "")], ["x\n"], [], data_rows=1, last_row=1
            )
    finally:
        await writer.close()
    assert woken == []
    async with engine.connect() as conn:
        assert await store.subscriber_by(conn, list_id, key="x@example.com") is None
        lost = (
            await conn.execute(
                sa.text("SELECT count(*) FROM audience.outbox WHERE msg_id = :m"), {"m": f"lost:{import_id}"}
            )
        ).scalar_one()
    assert lost == 0
