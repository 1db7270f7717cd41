"""Double opt-in confirmation emails: delivery's consumer of `audience.opt_in_confirmation_requested` (and of
`audience.opt_in_confirmations_requested`, an import's request for many subscribers).

Audience publishes the request (through its outbox, with the change that made the subscriber Opt-In
Pending). Here it becomes one Pending row in the list's opt-in run (sending.opt_in_run_id) and one
batch message, in one unit of work; the delivery worker then sends it like any campaign's message:
same rendering (with %Link:Confirm% and %Link:Reject% signed for the subscriber), DKIM signature,
return path for bounces and tracking. The email's content is read from EmailService with a token of
the list's owner, so only the owner's email is ever sent; a new occurrence of the run starts only when
that content changed, so the worker keeps its parsed template otherwise.

The request is signed by audience (like a campaign's send request): one without a valid signature
does not decode and sends nothing. A request delivered twice is recorded once (opt_in_requests).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc
import structlog
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.campaign.v1 import email_pb2, email_pb2_grpc

from services.common import events, grpcutil
from services.common.config import Settings
from services.common.outbox import Outbox
from services.common.personalization import list_snapshot
from services.delivery import queue_store, sending
from services.delivery.message import email_snapshot
from services.delivery.queue import owner_metadata
from services.delivery.sending import RunState

log = structlog.get_logger()

OPT_IN_REQUESTED_DURABLE = "delivery-opt-in-requested"
OPT_INS_REQUESTED_DURABLE = "delivery-opt-ins-requested"
# EmailService's answers that no retry can cure: the request is dropped with a warning.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class OptInConfirmations:
    """Queues the confirmation emails audience asks for."""

    def __init__(self, settings: Settings, outbox: Outbox) -> None:
        self._settings = settings
        self._outbox = outbox
        self._channel = grpcutil.channel(settings.grpc_addr("campaign"))
        self._emails = email_pb2_grpc.EmailServiceStub(self._channel)
        self._audience_channel = grpcutil.channel(settings.grpc_addr("audience"))
        self._audience = audience_pb2_grpc.AudienceServiceStub(self._audience_channel)

    async def close(self) -> None:
        await self._channel.close()
        await self._audience_channel.close()

    def consumers(self) -> list[events.Consumer[Any]]:
        return [
            events.Consumer(
                OPT_IN_REQUESTED_DURABLE,
                events.OPT_IN_CONFIRMATION_REQUESTED,
                self.handle_request,
                signer=events.signer_of(events.OPT_IN_CONFIRMATION_REQUESTED, self._settings),
            ),
            events.Consumer(
                OPT_INS_REQUESTED_DURABLE,
                events.OPT_IN_CONFIRMATIONS_REQUESTED,
                self.handle_requests,
                signer=events.signer_of(events.OPT_IN_CONFIRMATIONS_REQUESTED, self._settings),
            ),
        ]

    async def handle_request(self, event: audience_pb2.OptInConfirmationRequestedEvent) -> None:
        context = {"list_id": event.list_id, "subscriber_id": event.subscriber_id, "email_id": event.email_id}
        content = await self._run_content(event.owner_user_id, event.list_id, event.email_id)
        if content is None:
            return
        run_id = sending.opt_in_run_id(event.list_id)
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            if not await queue_store.recorded_opt_in_request(
                conn, event.subscriber_id, event.request_time.ToDatetime(), run_id
            ):
                log.info("opt-in confirmation already queued", **context)
                return
            run = await queue_store.ensured_run_for_update(conn, run_id, event.owner_user_id, RunState.SENDING)
            occurrence = run.occurrence if run.content == content else run.occurrence + 1
            generation, batch_id = await queue_store.opened_opt_in_batch(
                conn, run, content=content, occurrence=occurrence
            )
            recipient = {
                "subscriber_id": event.subscriber_id,
                "list_id": event.list_id,
                "email_address": event.email_address,
                "first_name": event.first_name,
                "last_name": event.last_name,
                "email_id": event.email_id,
                "subscription_time": (
                    event.subscription_time.ToDatetime(UTC) if event.HasField("subscription_time") else None
                ),
                "subscription_ip": event.subscription_ip,
                "opt_in_time": event.opt_in_time.ToDatetime(UTC) if event.HasField("opt_in_time") else None,
            }
            await queue_store.queue_opt_in_recipient(
                conn, run, occurrence=occurrence, generation=generation, batch_id=batch_id, recipient=recipient
            )
            await queue_store.add_batch_messages(work, run_id, batch_id, batch_id, generation)
        log.info("opt-in confirmation queued", campaign_id=run_id, batch_id=batch_id, **context)

    async def handle_requests(self, event: audience_pb2.OptInConfirmationsRequestedEvent) -> None:
        """An import's request for many subscribers: queued set-wise, as rows of the list's opt-in run cut into
        batches of HERALD_DELIVERY_BATCH_SIZE, in one unit of work."""
        context = {"list_id": event.list_id, "import_id": event.import_id, "email_id": event.email_id}
        content = await self._run_content(event.owner_user_id, event.list_id, event.email_id)
        if content is None:
            return
        run_id = sending.opt_in_run_id(event.list_id)
        size = max(self._settings.delivery_batch_size, 1)
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            fresh = await queue_store.recorded_opt_in_requests(
                conn, [r.subscriber_id for r in event.recipients], event.request_time.ToDatetime(), run_id
            )
            recipients = [
                {
                    "subscriber_id": r.subscriber_id,
                    "email_address": r.email_address,
                    "first_name": r.first_name,
                    "last_name": r.last_name,
                    "subscription_time": r.subscription_time.ToDatetime(UTC)
                    if r.HasField("subscription_time")
                    else None,
                }
                for r in event.recipients
                if r.subscriber_id in fresh
            ]
            if not recipients:
                log.info("opt-in confirmations already queued", **context)
                return
            run = await queue_store.ensured_run_for_update(conn, run_id, event.owner_user_id, RunState.SENDING)
            occurrence = run.occurrence if run.content == content else run.occurrence + 1
            batches = sending.batch_count(len(recipients), size)
            generation, first_batch = await queue_store.opened_opt_in_batches(
                conn, run, content=content, occurrence=occurrence, recipients=len(recipients), batches=batches
            )
            await queue_store.queue_opt_in_recipients(
                conn,
                run,
                occurrence=occurrence,
                generation=generation,
                first_batch=first_batch,
                batch_size=size,
                list_id=event.list_id,
                email_id=event.email_id,
                recipients=recipients,
            )
            await queue_store.add_batch_messages(work, run_id, first_batch, first_batch + batches - 1, generation)
        log.info("opt-in confirmations queued", campaign_id=run_id, recipients=len(recipients), **context)

    async def _run_content(self, owner_user_id: int, list_id: int, email_id: int) -> dict[str, Any] | None:
        """The content of the list's opt-in run for this confirmation email, or None (logged) when the email cannot
        be sent or the list is gone."""
        snapshot = await self._snapshot(owner_user_id, list_id, email_id)
        if snapshot is None:
            return None
        found = await self._list(owner_user_id, list_id)
        if found is None:
            return None
        return _content(list_id, email_id, snapshot, found)

    async def _list(self, owner_user_id: int, list_id: int) -> dict[str, str] | None:
        """What the email's List: tags show of the list, or None (logged) when the list is gone."""
        metadata = owner_metadata(self._settings, owner_user_id)
        try:
            found = await self._audience.GetList(
                audience_pb2.GetListRequest(list_id=list_id), metadata=metadata, timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REFUSALS:
                log.warning("opt-in confirmation for a list that is gone", list_id=list_id, error=exc.details())
                return None
            raise
        return list_snapshot(found)

    async def _snapshot(self, owner_user_id: int, list_id: int, email_id: int) -> dict[str, Any] | None:
        """The confirmation email as the run keeps it, or None (logged) when it cannot be sent."""
        metadata = owner_metadata(self._settings, owner_user_id)
        try:
            email = await self._emails.GetEmail(
                email_pb2.GetEmailRequest(email_id=email_id), metadata=metadata, timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REFUSALS:
                log.warning(
                    "opt-in confirmation email cannot be sent",
                    list_id=list_id,
                    email_id=email_id,
                    error=exc.details(),
                )
                return None
            raise
        snapshot = email_snapshot(email)
        if not snapshot["from_email"] or not (snapshot["html"] or snapshot["plain"]):
            log.warning("opt-in confirmation email has no sender or no content", email_id=email_id)
            return None
        snapshot["opt_in"] = True
        return snapshot


def _content(list_id: int, email_id: int, snapshot: dict[str, Any], found: dict[str, str]) -> dict[str, Any]:
    """The content of a list's opt-in run for its confirmation email and the list (its List: tags) as they are
    now."""
    return {
        "campaign_name": f"Confirmation email of list {list_id}",
        "default_email_id": email_id,
        "emails": {str(email_id): snapshot},
        "lists": {str(list_id): found},
    }
