"""Email previews: delivery's consumer of `campaign.email_preview_requested` (EmailService.SendEmailPreview).

Each request becomes one Pending row in the user's preview run (sending.preview_run_id) and one batch
message, in one unit of work, the way opt_in.py queues a confirmation email; the worker then renders,
signs and sends it like any run's message. The subject carries "[Test] ". The row names no list and no
subscriber, so the preview has no unsubscribe or report-abuse link and a bounce of it changes no
subscriber; the sample subscriber's values travel in the row's custom fields instead, and its list (read
with GetList for the List: tags) in the content under list 0, the row's.

The request is signed by the campaign service (it sends mail to any address): one without a valid
signature does not decode and sends nothing. A request delivered twice is queued once (preview_requests).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc
import structlog
from google.protobuf import timestamp_pb2
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.campaign.v1 import email_pb2, email_pb2_grpc

from services.common import events, grpcutil
from services.common.config import Settings
from services.common.outbox import Outbox
from services.common.personalization import HashedIds, legacy_instant, list_snapshot
from services.delivery import queue_store, sending
from services.delivery.message import email_snapshot
from services.delivery.queue import owner_metadata
from services.delivery.sending import RunState

log = structlog.get_logger()

PREVIEW_REQUESTED_DURABLE = "delivery-email-preview-requested"
SUBJECT_PREFIX = "[Test] "
# Without a list to take a subscriber from, these stand in for one.
SAMPLE_FIRST_NAME = "Sample"
SAMPLE_LAST_NAME = "Subscriber"
_REFUSALS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


def _instant(moment: timestamp_pb2.Timestamp, is_set: bool) -> str:
    return legacy_instant(moment.ToDatetime(UTC) if is_set else None)


def sample_recipient(event: email_pb2.EmailPreviewRequestedEvent, hashed_ids: HashedIds) -> dict[str, Any]:
    """The preview's queue row: to the preview address, with the sample subscriber's values."""
    if event.subscriber_id:
        # Keys the renderer reads as Subscriber:<key>: the subscriber's own values, not the row's (which names
        # no subscriber).
        custom_fields = {
            **dict(event.custom_fields),
            "EmailAddress": event.subscriber_email_address,
            "SubscriberID": str(event.subscriber_id),
            "Status": event.subscriber_status,
            "SubscriptionDate": _instant(event.subscription_time, event.HasField("subscription_time")),
            "SubscriptionIP": event.subscription_ip,
            "OptInDate": _instant(event.opt_in_time, event.HasField("opt_in_time")),
            "HashedSubscriberID": hashed_ids.subscriber(event.subscriber_id),
        }
        first_name, last_name = event.first_name, event.last_name
    else:
        custom_fields, first_name, last_name = {}, SAMPLE_FIRST_NAME, SAMPLE_LAST_NAME
    return {
        "subscriber_id": 0,
        "list_id": 0,
        "email_address": event.email_address,
        "first_name": first_name,
        "last_name": last_name,
        "custom_fields": custom_fields,
        "email_id": event.email_id,
    }


class EmailPreviews:
    """Queues the previews EmailService asks for."""

    def __init__(self, settings: Settings, outbox: Outbox) -> None:
        self._settings = settings
        self._outbox = outbox
        self._channel = grpcutil.channel(settings.grpc_addr("campaign"))
        self._emails = email_pb2_grpc.EmailServiceStub(self._channel)
        self._audience_channel = grpcutil.channel(settings.grpc_addr("audience"))
        self._audience = audience_pb2_grpc.AudienceServiceStub(self._audience_channel)
        self._hashed_ids = HashedIds(settings.effective_token_secret())

    async def close(self) -> None:
        await self._channel.close()
        await self._audience_channel.close()

    def consumers(self) -> list[events.Consumer[Any]]:
        return [
            events.Consumer(
                PREVIEW_REQUESTED_DURABLE,
                events.EMAIL_PREVIEW_REQUESTED,
                self.handle_request,
                signer=events.signer_of(events.EMAIL_PREVIEW_REQUESTED, self._settings),
            )
        ]

    async def handle_request(self, event: email_pb2.EmailPreviewRequestedEvent) -> None:
        context = {
            "email_id": event.email_id,
            "owner_user_id": event.owner_user_id,
            "request_id": event.request_id,
        }
        snapshot = await self._snapshot(event)
        if snapshot is None:
            return
        run_id = sending.preview_run_id(event.owner_user_id)
        content: dict[str, Any] = {
            "campaign_name": f"Preview of email {event.email_id}",
            "default_email_id": event.email_id,
            "emails": {str(event.email_id): snapshot},
        }
        if event.list_id:
            found = await self._list(event)
            if found is not None:
                content["lists"] = {"0": found}
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            if not await queue_store.recorded_preview_request(conn, event.request_id, run_id):
                log.info("email preview already queued", **context)
                return
            run = await queue_store.ensured_run_for_update(conn, run_id, event.owner_user_id, RunState.SENDING)
            occurrence = run.occurrence if run.content == content else run.occurrence + 1
            generation, batch_id = await queue_store.opened_opt_in_batch(
                conn, run, content=content, occurrence=occurrence
            )
            await queue_store.queue_opt_in_recipient(
                conn,
                run,
                occurrence=occurrence,
                generation=generation,
                batch_id=batch_id,
                recipient=sample_recipient(event, self._hashed_ids),
            )
            await queue_store.add_batch_messages(work, run_id, batch_id, batch_id, generation)
        log.info("email preview queued", campaign_id=run_id, batch_id=batch_id, **context)

    async def _list(self, event: email_pb2.EmailPreviewRequestedEvent) -> dict[str, str] | None:
        """What the preview's List: tags show of the sample subscriber's list; None (they render empty) when gone."""
        try:
            found = await self._audience.GetList(
                audience_pb2.GetListRequest(list_id=event.list_id),
                metadata=owner_metadata(self._settings, event.owner_user_id),
                timeout=30,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REFUSALS:
                return None
            raise
        return list_snapshot(found)

    async def _snapshot(self, event: email_pb2.EmailPreviewRequestedEvent) -> dict[str, Any] | None:
        """The email as the run keeps it, subject marked as a test, or None (logged) when it cannot be sent."""
        metadata = owner_metadata(self._settings, event.owner_user_id)
        try:
            email = await self._emails.GetEmail(
                email_pb2.GetEmailRequest(email_id=event.email_id), metadata=metadata, timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _REFUSALS:
                log.warning("email preview cannot be sent", email_id=event.email_id, error=exc.details())
                return None
            raise
        snapshot = email_snapshot(email)
        if not snapshot["from_email"] or not (snapshot["html"] or snapshot["plain"]):
            log.warning("email preview has no sender or no content", email_id=event.email_id)
            return None
        snapshot["subject"] = SUBJECT_PREFIX + snapshot["subject"]
        return snapshot
