"""The gRPC servicer of herald.delivery.v1.EventWebhookService: a user's event webhook endpoints and their delivery log (docs/webhooks.md)."""

from __future__ import annotations

import asyncio
import socket

import grpc
from google.protobuf import empty_pb2
from herald.delivery.v1 import event_webhooks_pb2, event_webhooks_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from services.common import auth, grpcutil
from services.common.config import Settings
from services.common.errors import Violations
from services.delivery import event_webhook_store, event_webhooks
from services.delivery.event_webhook_sender import SecretSeal

RESOLVE_TIMEOUT_SECONDS = 5.0


def _endpoint_message(row: event_webhook_store.EndpointRow) -> event_webhooks_pb2.WebhookEndpoint:
    return event_webhooks_pb2.WebhookEndpoint(
        endpoint_id=row.endpoint_id,
        owner_user_id=row.owner_user_id,
        url=row.url,
        event_kinds=[
            event_webhooks_pb2.WebhookEventKind.ValueType(kind)
            for kind in event_webhooks.kind_numbers(row.event_types)
        ],
        description=row.description,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disable_time=grpcutil.timestamp(row.disabled_at),
        create_time=grpcutil.timestamp(row.created_at),
        pending_events=row.pending_events,
        failing_since_time=grpcutil.timestamp(row.failing_since),
    )


def _attempt_message(row: event_webhook_store.AttemptRow) -> event_webhooks_pb2.WebhookAttempt:
    return event_webhooks_pb2.WebhookAttempt(
        attempt_id=row.attempt_id,
        event_id=row.event_id,
        event_type=row.event_type,
        campaign_id=row.campaign_id,
        attempt_time=grpcutil.timestamp(row.attempted_at),
        status_code=row.status_code,
        error=row.error,
        latency_ms=row.latency_ms,
        attempt_number=row.attempt_number,
        delivered=row.delivered,
    )


