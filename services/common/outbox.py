"""The transactional outbox: a unit of work writes its messages in the same transaction as its change, and a relay publishes them.

A service makes one `Outbox` and writes every change that announces something through
`outbox.unit_of_work()`, in the spirit of cosmicpython's unit of work: the transaction owns the
messages it collects, they are written into `<schema>.outbox` just before it commits (all or nothing
with the change), and once it has committed the relay is woken to publish them at once. No call site
writes outbox rows or wakes the relay by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TypeVar

import nats.errors
import structlog
from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.api import PubAck
from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import tracing
from services.common.event_signing import EventSigner
from services.common.events import EventType
from services.common.logging import RepeatingFailure
from services.common.natsutil import Subjects

log = structlog.get_logger()

M = TypeVar("M", bound=Message)

PENDING_ROWS = Gauge("herald_outbox_pending_rows", "Outbox rows not yet published to JetStream", ["schema"])
LAG_SECONDS = Gauge(
    "herald_outbox_lag_seconds", "Age of the oldest outbox row not yet published (0: none waits)", ["schema"]
)


def outbox_row(
    subject: str,
    event: EventType[M],
    message: M,
    *,
    key: str | None = None,
    signer: EventSigner | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """One outbox row as a unit of work writes it: subject `s`, Nats-Msg-Id `m`, payload `p`, headers `h` (JSON),
    and `t` the traceparent of the current span (None when tracing is off), which the relay publishes."""
    return {
        "s": subject,
        "m": event.msg_id(key),
        "p": event.encode(message, signer),
        "h": json.dumps(dict(headers)) if headers else None,
        "t": tracing.traceparent(),
    }


class UnitOfWork:
    """One transaction (`conn`) and the messages it publishes once it commits."""

    def __init__(self, conn: AsyncConnection, subjects: Subjects, *, with_headers: bool = False) -> None:
        self.conn = conn
        self._subjects = subjects
        self._with_headers = with_headers
        self._messages: list[dict[str, object]] = []
        self._written_in_sql = False

    def publish(
        self,
        event: EventType[M],
        message: M,
        *,
        key: str | None = None,
        signer: EventSigner | None = None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publishes `message` if and once the transaction commits.

        `key` makes its Nats-Msg-Id (see EventType.msg_id): the same key within JetStream's duplicate
        window is published once. `signer` is required for a signed event type. `subject` (the full
        subject) replaces the event's own, and `headers` are published besides Nats-Msg-Id, where the
        outbox keeps headers (delivery's: a retry's message schedule).
        """
        if headers and not self._with_headers:
            raise ValueError(f"this outbox keeps no headers (publishing {event.subject})")
        row = outbox_row(
            subject or self._subjects.event(event), event, message, key=key, signer=signer, headers=headers
        )
        if not self._with_headers:
            del row["h"]
        self._messages.append(row)

    def subject(self, event: EventType[M]) -> str:
        """The subject of `event`, for a statement that writes outbox rows itself (then call `wrote_outbox_rows`)."""
        return self._subjects.event(event)

    def wrote_outbox_rows(self) -> None:
        """Says a statement of this transaction wrote outbox rows itself (delivery's set-wise batch messages)."""
        self._written_in_sql = True

    @property
    def publishes(self) -> bool:
        return bool(self._messages) or self._written_in_sql

    async def _write(self, schema: str) -> None:
        if self._messages:
            # msg_id is unique: a message already queued under the same id is not queued twice.
            columns, values = (
                ("subject, msg_id, payload, traceparent, headers", ":s, :m, :p, :t, CAST(:h AS jsonb)")
                if (self._with_headers)
                else ("subject, msg_id, payload, traceparent", ":s, :m, :p, :t")
            )
            await self.conn.execute(
                text(
                    f'INSERT INTO "{schema}".outbox ({columns}) VALUES ({values}) ON CONFLICT (msg_id) DO NOTHING'
                ),
                self._messages,
            )


