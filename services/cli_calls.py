"""What the `herald` commands that call a service share (`dkim`, `template`): a token for the user they name, or an
admin's, and one call whose failure is the one line the user sees (services/cli.py prints it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import message as protobuf_message

from services.common.auth import Principal, mint_token
from services.common.config import Settings
from services.common.grpcutil import decode_error

if TYPE_CHECKING:
    from translator.identity import IdentityStore


class CallFailed(Exception):
    """The service refused the call or could not be reached; the message is the line the user sees."""


TOKEN_TTL_SECONDS = 300
CALL_TIMEOUT_SECONDS = 30.0


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
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            answer: protobuf_message.Message = await rpc(stub_type(channel))(
                request,
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=CALL_TIMEOUT_SECONDS,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            failure = decode_error(exc)
            if (
                failure.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                and not failure.reason
            ):
                raise CallFailed(f"{service} service unreachable at {address}: {failure.message}") from exc
            # Every bad field at once, as the service reported them.
            message = "; ".join(v.description for v in failure.violations) or failure.message
            raise CallFailed(message) from exc
    return answer