class EventWebhookService(event_webhooks_pb2_grpc.EventWebhookServiceServicer):
    """Every call acts on the caller's own endpoints; another user's endpoint is NOT_FOUND (admins included: an
    endpoint receives its owner's events, so nobody else manages it)."""

    def __init__(self, engine: AsyncEngine, settings: Settings, seal: SecretSeal) -> None:
        self._engine = engine
        self._seal = seal
        self._allow_http = settings.event_webhooks_allow_http
        self._allow_private = settings.allow_private_urls

    async def CreateWebhookEndpoint(
        self, request: event_webhooks_pb2.CreateWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> event_webhooks_pb2.CreateWebhookEndpointResponse:
        owner = auth.principal().user_id
        violations = Violations()
        event_webhooks.check_url(
            request.url, violations, allow_http=self._allow_http, allow_private=self._allow_private
        )
        event_webhooks.check_description(request.description, violations)
        violations.raise_if_any()
        event_types = event_webhooks.validated_event_types(list(request.event_kinds))
        await self._check_resolution(request.url)
        secret = event_webhooks.new_secret()
        async with self._engine.begin() as conn:
            if await event_webhook_store.endpoint_count(conn, owner) >= event_webhooks.MAX_ENDPOINTS_PER_USER:
                raise event_webhooks.too_many_endpoints()
            created = await event_webhook_store.inserted_endpoint(
                conn, owner, request.url, event_types, request.description, self._seal.seal_secret(secret, owner)
            )
        return event_webhooks_pb2.CreateWebhookEndpointResponse(
            endpoint=_endpoint_message(created), signing_secret=secret
        )

    async def _check_resolution(self, url: str) -> None:
        """Refuses a name that resolves to an address the operator does not allow (it is checked again at every
        delivery, since DNS may change) or that does not resolve."""
        host = URL(url).host or ""
        if event_webhooks.literal_address(host) is not None:
            return  # checked with the URL
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise event_webhooks.unresolvable(host) from exc
        refused = event_webhooks.refused_resolution(
            host, [str(info[4][0]) for info in infos], allow_private=self._allow_private
        )
        if refused is not None:
            raise refused

    async def GetWebhookEndpoint(
        self, request: event_webhooks_pb2.GetWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> event_webhooks_pb2.WebhookEndpoint:
        async with self._engine.connect() as conn:
            found = await event_webhook_store.endpoint_of(conn, auth.principal().user_id, request.endpoint_id)
        if found is None:
            raise event_webhooks.endpoint_not_found(request.endpoint_id)
        return _endpoint_message(found)

    async def ListWebhookEndpoints(
        self, request: event_webhooks_pb2.ListWebhookEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> event_webhooks_pb2.ListWebhookEndpointsResponse:
        async with self._engine.connect() as conn:
            rows = await event_webhook_store.endpoints_of(conn, auth.principal().user_id)
        return event_webhooks_pb2.ListWebhookEndpointsResponse(endpoints=[_endpoint_message(row) for row in rows])

    async def DeleteWebhookEndpoint(
        self, request: event_webhooks_pb2.DeleteWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        async with self._engine.begin() as conn:
            deleted = await event_webhook_store.deleted_endpoint_count(
                conn, auth.principal().user_id, request.endpoint_id
            )
        if not deleted:
            raise event_webhooks.endpoint_not_found(request.endpoint_id)
        return empty_pb2.Empty()

    async def EnableWebhookEndpoint(
        self, request: event_webhooks_pb2.EnableWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> event_webhooks_pb2.WebhookEndpoint:
        owner = auth.principal().user_id
        async with self._engine.begin() as conn:
            if not await event_webhook_store.enabled_endpoint_count(conn, owner, request.endpoint_id):
                raise event_webhooks.endpoint_not_found(request.endpoint_id)
            found = await event_webhook_store.endpoint_of(conn, owner, request.endpoint_id)
        assert found is not None
        return _endpoint_message(found)

    async def RotateWebhookSecret(
        self, request: event_webhooks_pb2.RotateWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> event_webhooks_pb2.RotateWebhookSecretResponse:
        owner = auth.principal().user_id
        grace = (
            event_webhooks.secret_grace_seconds(
                request.previous_secret_grace.seconds, request.previous_secret_grace.nanos
            )
            if request.HasField("previous_secret_grace")
            else event_webhooks.secret_grace_seconds(None)
        )
        secret = event_webhooks.new_secret()
        async with self._engine.begin() as conn:
            found, expires = await event_webhook_store.rotated_secret(
                conn, owner, request.endpoint_id, self._seal.seal_secret(secret, owner), grace
            )
            if not found:
                raise event_webhooks.endpoint_not_found(request.endpoint_id)
            endpoint = await event_webhook_store.endpoint_of(conn, owner, request.endpoint_id)
        assert endpoint is not None
        return event_webhooks_pb2.RotateWebhookSecretResponse(
            endpoint=_endpoint_message(endpoint),
            signing_secret=secret,
            previous_secret_expire_time=grpcutil.timestamp(expires),
        )

    async def ListWebhookAttempts(
        self, request: event_webhooks_pb2.ListWebhookAttemptsRequest, context: grpc.aio.ServicerContext
    ) -> event_webhooks_pb2.ListWebhookAttemptsResponse:
        owner = auth.principal().user_id
        limit, before = event_webhooks.attempts_page(request.page_size, request.page_token)
        async with self._engine.connect() as conn:
            if await event_webhook_store.endpoint_of(conn, owner, request.endpoint_id) is None:
                raise event_webhooks.endpoint_not_found(request.endpoint_id)
            rows = await event_webhook_store.attempts_of(conn, owner, request.endpoint_id, limit + 1, before)
        shown = rows[:limit]
        return event_webhooks_pb2.ListWebhookAttemptsResponse(
            attempts=[_attempt_message(row) for row in shown],
            next_page_token=str(shown[-1].attempt_id) if len(rows) > limit else "",
        )
