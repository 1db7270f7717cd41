"""The audience service's view of the campaign service's EmailService: confirmation emails of double opt-in lists."""

from __future__ import annotations

import grpc
import structlog
from google.protobuf import field_mask_pb2
from herald.campaign.v1 import email_pb2, email_pb2_grpc

from services.audience import domain
from services.common import grpcutil
from services.common.errors import not_found

log = structlog.get_logger()

# What a confirmation email sets; the rest keeps EmailService's defaults.
CONFIRMATION_PATHS = (
    "name",
    "subject",
    "preheader_text",
    "from_name",
    "from_email",
    "reply_to_name",
    "reply_to_email",
    "html_content",
    "plain_content",
    "content_type",
    "mode",
    "template_id",
)


class EmailDirectory:
    """Creates, checks and deletes emails with the caller's token (they belong to the caller)."""

    def __init__(self, target: str) -> None:
        self._channel = grpcutil.channel(target)
        self._stub = email_pb2_grpc.EmailServiceStub(self._channel)

    async def created_confirmation_email(self, email: email_pb2.Email, list_id: int) -> int:
        """The id of a new email filled from `email` and validated for opt-in; CONFIRMATION_EMAIL_FAILED
        (with nothing left behind) when the email service refuses it or cannot be reached."""
        try:
            created = await self._stub.CreateEmail(email_pb2.CreateEmailRequest())
        except grpc.aio.AioRpcError as exc:
            raise domain.confirmation_email_failed(_describe(exc)) from exc
        content = email_pb2.Email()
        content.CopyFrom(email)
        content.email_id = created.email_id
        content.owner_user_id = 0
        if not content.name.strip():
            content.name = domain.default_confirmation_email_name(list_id)
        if content.mode == email_pb2.EMAIL_MODE_UNSPECIFIED:
            content.mode = email_pb2.EMAIL_MODE_EMPTY
        request = email_pb2.UpdateEmailRequest(
            email=content,
            update_mask=field_mask_pb2.FieldMask(paths=list(CONFIRMATION_PATHS)),
            validate_scope=email_pb2.VALIDATE_SCOPE_OPT_IN,
        )
        try:
            await self._stub.UpdateEmail(request)
        except grpc.aio.AioRpcError as exc:
            await self.delete_email(created.email_id)
            if any(v.reason == "TEMPLATE_NOT_FOUND" for v in grpcutil.decode_error(exc).violations):
                # A RelTemplateID that names none of the caller's templates (the email service's own check).
                raise domain.confirmation_template_not_found(email.template_id) from exc
            raise domain.confirmation_email_failed(_describe(exc)) from exc
        return created.email_id

    async def delete_email(self, email_id: int) -> None:
        """Removes an email this service created for a list that was then not created."""
        try:
            await self._stub.DeleteEmail(email_pb2.DeleteEmailRequest(email_id=email_id))
        except grpc.aio.AioRpcError as exc:
            # The list is rolled back whatever happens here; an orphan empty email is the lesser harm,
            # and it is logged so that an operator can remove it.
            log.error("could not delete an unused confirmation email", email_id=email_id, error=_describe(exc))

    async def require_email(self, email_id: int) -> None:
        """EMAIL_NOT_FOUND unless the email exists and is the caller's."""
        try:
            await self._stub.GetEmail(email_pb2.GetEmailRequest(email_id=email_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise not_found(
                    domain.EMAIL_NOT_FOUND,
                    f"email {email_id} not found",
                    "opt_in_confirmation_email_id",
                    email_id=str(email_id),
                ) from exc
            raise

    async def close(self) -> None:
        await self._channel.close()


def _describe(error: grpc.aio.AioRpcError) -> str:
    failure = grpcutil.decode_error(error)
    details = "; ".join(v.description for v in failure.violations if v.description)
    return details or failure.message or failure.code.name
