"""Subscriber imports: CreateImport stores a background job, StreamImport imports a stream as it arrives, GetImport reports.

Both kinds run the same pipeline: pieces of about 1 MiB are parsed (in a worker thread, so the
event loop keeps serving) while the previous batch of rows is written (COPY + one upsert per
batch, see import_store.RowWriter), so memory stays bounded whatever the size of the file.

Stored jobs (CreateImport: inline Data or a fetched URL) are run by `run()` in whichever replica
claims them (FOR UPDATE SKIP LOCKED). A job whose worker died keeps status Running with a heartbeat
that goes stale; another worker then takes it over and resumes after the last committed batch.
A job that stopped its worker MAX_ATTEMPTS times is marked Failed. A streamed import cannot be
resumed (its caller's stream is gone): if its replica dies it is marked Failed, and importing the
file again is safe (existing subscribers are updated or counted as duplicates, never doubled).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog
from herald.audience.v1 import audience_pb2
from sqlalchemy import func
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.audience import domain, import_store, import_webhook, store
from services.audience.import_domain import (
    CsvFormat,
    CsvParser,
    ImportFailure,
    ParsedPiece,
    RejectedRow,
    bind_fields,
    check_format,
    custom_targets,
)
from services.audience.import_fetch import FetchFailed, fetch_source
from services.audience.import_store import (
    ClaimLost,
    Confirmations,
    ImportTarget,
    PendingSubscriber,
    RowWriter,
    UniqueColumn,
    WrittenFields,
)
from services.common import events, grpcutil
from services.common.auth import Principal
from services.common.config import Settings
from services.common.errors import DomainError, Violations, invalid, not_found, precondition
from services.common.logging import RepeatingFailure
from services.common.outbox import Outbox

log = structlog.get_logger()

# Rows (valid and rejected) written per transaction: big enough that per-statement costs vanish,
# small enough that progress moves every second or so and memory stays small.
BATCH_ROWS = 50_000
PIECE_BYTES = 1024 * 1024
HEARTBEAT_SECONDS = 5.0
# A Running job whose heartbeat is older than this was abandoned by a worker that died.
STALE_SECONDS = 30.0
MAX_ATTEMPTS = 3
# Stored jobs one process runs at once (streams are not limited: each is a caller waiting).
MAX_RUNNING_JOBS = 2
POLL_SECONDS = 1.0

IMPORT_ID_REQUIRED = "IMPORT_ID_REQUIRED"
IMPORT_NOT_FOUND = "IMPORT_NOT_FOUND"
IMPORT_NOT_IN_LIST = "IMPORT_NOT_IN_LIST"
IMPORT_SOURCE_REQUIRED = "IMPORT_SOURCE_REQUIRED"
# Issue 14: a setting Herald does not implement is refused rather than stored and ignored.
SETTING_UNSUPPORTED = "SETTING_UNSUPPORTED"
IMPORT_SOURCE_CONFLICT = "IMPORT_SOURCE_CONFLICT"
IMPORT_SOURCE_FETCH_FAILED = "IMPORT_SOURCE_FETCH_FAILED"
IMPORT_STREAM_EMPTY = "IMPORT_STREAM_EMPTY"
# Issue 14: a double opt-in list's import adds Opt-In Pending subscribers and sends each the confirmation
# email; one that cannot do that is refused.
IMPORT_CONFIRMATION_EMAIL_MISSING = "IMPORT_CONFIRMATION_EMAIL_MISSING"
IMPORT_SUPPRESSION_ON_DOUBLE_OPT_IN = "IMPORT_SUPPRESSION_ON_DOUBLE_OPT_IN"
# Subscribers per confirmation request message (each ~150 bytes of JSON: well under NATS's 1 MB).
CONFIRMATIONS_PER_MESSAGE = 1000

_STATUS = {
    "Pending": audience_pb2.IMPORT_STATUS_PENDING,
    "Running": audience_pb2.IMPORT_STATUS_RUNNING,
    "Completed": audience_pb2.IMPORT_STATUS_COMPLETED,
    "Failed": audience_pb2.IMPORT_STATUS_FAILED,
}


def psycopg_conninfo(database_url: str) -> str:
    """DATABASE_URL as psycopg itself takes it (SQLAlchemy's "+psycopg" dialect suffix removed)."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def csv_format(message: audience_pb2.CsvFormat) -> CsvFormat:
    """The proto format with its documented defaults (an empty field means the default)."""
    return CsvFormat(
        field_terminator=message.field_terminator or ",",
        field_encloser=message.field_encloser or '"',
        escaped_by=message.escaped_by,
        header=message.header,
        mapped_fields=tuple(sorted(message.mapped_fields.items())),
    )


def _format_json(fmt: CsvFormat) -> dict[str, Any]:
    return {
        "field_terminator": fmt.field_terminator,
        "field_encloser": fmt.field_encloser,
        "escaped_by": fmt.escaped_by,
        "header": fmt.header,
        "mapped_fields": [list(pair) for pair in fmt.mapped_fields],
    }


def _format_from_json(value: dict[str, Any]) -> CsvFormat:
    return CsvFormat(
        field_terminator=value["field_terminator"],
        field_encloser=value["field_encloser"],
        escaped_by=value["escaped_by"],
        header=value["header"],
        mapped_fields=tuple((column, target) for column, target in value["mapped_fields"]),
    )


def opt_in_refusal(mailing_list: domain.MailingList, add_to_suppression: bool) -> DomainError | None:
    """Why an import into a double opt-in list cannot be honoured, or None: its subscribers are added Opt-In
    Pending and each is sent the list's confirmation email, which needs one, and addresses the import does not
    also suppress."""
    if mailing_list.opt_in_mode != "Double":
        return None
    if not mailing_list.confirmation_email_id:
        return precondition(
            IMPORT_CONFIRMATION_EMAIL_MISSING,
            f"list {mailing_list.list_id} is double opt-in but has no confirmation email: the imported "
            "subscribers could not be asked to confirm",
        )
    if add_to_suppression:
        return invalid(
            IMPORT_SUPPRESSION_ON_DOUBLE_OPT_IN,
            f"list {mailing_list.list_id} is double opt-in: its imported subscribers are sent a confirmation "
            "email, which a suppressed address cannot be; import without suppressing, or suppress the addresses "
            "on their own (AddSuppressions)",
            "add_to_suppression",
        )
    return None


def import_message(row: Any) -> audience_pb2.Import:
    """An imports row as the API shows it."""
    return audience_pb2.Import(
        import_id=row.import_id,
        list_id=row.list_id,
        status=_STATUS[row.status],
        create_time=grpcutil.timestamp(row.created_at),
        finish_time=grpcutil.timestamp(row.finished_at),
        total_rows=row.total_rows,
        imported=row.imported,
        updated=row.updated,
        duplicates=row.duplicates,
        rejected=row.rejected,
        rejected_rows=[
            audience_pb2.RejectedRow(row_number=r["row"], reason=r["reason"], raw=r["raw"])
            for r in row.rejected_rows
        ],
        failure=row.failure,
    )


@dataclass(frozen=True)
class _Job:
    """An import being run by this process."""

    target: ImportTarget
    fmt: CsvFormat
    origin: str
    rows_done: int  # records an earlier attempt committed (a resumed job skips their effects)
    reported: int  # rejected rows already in the report

    @classmethod
    def of(cls, row: Any, worker: str) -> _Job:
        return cls(
            target=ImportTarget(
                import_id=row.import_id,
                list_id=row.list_id,
                owner_user_id=row.owner_user_id,
                update_duplicates=row.update_duplicates,
                add_to_suppression=row.add_to_suppression,
                worker=worker,
            ),
            fmt=_format_from_json(row.format),
            origin=row.origin,
            rows_done=row.rows_done,
            reported=len(row.rejected_rows),
        )


@dataclass
class _Batch:
    """Parsed rows waiting to be written together."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    # Rows an earlier attempt of this job already wrote: only their addresses are remembered.
    replayed: list[tuple[Any, ...]] = field(default_factory=list)
    data_rows: int = 0
    last_row: int = 0

    def add(self, piece: ParsedPiece, rows_done: int) -> None:
        self.last_row = max(self.last_row, piece.last_row)
        first = min([row[0] for row in piece.rows[:1]] + [r.row_number for r in piece.rejected[:1]], default=0)
        if first > rows_done or not (piece.rows or piece.rejected):
            self.rows += piece.rows
            self.raws += piece.raws
            self.rejected += piece.rejected
            self.data_rows += piece.data_rows
            return
        skipped = 0
        for row, raw in zip(piece.rows, piece.raws, strict=True):
            if row[0] <= rows_done:
                self.replayed.append(row)
                skipped += 1
            else:
                self.rows.append(row)
                self.raws.append(raw)
        for rejected in piece.rejected:
            if rejected.row_number <= rows_done:
                skipped += 1
            else:
                self.rejected.append(rejected)
        self.data_rows += piece.data_rows - skipped

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.rejected) + len(self.replayed)

    @property
    def has_progress(self) -> bool:
        return bool(self.rows or self.rejected or self.data_rows)


class ImportHandler:
    """The import RPCs and the background worker that runs stored jobs."""

    def __init__(self, engine: AsyncEngine, settings: Settings, outbox: Outbox) -> None:
        self.engine = engine
        # Confirmation requests of the subscribers an import adds Opt-In Pending go out through the outbox.
        self.outbox = outbox
        self.signer = events.signer_of(events.OPT_IN_CONFIRMATIONS_REQUESTED, settings)
        self.conninfo = psycopg_conninfo(settings.database_url)
        # Server-side fetches of user-given URLs reach private addresses only when the operator allows it.
        self.allow_private_urls = settings.allow_private_urls
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[int, asyncio.Task[None]] = {}
        # Status notices under way (held so that they are not collected before they end).
        self._notices: set[asyncio.Task[bool]] = set()
        self._streaming: set[int] = set()
        self._wake = asyncio.Event()

    # --- RPCs ---------------------------------------------------------------------------------------------

    async def create(self, request: audience_pb2.CreateImportRequest, principal: Principal) -> audience_pb2.Import:
        """Stores a background job for inline data or a URL's content and returns it, Pending."""
        fmt = csv_format(request.format)
        violations = Violations()
        if request.list_id <= 0:
            violations.add("list_id", domain.LIST_ID_REQUIRED, "list_id is required")
        check_format(fmt, violations)
        if not request.data and not request.source_url:
            violations.add("data", IMPORT_SOURCE_REQUIRED, "give the CSV as data or source_url")
        elif request.data and request.source_url:
            violations.add("source_url", IMPORT_SOURCE_CONFLICT, "give the CSV as data or source_url, not both")
        if request.trigger_actions:
            message = (
                "trigger_actions is not supported: Herald has no autoresponders or journeys to run; send false"
            )
            violations.add("trigger_actions", SETTING_UNSUPPORTED, message)
        if any(tag.strip() for tag in request.tags):
            message = "tags is not supported: Herald keeps no subscriber tags; send none"
            violations.add("tags", SETTING_UNSUPPORTED, message)
        webhook_url = request.status_webhook_url.strip()
        if webhook_url:
            import_webhook.check_url(webhook_url, violations, allow_private=self.allow_private_urls)
        violations.raise_if_any()
        mailing_list = await self._checked_list(request.list_id, fmt, principal, request.add_to_suppression)
        owner = mailing_list.owner_user_id
        with tempfile.SpooledTemporaryFile(max_size=8 * PIECE_BYTES) as source:
            if request.source_url:
                try:
                    size = await fetch_source(request.source_url, source, allow_private=self.allow_private_urls)
                except FetchFailed as exc:
                    raise precondition(
                        IMPORT_SOURCE_FETCH_FAILED, f"cannot fetch {request.source_url}: {exc}"
                    ) from exc
            else:
                size = source.write(request.data.encode("utf-8"))
            source.seek(0)
            async with self.engine.begin() as conn:
                row = await import_store.insert_import(
                    conn,
                    list_id=request.list_id,
                    owner_user_id=owner,
                    status="Pending",
                    origin="stored",
                    format=_format_json(fmt),
                    update_duplicates=request.update_duplicates,
                    add_to_suppression=request.add_to_suppression,
                    trigger_actions=request.trigger_actions,
                    tags=list(request.tags),
                    source_url=request.source_url,
                    source_bytes=size,
                    status_webhook_url=webhook_url,
                )
                seq = 0
                while piece := source.read(PIECE_BYTES):
                    await import_store.insert_source_piece(conn, row.import_id, seq, piece)
                    seq += 1
        log.info("import stored", import_id=row.import_id, list_id=row.list_id, bytes=size)
        self._wake.set()
        return import_message(row)

    async def stream(
        self, request_iterator: AsyncIterator[audience_pb2.StreamImportRequest], principal: Principal
    ) -> audience_pb2.Import:
        """Imports the streamed file as it arrives and answers the finished import's report."""
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise invalid(IMPORT_STREAM_EMPTY, "the first message must name the list and the format", "list_id")
        fmt = csv_format(first.format)
        violations = Violations()
        if first.list_id <= 0:
            violations.add("list_id", domain.LIST_ID_REQUIRED, "list_id is required")
        check_format(fmt, violations)
        violations.raise_if_any()
        owner = (await self._checked_list(first.list_id, fmt, principal, add_to_suppression=False)).owner_user_id
        async with self.engine.begin() as conn:
            row = await import_store.insert_import(
                conn,
                list_id=first.list_id,
                owner_user_id=owner,
                status="Running",
                origin="stream",
                format=_format_json(fmt),
                update_duplicates=first.update_duplicates,
                claimed_by=self.worker,
                attempts=1,
                heartbeat_at=func.now(),
                started_at=func.now(),
            )
        job = _Job.of(row, self.worker)
        log.info("import streaming", import_id=row.import_id, list_id=row.list_id)

        async def pieces() -> AsyncIterator[bytes]:
            if first.chunk:
                yield first.chunk
            async for message in request_iterator:
                if message.chunk:
                    yield message.chunk

        self._streaming.add(row.import_id)
        try:
            await self._work(job, pieces())
        finally:
            self._streaming.discard(row.import_id)
        return await self._current(row.import_id)

    async def get(self, request: audience_pb2.GetImportRequest, principal: Principal) -> audience_pb2.Import:
        """An import of one of the caller's lists: progress while it runs, the report once it is done."""
        violations = Violations()
        if request.list_id <= 0:
            violations.add("list_id", domain.LIST_ID_REQUIRED, "list_id is required")
        if request.import_id <= 0:
            violations.add("import_id", IMPORT_ID_REQUIRED, "import_id is required")
        violations.raise_if_any()
        scope = domain.owner_scope(principal)
        async with self.engine.connect() as conn:
            if not await store.lists_by_id(conn, [request.list_id], scope):
                raise domain.list_not_found(request.list_id)
            row = await import_store.import_by_id(conn, request.import_id, scope)
        if row is None:
            raise not_found(IMPORT_NOT_FOUND, f"import {request.import_id} not found", "import_id")
        if row.list_id != request.list_id:
            raise not_found(
                IMPORT_NOT_IN_LIST,
                f"import {request.import_id} is not an import into list {request.list_id}",
                "import_id",
            )
        return import_message(row)

    async def _checked_list(
        self, list_id: int, fmt: CsvFormat, principal: Principal, add_to_suppression: bool
    ) -> domain.MailingList:
        """The list to import into (an admin may import into anyone's list, for its owner), once the import is
        known to be one the list can take: its opt-in mode's and the mapped custom fields'."""
        async with self.engine.connect() as conn:
            found = await store.list_by_id(conn, list_id, domain.owner_scope(principal))
            fields = (await store.fields_of_lists(conn, [list_id])).get(list_id, [])
        if found is None:
            raise domain.list_not_found(list_id)
        refusal = opt_in_refusal(found, add_to_suppression)
        if refusal is not None:
            raise refusal
        targets = custom_targets(fmt)
        if targets is not None:
            try:
                bind_fields(targets, fields)
            except ImportFailure as exc:
                raise invalid("IMPORT_MAPPING_INVALID", str(exc), "format.mapped_fields") from exc
        return found

    async def _current(self, import_id: int) -> audience_pb2.Import:
        async with self.engine.connect() as conn:
            row = await import_store.import_by_id(conn, import_id, None)
        if row is None:  # the list (and with it the import) was deleted meanwhile
            raise not_found(IMPORT_NOT_FOUND, f"import {import_id} not found (its list was deleted)", "import_id")
        return import_message(row)

    # --- the pipeline -------------------------------------------------------------------------------------

    async def _work(self, job: _Job, pieces: AsyncIterator[bytes]) -> None:
        """Runs a job to its end: Completed, Failed (the data cannot be imported), or handed back."""
        import_id = job.target.import_id
        structlog.contextvars.bind_contextvars(import_id=import_id)
        try:
            await self._import_rows(job, pieces)
        except ImportFailure as exc:
            log.info("import failed", reason=str(exc))
            await self._finish(job, failure=str(exc))
        except ClaimLost as exc:
            log.warning("import no longer ours; stopping", reason=str(exc))
        except asyncio.CancelledError:
            if job.origin == "stream":
                log.info("import stream cancelled")
                await asyncio.shield(
                    self._finish(job, failure="the import was interrupted before the end of its stream")
                )
            else:
                log.info("import handed back (this worker is stopping)")
                await asyncio.shield(self._release(job))
            raise
        except Exception as exc:
            log.exception("import stopped by an error")
            if job.origin == "stream":
                await self._finish(job, failure=f"internal error ({type(exc).__name__}); the rows written stay")
                raise
            # A stored job is retried (from its last batch) until MAX_ATTEMPTS.
            await self._release(job, count_attempt=True)
        else:
            await self._finish(job, failure=None)
            log.info("import completed")

    async def _import_rows(self, job: _Job, pieces: AsyncIterator[bytes]) -> None:
        list_id = job.target.list_id
        async with self.engine.connect() as conn:
            mailing_list = await store.list_by_id(conn, list_id, None)
            fields = (await store.fields_of_lists(conn, [list_id])).get(list_id, [])
        if mailing_list is None:
            raise ClaimLost(f"the list of import {job.target.import_id} was deleted")
        # The list may have changed since the import was asked for: the rules are those it has now.
        refusal = opt_in_refusal(mailing_list, job.target.add_to_suppression)
        if refusal is not None:
            raise ImportFailure(refusal.message)
        target = replace(job.target, pending=mailing_list.opt_in_mode == "Double")
        confirmations = self._confirmations(target, mailing_list.confirmation_email_id) if target.pending else None
        parser = CsvParser(job.fmt, fields)
        writer: RowWriter | None = None
        writing: asyncio.Task[None] | None = None

        async def write(batch: _Batch) -> None:
            nonlocal writer
            if writer is None:
                bound = parser.bound
                written = WrittenFields(
                    defaults=bound.defaults,
                    unique=tuple(UniqueColumn(i, f.key, f.spec.name) for i, f in bound.unique),
                    confirmations=confirmations,
                )
                writer = await RowWriter.open(self.conninfo, target, parser.custom_ids, job.reported, written)
            if batch.replayed:
                await writer.replay(batch.replayed)
            if batch.has_progress:
                started = time.perf_counter()
                counts = await writer.write(
                    batch.rows, batch.raws, batch.rejected, data_rows=batch.data_rows, last_row=batch.last_row
                )
                log.debug(
                    "import batch written",
                    rows=len(batch.rows),
                    rejected=len(batch.rejected),
                    imported=counts.imported,
                    updated=counts.updated,
                    duplicates=counts.duplicates,
                    ms=round((time.perf_counter() - started) * 1000),
                )

        batch = _Batch()
        try:
            async for data in pieces:
                # Parsing is CPU work: a thread keeps the event loop (other RPCs, the write) going.
                batch.add(await asyncio.to_thread(parser.feed, data), job.rows_done)
                if batch.size >= BATCH_ROWS:
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(write(batch))
                    batch = _Batch()
            batch.add(parser.finish(), job.rows_done)
            if writing is not None:
                await writing
                writing = None
            await write(batch)
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                await asyncio.wait([writing])
            if writer is not None:
                await writer.close()

    def _confirmations(self, target: ImportTarget, email_id: int) -> Confirmations:
        """The confirmation requests of the subscribers an import adds Opt-In Pending: one message per
        CONFIRMATIONS_PER_MESSAGE of them, keyed by the import, the first subscriber and the time."""

        def rows(pending: Sequence[PendingSubscriber], now: datetime) -> list[dict[str, object]]:
            made = []
            for start in range(0, len(pending), CONFIRMATIONS_PER_MESSAGE):
                chunk = pending[start : start + CONFIRMATIONS_PER_MESSAGE]
                event = audience_pb2.OptInConfirmationsRequestedEvent(
                    owner_user_id=target.owner_user_id,
                    list_id=target.list_id,
                    email_id=email_id,
                    import_id=target.import_id,
                    recipients=[_confirmation_recipient(p) for p in chunk],
                )
                event.request_time.FromDatetime(now)
                key = f"{target.import_id}:{chunk[0].subscriber_id}:{event.request_time.ToMicroseconds()}"
                made.append(
                    self.outbox.row(events.OPT_IN_CONFIRMATIONS_REQUESTED, event, key=key, signer=self.signer)
                )
            log.info("opt-in confirmations requested", subscribers=len(pending), messages=len(made))
            return made

        return Confirmations(rows=rows, committed=self.outbox.committed_elsewhere)

    async def _finish(self, job: _Job, *, failure: str | None) -> None:
        async with self.engine.begin() as conn:
            finished = await import_store.finish_import(conn, job.target.import_id, self.worker, failure=failure)
        if finished:
            try:
                await self._notify([job.target.import_id])
            except (OperationalError, DBAPIError, OSError) as exc:
                # The import is recorded; only its notice is lost.
                log.warning("import status notice not started", error=str(exc))

    async def _notify(self, import_ids: Sequence[int]) -> None:
        """Starts the status notices of these finished imports that asked for one (import_webhook); they run on
        their own, so neither the import nor the worker waits for the receiving server."""
        async with self.engine.connect() as conn:
            rows = [await import_store.import_by_id(conn, import_id, None) for import_id in import_ids]
        for row in rows:
            if row is None or not row.status_webhook_url:
                continue
            task = asyncio.create_task(
                import_webhook.notify(
                    row.status_webhook_url, import_message(row), allow_private=self.allow_private_urls
                ),
                name=f"import-{row.import_id}-notice",
            )
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)

    async def _release(self, job: _Job, *, count_attempt: bool = False) -> None:
        async with self.engine.begin() as conn:
            await import_store.release_job(conn, job.target.import_id, self.worker, count_attempt=count_attempt)
        self._wake.set()

    async def _stored_pieces(self, import_id: int) -> AsyncIterator[bytes]:
        seq = 0
        while True:
            async with self.engine.connect() as conn:
                data = await import_store.source_piece(conn, import_id, seq)
            if data is None:
                return
            yield data
            seq += 1

    # --- the background worker ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claims and runs stored jobs until `stop`; keeps this process's imports' heartbeats; fails abandoned ones."""
        beating = asyncio.create_task(self._beat(stop))
        next_reap = 0.0
        failing = RepeatingFailure("import worker cannot reach the database; retrying")
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    if time.monotonic() >= next_reap:
                        await self._reap()
                        next_reap = time.monotonic() + STALE_SECONDS / 2
                    while len(self._running) < MAX_RUNNING_JOBS and await self._claim_one():
                        pass
                except (OperationalError, DBAPIError, OSError) as exc:
                    # The database is restarting or unreachable: jobs wait, nothing is lost.
                    failing.failed(exc)
                else:
                    failing.recovered()
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
                await asyncio.wait(waiters, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
        finally:
            for task in self._running.values():
                task.cancel()
            if self._running:
                await asyncio.wait(list(self._running.values()))
            beating.cancel()
            await asyncio.wait([beating])
            for notice in list(self._notices):
                notice.cancel()

    async def _claim_one(self) -> bool:
        async with self.engine.begin() as conn:
            row = await import_store.claim_stored_job(
                conn, self.worker, stale_seconds=STALE_SECONDS, max_attempts=MAX_ATTEMPTS
            )
        if row is None:
            return False
        job = _Job.of(row, self.worker)
        if row.attempts > 1:
            log.info(
                "import taken over", import_id=row.import_id, attempt=row.attempts, resume_after_row=row.rows_done
            )
        task = asyncio.create_task(
            self._work(job, self._stored_pieces(row.import_id)), name=f"import-{row.import_id}"
        )
        self._running[row.import_id] = task
        task.add_done_callback(lambda done: self._finished(row.import_id, done))
        return True

    def _finished(self, import_id: int, task: asyncio.Task[None]) -> None:
        self._running.pop(import_id, None)
        if not task.cancelled() and task.exception() is not None:
            # _work records every outcome; this is a failure to record one (the database went away).
            # The job keeps its claim, and its heartbeat goes stale, so it is taken over later.
            log.error("import could not be recorded", import_id=import_id, exc_info=task.exception())
        self._wake.set()  # room for another job

    async def _reap(self) -> None:
        async with self.engine.begin() as conn:
            failed = await import_store.fail_abandoned_jobs(
                conn, stale_seconds=STALE_SECONDS, max_attempts=MAX_ATTEMPTS
            )
        if failed:
            log.warning("abandoned imports failed", import_ids=failed)
            await self._notify(failed)

    async def _beat(self, stop: asyncio.Event) -> None:
        failing = RepeatingFailure("import heartbeat failed; retrying")
        while not stop.is_set():
            ids = [*self._running, *self._streaming]
            if ids:
                try:
                    async with self.engine.begin() as conn:
                        await import_store.beat(conn, self.worker, ids)
                except (OperationalError, DBAPIError, OSError) as exc:
                    failing.failed(exc)
                else:
                    failing.recovered()
            try:
                await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)
            except TimeoutError:
                continue


def _confirmation_recipient(pending: PendingSubscriber) -> audience_pb2.OptInConfirmationsRequestedEvent.Recipient:
    recipient = audience_pb2.OptInConfirmationsRequestedEvent.Recipient(
        subscriber_id=pending.subscriber_id,
        email_address=pending.email_address,
        first_name=pending.first_name,
        last_name=pending.last_name,
    )
    if pending.subscription_date is not None:
        recipient.subscription_time.FromDatetime(pending.subscription_date)
    return recipient