class Outbox:
    """A service's outbox table: the units of work that write to it, and the wake-up of the relay that empties it."""

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        subjects: Subjects,
        *,
        with_headers: bool = False,
        unordered_prefix: str | None = None,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self._subjects = subjects
        # Whether the schema's outbox table has a `headers` column (delivery's, migration 0010).
        self.with_headers = with_headers
        # Subjects under this prefix need no order among the outbox's messages (delivery's retry schedules).
        self._unordered_prefix = unordered_prefix
        self._wakeup = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """A transaction that commits when the block ends normally (rolls back when it raises), with its messages."""
        async with self.engine.begin() as conn:
            work = UnitOfWork(conn, self._subjects, with_headers=self.with_headers)
            yield work
            await work._write(self.schema)
        if work.publishes:
            self._wake()

    def row(
        self, event: EventType[M], message: M, *, key: str, signer: EventSigner | None = None
    ) -> dict[str, object]:
        """A message as an outbox row (`outbox_row`), for a writer whose transaction is on a connection of its own
        (an import's RowWriter, on psycopg) and writes its rows itself; once that transaction has committed, it
        calls `committed_elsewhere`."""
        return outbox_row(self._subjects.event(event), event, message, key=key, signer=signer)

    def committed_elsewhere(self) -> None:
        """Says rows made by `row` have committed: the relay publishes them now rather than at its next poll."""
        self._wake()

    def _wake(self) -> None:
        """Publishes what was committed now rather than at the relay's next poll."""
        self._wakeup.set()
        for listener in self._listeners:
            listener()

    async def sample(self) -> None:
        """Sets the outbox gauges: rows waiting and the oldest one's age (rows are deleted once published, so
        the table holds only what waits: a count stays cheap)."""
        async with self.engine.connect() as conn:
            pending, lag = (
                await conn.execute(
                    text(
                        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) "
                        f'FROM "{self.schema}".outbox'
                    )
                )
            ).one()
        PENDING_ROWS.labels(self.schema).set(pending)
        LAG_SECONDS.labels(self.schema).set(max(float(lag), 0.0))

    def after_publishing(self, listener: Callable[[], None]) -> None:
        """Calls `listener` too whenever a unit of work that published something has committed."""
        self._listeners.append(listener)

    async def relay(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        """Runs this outbox's relay until `stop` (any number of replicas may run one)."""
        await OutboxRelay(
            self.engine,
            self.schema,
            js,
            self._wakeup,
            with_headers=self.with_headers,
            unordered_prefix=self._unordered_prefix,
        ).run(stop)


class OutboxRelay:
    """Publishes a schema's outbox rows to JetStream in order and deletes each once JetStream has acknowledged it.

    Safe with many replicas (rows are claimed with SKIP LOCKED). Setting `wakeup` (the Outbox does, after a
    unit of work committed) skips the poll delay. Rows on a subject under `unordered_prefix` need no order:
    they are published without waiting for each other's acknowledgement (pipelined), beside the ordered ones.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        js: JetStreamContext,
        wakeup: asyncio.Event,
        *,
        poll_seconds: float = 0.5,
        batch: int = 200,
        with_headers: bool = False,
        unordered_prefix: str | None = None,
    ) -> None:
        self._engine = engine
        self._unordered_prefix = unordered_prefix
        self._schema = schema
        self._js = js
        self._poll = poll_seconds
        self._batch = batch
        # While NATS is away every pass fails to publish: logged once per interval with a count, not per pass.
        self._publish_failing = RepeatingFailure("outbox publish failed; will retry", schema=schema)
        self._wakeup = wakeup
        self._headers_column = "headers" if with_headers else "NULL"

    async def publish_pending(self) -> int:
        """Publishes one batch of pending rows; returns how many were published."""
        published = 0
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"SELECT id, subject, msg_id, payload, {self._headers_column}, traceparent "
                        f'FROM "{self._schema}".outbox '
                        "ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                    ),
                    {"n": self._batch},
                )
            ).all()
            done: list[int] = []
            failed: dict[int, str] = {}
            pipelined: list[tuple[int, str, asyncio.Future[PubAck]]] = []
            for row_id, subject, msg_id, payload, headers, traceparent in rows:
                publish = self._js.publish(
                    subject,
                    bytes(payload),
                    headers={
                        **(headers or {}),
                        **_trace_header(subject, msg_id, traceparent),
                        "Nats-Msg-Id": msg_id,
                    },
                    timeout=5,
                )
                if self._unordered_prefix and subject.startswith(self._unordered_prefix):
                    pipelined.append((row_id, msg_id, asyncio.ensure_future(publish)))
                    continue
                try:
                    ack = await publish
                except (nats.errors.Error, TimeoutError, OSError) as exc:
                    self._publish_failing.failed(exc, subject=subject, msg_id=msg_id)
                    failed[row_id] = str(exc)
                    break
                if ack.duplicate:
                    log.info("outbox message was already in the stream", msg_id=msg_id)
                done.append(row_id)
            if pipelined:
                acks = await asyncio.gather(*(future for _, _, future in pipelined), return_exceptions=True)
                for (row_id, msg_id, _), result in zip(pipelined, acks, strict=True):
                    if isinstance(result, (nats.errors.Error, TimeoutError, OSError)):
                        if not failed:
                            self._publish_failing.failed(result, msg_id=msg_id)
                        failed[row_id] = str(result)
                    elif isinstance(result, BaseException):
                        raise result
                    else:
                        done.append(row_id)
            published = len(done)
            if done and not failed:
                self._publish_failing.recovered()
            if failed:
                await conn.execute(
                    text(
                        f'UPDATE "{self._schema}".outbox SET attempts = attempts + 1, last_error = e '
                        "FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS f(id, e) "
                        f'WHERE "{self._schema}".outbox.id = f.id'
                    ),
                    {"ids": list(failed), "errors": [error[:500] for error in failed.values()]},
                )
            if done:
                await conn.execute(
                    text(f'DELETE FROM "{self._schema}".outbox WHERE id = ANY(:ids)'), {"ids": done}
                )
        return published

    async def run(self, stop: asyncio.Event) -> None:
        # PostgreSQL away: one warning (with a traceback the first time), then a line a minute with a count.
        failing = RepeatingFailure("outbox relay pass failed; retrying", traceback=True, schema=self._schema)
        while not stop.is_set():
            # Cleared before the pass, so that a commit during the pass is not waited for.
            self._wakeup.clear()
            try:
                published = await self.publish_pending()
            except Exception as exc:
                failing.failed(exc)
                published = 0
            else:
                failing.recovered()
            if published >= self._batch:
                continue
            waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()


def _trace_header(subject: str, msg_id: str, traceparent: str | None) -> dict[str, str]:
    """The message's W3C traceparent header: that of a producer span, the child of the row's traceparent (the
    unit of work's span), so that the trace shows when the relay published; the row's own when tracing is off
    here. None without a traceparent."""
    if not traceparent:
        return {}
    with tracing.publishing(subject, msg_id, traceparent):
        return {"traceparent": tracing.traceparent() or traceparent}
