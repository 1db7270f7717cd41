"""What the `herald` commands that call a service share (`dkim`, `template`): a token for the user they name, or an
admin's, and one call whose failure is the one line the user sees (services/cli.py prints it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import message as protobuf_message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import Principal, mint_token
from services.common.config import Settings
from services.common.grpcutil import channel, decode_error

if TYPE_CHECKING:
    from translator.identity import IdentityStore


class CallFailed(Exception):
    """The service refused the call or could not be reached; the message is the line the user sees."""


TOKEN_TTL_SECONDS = 300


async def user_token(store: IdentityStore, user_id: int) -> str:
    """A token of the user, minted from the identity store, which also tells a user id that does not exist."""
    token: str = (await store.mint_for(user_id=user_id, admin_id=None, ttl=TOKEN_TTL_SECONDS))["Token"]
    return token


def admin_token(settings: Settings) -> str:
    """A token of an admin, for what concerns every user (lists of everyone's domains or templates)."""
    return mint_token(Principal(user_id=0, is_admin=True), settings.effective_token_secret(), TOKEN_TTL_SECONDS)


async def call(
    settings: Settings,
    service: str,
    stub_type: Callable[[grpc.aio.Channel], Any],
    token: str,
    rpc: Callable[[Any], Any],
    request: protobuf_message.Message,
) -> Any:
    """The answer of `rpc(stub)(request)` on `service`, called with the token; CallFailed with every bad field the
    service named, or saying that it could not be reached."""
    address = settings.grpc_addr(service)
    # Herald's channel: its service config, TLS and the default deadline of the call's kind.
    async with channel(address, forward_principal=False, settings=settings) as herald_channel:
        try:
            answer: protobuf_message.Message = await rpc(stub_type(herald_channel))(
                request, metadata=(("authorization", f"Bearer {token}"),), wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            failure = decode_error(exc)
            if (
                failure.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                and not failure.reason
            ):
                why = await connection_failure(herald_channel) or failure.message
                raise CallFailed(f"{service} service unreachable at {address}: {why}") from exc
            # Every bad field at once, as the service reported them.
            message = "; ".join(v.description for v in failure.violations) or failure.message
            raise CallFailed(message) from exc
    return answer


async def connection_failure(herald_channel: grpc.aio.Channel) -> str:
    """Why the channel cannot connect, in gRPC's words ('' if it can): a call that waited for the service until its
    deadline says only "Deadline Exceeded", while one that does not wait names the connection's last error (a
    refused connection, a certificate that does not verify)."""
    try:
        await health_pb2_grpc.HealthStub(herald_channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return exc.details() or ""
    return ""
