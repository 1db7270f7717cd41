"""The transactional outbox: write a message in the same transaction as the change, and a relay that publishes it."""

from __future__ import annotations

import asyncio

import nats.errors
import structlog
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger()


async def add_message(conn: AsyncConnection, schema: str, *, subject: str, msg_id: str, payload: bytes) -> None:
    """Queues a message inside the caller's transaction; `msg_id` becomes Nats-Msg-Id, so a re-publish is a no-op."""
    await conn.execute(
        text(
            f'INSERT INTO "{schema}".outbox (subject, msg_id, payload) VALUES (:s, :m, :p) '
            "ON CONFLICT (msg_id) DO NOTHING"
        ),
        {"s": subject, "m": msg_id, "p": payload},
    )


class OutboxRelay:
    """Publishes a schema's outbox rows to JetStream in order and deletes each once JetStream has acknowledged it.

    Safe with many replicas (rows are claimed with SKIP LOCKED). `wake()` after a commit skips the poll delay.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        js: JetStreamContext,
        *,
        poll_seconds: float = 0.5,
        batch: int = 200,
    ) -> None:
        self._engine = engine
        self._schema = schema
        self._js = js
        self._poll = poll_seconds
        self._batch = batch
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def publish_pending(self) -> int:
        """Publishes one batch of pending rows; returns how many were published."""
        published = 0
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        f'SELECT id, subject, msg_id, payload FROM "{self._schema}".outbox '
                        "ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                    ),
                    {"n": self._batch},
                )
            ).all()
            done: list[int] = []
            for row_id, subject, msg_id, payload in rows:
                try:
                    ack = await self._js.publish(
                        subject, bytes(payload), headers={"Nats-Msg-Id": msg_id}, timeout=5
                    )
                except (nats.errors.Error, TimeoutError, OSError) as exc:
                    log.warning(
                        "outbox publish failed; will retry", subject=subject, msg_id=msg_id, error=str(exc)
                    )
                    await conn.execute(
                        text(
                            f'UPDATE "{self._schema}".outbox SET attempts = attempts + 1, last_error = :e '
                            "WHERE id = :id"
                        ),
                        {"e": str(exc)[:500], "id": row_id},
                    )
                    break
                if ack.duplicate:
                    log.info("outbox message was already in the stream", msg_id=msg_id)
                done.append(row_id)
                published += 1
            if done:
                await conn.execute(
                    text(f'DELETE FROM "{self._schema}".outbox WHERE id = ANY(:ids)'), {"ids": done}
                )
        return published

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                published = await self.publish_pending()
            except Exception:
                log.exception("outbox relay pass failed")
                published = 0
            if published >= self._batch:
                continue
            self._wakeup.clear()
            waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
