"""The EmailService servicer: turns requests into email rules and store queries (a template's too, for Template mode), and emails back into protos."""

from __future__ import annotations

import uuid

import grpc
import structlog
from google.protobuf import empty_pb2, timestamp_pb2
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.campaign.v1 import email_pb2, email_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.campaign import email_domain, email_store, template_store
from services.campaign.domain import Unrecognized
from services.campaign.email_domain import ContentType, Email, EmailMode, Utm, ValidateScope
from services.campaign.template_domain import Template
from services.common import auth, errors, events, field_masks, grpcutil
from services.common.event_signing import EventSigner
from services.common.outbox import Outbox
from services.common.subscriber_statuses import SUBSCRIBER_STATUS_NAMES

CONTENT_TYPE_TO_PROTO: dict[ContentType, email_pb2.ContentType.ValueType] = {
    ContentType.HTML: email_pb2.CONTENT_TYPE_HTML,
    ContentType.PLAIN: email_pb2.CONTENT_TYPE_PLAIN,
    ContentType.BOTH: email_pb2.CONTENT_TYPE_BOTH,
}
CONTENT_TYPE_FROM_PROTO: dict[int, ContentType] = {value: name for name, value in CONTENT_TYPE_TO_PROTO.items()}
MODE_TO_PROTO: dict[EmailMode, email_pb2.EmailMode.ValueType] = {
    EmailMode.EMPTY: email_pb2.EMAIL_MODE_EMPTY,
    EmailMode.EDITOR: email_pb2.EMAIL_MODE_EDITOR,
    EmailMode.TEMPLATE: email_pb2.EMAIL_MODE_TEMPLATE,
    EmailMode.IMPORT: email_pb2.EMAIL_MODE_IMPORT,
    EmailMode.UNLAYER: email_pb2.EMAIL_MODE_UNLAYER,
    EmailMode.STRIPO: email_pb2.EMAIL_MODE_STRIPO,
}
MODE_FROM_PROTO: dict[int, EmailMode] = {value: mode for mode, value in MODE_TO_PROTO.items()}
VALIDATE_SCOPE_FROM_PROTO: dict[int, ValidateScope] = {
    email_pb2.VALIDATE_SCOPE_OPT_IN: ValidateScope.OPT_IN,
    email_pb2.VALIDATE_SCOPE_CAMPAIGN: ValidateScope.CAMPAIGN,
    email_pb2.VALIDATE_SCOPE_AUTO_RESPONDER: ValidateScope.AUTO_RESPONDER,
}


def _mode_from_proto(value: int) -> EmailMode | Unrecognized:
    return MODE_FROM_PROTO.get(value) or Unrecognized(value)


def validate_scope_from_proto(value: int) -> ValidateScope | Unrecognized | None:
    """The scope a request names; None when it names none (UNSPECIFIED)."""
    if value == email_pb2.VALIDATE_SCOPE_UNSPECIFIED:
        return None
    return VALIDATE_SCOPE_FROM_PROTO.get(value) or Unrecognized(value)


def email_to_proto(email: Email) -> email_pb2.Email:
    utm = email.utm
    return email_pb2.Email(
        email_id=email.email_id,
        owner_user_id=email.owner_user_id,
        name=email.name,
        subject=email.subject,
        preheader_text=email.preheader_text,
        from_name=email.from_name,
        from_email=email.from_email,
        reply_to_name=email.reply_to_name,
        reply_to_email=email.reply_to_email,
        html_content=email.html_content,
        plain_content=email.plain_content,
        content_type=CONTENT_TYPE_TO_PROTO[email.content_type],
        mode=MODE_TO_PROTO[email.mode],
        fetch_url=email.fetch_url,
        fetch_plain_url=email.fetch_plain_url,
        template_id=email.template_id,
        image_embedding=email.image_embedding,
        is_email_template=email.is_email_template,
        extra_content1=email.extra_content1,
        extra_content2=email.extra_content2,
        open_tracking=email.open_tracking,
        link_tracking=email.link_tracking,
        utm=email_pb2.UtmTracking(
            enabled=utm.enabled,
            source=utm.source,
            medium=utm.medium,
            campaign=utm.campaign,
            term=utm.term,
            content=utm.content,
            merge_tags=utm.merge_tags,
        ),
        create_time=grpcutil.timestamp(email.created_at),
        update_time=grpcutil.timestamp(email.updated_at),
    )


