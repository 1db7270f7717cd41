"""`herald webhooks create|list|get|delete|enable|attempts|rotate`: a user's event webhook endpoints (docs/webhooks.md) through EventWebhookService; `create` prints the signing secret, once.

The command calls as the user it names (a token minted from the identity store), so it can do no more
than that user could. Answers are JSON on stdout; a failure is one JSON line on stderr (services/cli.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message
from herald.delivery.v1 import event_webhooks_pb2, event_webhooks_pb2_grpc

from services import cli_calls
from services.common.config import Settings
from services.delivery import event_webhooks

if TYPE_CHECKING:
    from translator.identity import IdentityStore


def add_arguments(webhooks: argparse._SubParsersAction[Any], positive: Callable[[str], int]) -> None:
    create = webhooks.add_parser(
        "create", help="register an endpoint for a user's events; prints its signing secret (shown only once)"
    )
    create.add_argument("--user", type=positive, required=True, help="user id (whose events the endpoint gets)")
    create.add_argument("--url", required=True, help="the https URL Herald POSTs each event to")
    create.add_argument(
        "--event",
        action="append",
        required=True,
        choices=event_webhooks.EVENT_TYPES,
        help="an event type to receive (repeat the option for several)",
    )
    create.add_argument("--description", default="", help="a note for yourself")
    listing = webhooks.add_parser("list", help="list the user's endpoints (never a secret)")
    listing.add_argument("--user", type=positive, required=True, help="user id")
    for name, text in (
        ("get", "show one endpoint: enabled, why disabled, events waiting"),
        ("delete", "remove an endpoint with its waiting events and its log"),
        ("enable", "enable a disabled endpoint; what it missed is sent, in order"),
        ("attempts", "the endpoint's delivery log, newest first: status codes, errors, latency"),
        ("rotate", "a new signing secret (printed once); the previous one keeps signing too for the grace time"),
    ):
        command = webhooks.add_parser(name, help=text)
        command.add_argument("--user", type=positive, required=True, help="user id")
        command.add_argument("--endpoint", type=positive, required=True, help="endpoint id")
        if name == "attempts":
            command.add_argument(
                "--limit", type=positive, default=100, help="how many (default 100, at most 1000)"
            )


def _time(message: Any, name: str) -> str:
    return (
        message.__getattribute__(name).ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if message.HasField(name) else ""
    )


def shown(endpoint: event_webhooks_pb2.WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the command prints it."""
    return {
        "EndpointID": endpoint.endpoint_id,
        "UserID": endpoint.owner_user_id,
        "URL": endpoint.url,
        "Events": [event_webhooks.EVENT_TYPES[kind - 1] for kind in endpoint.event_kinds],
        "Description": endpoint.description,
        "Enabled": endpoint.enabled,
        "DisabledReason": endpoint.disabled_reason,
        "DisabledOn": _time(endpoint, "disable_time"),
        "FailingSince": _time(endpoint, "failing_since_time"),
        "PendingEvents": endpoint.pending_events,
        "CreatedOn": _time(endpoint, "create_time"),
    }


def shown_attempt(attempt: event_webhooks_pb2.WebhookAttempt) -> dict[str, Any]:
    return {
        "AttemptID": attempt.attempt_id,
        "EventID": attempt.event_id,
        "Type": attempt.event_type,
        "CampaignID": attempt.campaign_id,
        "Attempt": attempt.attempt_number,
        "At": _time(attempt, "attempt_time"),
        "StatusCode": attempt.status_code,
        "Error": attempt.error,
        "LatencyMs": attempt.latency_ms,
        "Delivered": attempt.delivered,
    }


async def _call(settings: Settings, token: str, rpc: Callable[[Any], Any], request: Message) -> Any:
    return await cli_calls.call(
        settings, "delivery", event_webhooks_pb2_grpc.EventWebhookServiceStub, token, rpc, request
    )


def action(args: argparse.Namespace, settings: Settings) -> Callable[[IdentityStore], Awaitable[Any]]:
    """What `herald webhooks <action>` does with the identity store (the user's token) and the delivery service."""

    async def run(store: IdentityStore) -> Any:
        token = await cli_calls.user_token(store, args.user)
        if args.action == "create":
            kinds = [
                event_webhooks_pb2.WebhookEventKind.ValueType(event_webhooks.EVENT_TYPES.index(name) + 1)
                for name in args.event
            ]
            created = await _call(
                settings,
                token,
                lambda stub: stub.CreateWebhookEndpoint,
                event_webhooks_pb2.CreateWebhookEndpointRequest(
                    url=args.url, event_kinds=kinds, description=args.description
                ),
            )
            return {"Endpoint": shown(created.endpoint), "SigningSecret": created.signing_secret}
        if args.action == "list":
            found = await _call(
                settings,
                token,
                lambda stub: stub.ListWebhookEndpoints,
                event_webhooks_pb2.ListWebhookEndpointsRequest(),
            )
            return [shown(endpoint) for endpoint in found.endpoints]
        if args.action == "get":
            one = await _call(
                settings,
                token,
                lambda stub: stub.GetWebhookEndpoint,
                event_webhooks_pb2.GetWebhookEndpointRequest(endpoint_id=args.endpoint),
            )
            return shown(one)
        if args.action == "enable":
            one = await _call(
                settings,
                token,
                lambda stub: stub.EnableWebhookEndpoint,
                event_webhooks_pb2.EnableWebhookEndpointRequest(endpoint_id=args.endpoint),
            )
            return shown(one)
        if args.action == "delete":
            await _call(
                settings,
                token,
                lambda stub: stub.DeleteWebhookEndpoint,
                event_webhooks_pb2.DeleteWebhookEndpointRequest(endpoint_id=args.endpoint),
            )
            return {"UserID": args.user, "EndpointID": args.endpoint, "Deleted": True}
        if args.action == "rotate":
            request = event_webhooks_pb2.RotateWebhookSecretRequest(endpoint_id=args.endpoint)
            if args.grace_seconds is not None:
                request.previous_secret_grace.seconds = args.grace_seconds
            rotated = await _call(settings, token, lambda stub: stub.RotateWebhookSecret, request)
            return {
                "Endpoint": shown(rotated.endpoint),
                "SigningSecret": rotated.signing_secret,
                "PreviousSecretSignsUntil": _time(rotated, "previous_secret_expire_time"),
            }
        log = await _call(
            settings,
            token,
            lambda stub: stub.ListWebhookAttempts,
            event_webhooks_pb2.ListWebhookAttemptsRequest(endpoint_id=args.endpoint, page_size=args.limit),
        )
        return [shown_attempt(attempt) for attempt in log.attempts]

    return run