def _utm(message: email_pb2.UtmTracking) -> Utm:
    return Utm(
        enabled=message.enabled,
        source=message.source,
        medium=message.medium,
        campaign=message.campaign,
        term=message.term,
        content=message.content,
        merge_tags=message.merge_tags,
    )


def _value_at(email: email_pb2.Email, path: str) -> object:
    """The value an update-mask path names in the request's email; None for a path that names no field, and
    for an enum value this version does not know (the rules then refuse it)."""
    if path == "utm":
        return _utm(email.utm)
    if path == "content_type":
        return CONTENT_TYPE_FROM_PROTO.get(email.content_type)
    if path == "mode":
        return MODE_FROM_PROTO.get(email.mode)
    owner, _, name = path.rpartition(".")
    message = email.utm if owner == "utm" else email if not owner else None
    if message is None or name not in message.DESCRIPTOR.fields_by_name:
        return None
    if message is email and email.DESCRIPTOR.fields_by_name[name].message_type is not None:
        return None
    value: object = getattr(message, name)
    return value


class EmailService(email_pb2_grpc.EmailServiceServicer):
    """Every method works within the caller's emails (an admin's: everyone's); DomainError becomes a status in
    the CallInterceptor."""

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Outbox,
        audience: audience_pb2_grpc.AudienceServiceStub,
        preview_signer: EventSigner,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._audience = audience
        self._preview_signer = preview_signer

    async def CreateEmail(
        self, request: email_pb2.CreateEmailRequest, context: grpc.aio.ServicerContext
    ) -> email_pb2.Email:
        owner_user_id = email_domain.owner_of_new_email(auth.principal())
        mode = None if request.mode == email_pb2.EMAIL_MODE_UNSPECIFIED else _mode_from_proto(request.mode)
        async with self._engine.begin() as conn:
            template: Template | None = None
            if request.template_id > 0:
                template = await template_store.template_by_id(conn, request.template_id, owner_user_id)
            new = email_domain.new_email(owner_user_id, mode, request.template_id, template=template)
            email = await email_store.insert_email(conn, new)
        structlog.contextvars.bind_contextvars(email_id=email.email_id)
        return email_to_proto(email)

    async def GetEmail(
        self, request: email_pb2.GetEmailRequest, context: grpc.aio.ServicerContext
    ) -> email_pb2.Email:
        email_domain.validate_email_id(request.email_id)
        structlog.contextvars.bind_contextvars(email_id=request.email_id)
        async with self._engine.connect() as conn:
            email = await email_store.email_by_id(
                conn, request.email_id, email_domain.owner_scope(auth.principal())
            )
        if email is None:
            raise email_domain.email_not_found(request.email_id)
        return email_to_proto(email)

    async def ListEmails(
        self, request: email_pb2.ListEmailsRequest, context: grpc.aio.ServicerContext
    ) -> email_pb2.ListEmailsResponse:
        owner = email_domain.owner_scope(auth.principal())
        email_ids = email_domain.listed_email_ids(request.email_ids)
        async with self._engine.connect() as conn:
            if email_ids:
                emails = await email_store.emails_by_ids(conn, email_ids, owner)
            else:
                emails = await email_store.emails_by_name(conn, owner)
        return email_pb2.ListEmailsResponse(emails=[email_to_proto(email) for email in emails])

    async def UpdateEmail(
        self, request: email_pb2.UpdateEmailRequest, context: grpc.aio.ServicerContext
    ) -> email_pb2.Email:
        paths = field_masks.update_paths(request.update_mask, request.email, email_domain.UPDATABLE_PATHS)
        values = {path: _value_at(request.email, path) for path in paths}
        update = email_domain.prepare_update(
            request.email.email_id, validate_scope_from_proto(request.validate_scope), values
        )
        structlog.contextvars.bind_contextvars(email_id=update.email_id)
        owner = email_domain.owner_scope(auth.principal())
        async with self._engine.begin() as conn:
            current: Email | None = None
            template: Template | None = None
            if update.email_id > 0:
                current = await email_store.email_by_id(conn, update.email_id, owner, for_update=True)
            if current is not None and (template_id := email_domain.named_template_id(update, current)):
                # The email owner's template, whoever calls: an admin's call must not copy another user's.
                template = await template_store.template_by_id(conn, template_id, current.owner_user_id)
            email = email_domain.updated_email(update, current, template=template)
            saved = await email_store.update_email(conn, email)
        if saved is None:  # only if the locked row vanished, which a soft delete never does
            raise email_domain.email_not_found(update.email_id)
        return email_to_proto(saved)

    async def DeleteEmail(
        self, request: email_pb2.DeleteEmailRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        email_domain.validate_email_id(request.email_id)
        structlog.contextvars.bind_contextvars(email_id=request.email_id)
        async with self._engine.begin() as conn:
            deleted = await email_store.delete_email(
                conn, request.email_id, email_domain.owner_scope(auth.principal())
            )
        if deleted is None:
            raise email_domain.email_not_found(request.email_id)
        return empty_pb2.Empty()

    async def SendEmailPreview(
        self, request: email_pb2.SendEmailPreviewRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        address = email_domain.check_preview_request(request.email_id, request.email_address, request.list_id)
        structlog.contextvars.bind_contextvars(email_id=request.email_id)
        async with self._engine.connect() as conn:
            email = await email_store.email_by_id(
                conn, request.email_id, email_domain.owner_scope(auth.principal())
            )
        if email is None:
            raise email_domain.email_not_found(request.email_id)
        if problems := email_domain.preview_violations(email):
            raise email_domain.preview_failure(problems)
        event = email_pb2.EmailPreviewRequestedEvent(
            owner_user_id=email.owner_user_id,
            email_id=email.email_id,
            email_address=address,
            request_id=uuid.uuid4().hex,
            request_time=timestamp_pb2.Timestamp(),
        )
        event.request_time.GetCurrentTime()
        if request.list_id:
            await self._personalize(event, request.list_id)
        async with self._outbox.unit_of_work() as work:
            work.publish(
                events.EMAIL_PREVIEW_REQUESTED,
                event,
                key=f"preview:{event.request_id}",
                signer=self._preview_signer,
            )
        structlog.get_logger().info("email preview requested", list_id=request.list_id)
        return empty_pb2.Empty()

    async def _personalize(self, event: email_pb2.EmailPreviewRequestedEvent, list_id: int) -> None:
        """Fills in the list's first subscriber (asked with the caller's token: another user's list is not
        found); an empty list leaves the sample values."""
        try:
            listed = await self._audience.ListSubscribers(
                audience_pb2.ListSubscribersRequest(list_id=list_id, page_size=1, order_by="subscriber_id"),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise errors.not_found("LIST_NOT_FOUND", f"list {list_id} not found", "list_id") from None
            raise
        if not listed.subscribers:
            return
        subscriber = listed.subscribers[0]
        event.list_id = list_id
        event.subscriber_id = subscriber.subscriber_id
        event.subscriber_email_address = subscriber.email_address
        event.first_name = subscriber.first_name
        event.last_name = subscriber.last_name
        event.custom_fields.update(subscriber.custom_fields)
        event.subscriber_status = SUBSCRIBER_STATUS_NAMES.get(subscriber.status, "")
        event.subscription_ip = subscriber.subscription_ip
        if subscriber.HasField("subscription_time"):
            event.subscription_time.CopyFrom(subscriber.subscription_time)
        if subscriber.HasField("opt_in_time"):
            event.opt_in_time.CopyFrom(subscriber.opt_in_time)
