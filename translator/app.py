"""The legacy HTTP edge: parses /api.php and /api/v1/<command> requests, authenticates, dispatches, answers."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from services.common import db, health, tracing
from services.common.grpcutil import decode_error
from services.common.logging import RepeatingFailure
from services.common.permissions import PERMISSION_DENIED
from translator import archive, envelope, mail, message_pages, openapi, tracking, webhooks
from translator.bodies import MAX_BODY, UnreadableBody, read_params
from translator.commands import UNAVAILABLE_CODES, Args, Command, Context, Problems, Stubs
from translator.commands.registry import V1_PATHS
from translator.envelope import AuthError, HardFailure, LegacyError, respond
from translator.forwarded import TrustedProxies
from translator.identity import Caller, IdentityStore
from translator.params import Params
from translator.ratelimit import RateLimited, RateLimiter

log = structlog.get_logger()
# Printable ASCII without spaces, bounded: what a request id from a proxy or a client looks like.
REQUEST_ID_RE = re.compile(r"[!-~]{1,128}")

REQUESTS = Counter("herald_translator_requests_total", "Legacy requests", ["command", "outcome"])
LATENCY = Histogram("herald_translator_request_seconds", "Legacy request latency", ["command"])

COMMANDS_KEY = web.AppKey("commands", dict)
IDENTITY_KEY = web.AppKey("identity", IdentityStore)
STUBS_KEY = web.AppKey("stubs", Stubs)
PUBLIC_URL_KEY = web.AppKey("public_url", str)
RATE_LIMITER_KEY = web.AppKey("rate_limiter", RateLimiter)
TRUSTED_PROXIES_KEY = web.AppKey("trusted_proxies", TrustedProxies)
OPENAPI_KEY = web.AppKey("openapi", bytes)


def request_id_of(request: web.Request) -> str:
    """The caller's X-Request-Id when it is a sane token, else a new one: it is logged and forwarded
    as gRPC metadata, which must be printable ASCII."""
    given = request.headers.get("X-Request-Id", "")
    return given if REQUEST_ID_RE.fullmatch(given) else os.urandom(8).hex()


async def _authenticate(command: Command, params: Params, identity: IdentityStore) -> Any:
    if command.scope == "none":
        return None
    api_key = params.str("apikey") if isinstance(params.raw("apikey"), str) else None
    admin_key = params.str("adminapikey") if isinstance(params.raw("adminapikey"), str) else None
    session = params.str("sessionid") if isinstance(params.raw("sessionid"), str) else None
    if command.scope == "optional" and not (api_key or admin_key or session):
        return None
    caller = None
    if admin_key:
        caller = await identity.authenticate(api_key=admin_key)
        if caller is not None and not caller.is_admin:
            caller = None
    elif api_key:
        caller = await identity.authenticate(api_key=api_key)
    elif session:
        caller = await identity.authenticate(session_id=session)
    if caller is None:
        text = (
            "Missing or invalid admin credentials"
            if command.scope == "admin"
            else ("Authentication failure or session expired")
        )
        raise AuthError(envelope.NOT_AUTHENTICATED, text)
    if command.scope == "admin" and not caller.is_admin:
        raise AuthError(envelope.NOT_PERMITTED, "Not enough privileges: admin credentials required")
    if command.scope in ("user", "optional") and caller.is_admin:
        raise AuthError(envelope.NOT_PERMITTED, "Not enough privileges: this command needs user credentials")
    if command.permission and not caller.may(command.permission):
        raise AuthError(envelope.NOT_PERMITTED, f"User lacks required permission ({command.permission})")
    return caller


def _mapped(command: Command, problems: Problems) -> LegacyError:
    failure = problems.failure
    if failure is not None and failure.reason == PERMISSION_DENIED:
        # A service refused the caller's token for an RPC behind the command (services/common/permissions.py).
        # The command's own permission was checked first, so this is a mismatch worth a log line; the
        # caller still gets the legacy answer to a missing permission rather than a fault.
        log.warning("a service denied a permitted command", command=command.name, error=failure.message)
        raise AuthError(envelope.NOT_PERMITTED, f"Not enough privileges: {failure.message}")
    mapped = command.legacy_error(problems)
    if mapped is None:
        log.error(
            "no legacy code for an error",
            command=command.name,
            params=[p.name for p in problems.params],
            reasons=failure.field_reasons() if failure else [],
        )
        raise HardFailure(envelope.UNEXPECTED_FAULT, "Unexpected error", 500)
    return mapped


def _find_command(request: web.Request, name: str, *, via_v1: bool) -> Command:
    aliased = V1_PATHS.get((name.lower(), request.method)) if via_v1 else None
    command: Command | None = request.app[COMMANDS_KEY].get((aliased or name).lower())
    if request.method not in (command.methods if command is not None else ("POST",)):
        # Only the commands that allow it answer GET; any other GET, even of an unknown command, is 100001.
        raise HardFailure(envelope.INVALID_METHOD, f"Unsupported connection method {request.method}", 400)
    if command is None or (via_v1 and aliased is None and not command.v1_alias):
        raise HardFailure(envelope.UNKNOWN_COMMAND, f'Invalid API command: "{name}" not found.', 400)
    return command


def _client_address(request: web.Request) -> str:
    """The client's address: the peer's, or behind trusted proxies the one they forward."""
    forwarded = request.headers.getall("X-Forwarded-For", [])
    return request.app[TRUSTED_PROXIES_KEY].client(request.remote or "", forwarded)


def _rate_limit_key(caller: Caller | None, client: str) -> str:
    """Whom a command's rate limit counts: the user or admin behind the credentials, however they are
    spelled (another session or a padded key is the same caller), or the address of a caller without."""
    if caller is None:
        return f"address {client}"
    return f"admin {caller.admin_id}" if caller.is_admin else f"user {caller.user_id}"


async def _dispatch(request: web.Request, command: Command, raw: Mapping[str, object]) -> dict[str, Any]:
    params = Params(raw)
    try:
        caller = await _authenticate(command, params, request.app[IDENTITY_KEY])
    except Exception as exc:
        if not db.is_connection_failure(exc):
            raise
        raise _component_failed(exc) from exc
    client = _client_address(request)
    if command.rate_limit is not None:
        request.app[RATE_LIMITER_KEY].admit((command.name, _rate_limit_key(caller, client)), *command.rate_limit)
    metadata: tuple[tuple[str, str], ...] = (("x-request-id", request["request_id"]),)
    if caller is not None:
        metadata += (("authorization", f"Bearer {request.app[IDENTITY_KEY].token_for(caller)}"),)
    ctx = Context(
        caller=caller,
        metadata=metadata,
        stubs=request.app[STUBS_KEY],
        identity=request.app[IDENTITY_KEY],
        public_url=request.app[PUBLIC_URL_KEY],
        client_address=client,
    )
    args = Args(params.declared_only(command.parameter_names, command.parameter_families))
    try:
        payload = await command.handler(args, ctx)
    except Problems as exc:
        raise _mapped(command, exc) from exc
    except grpc.aio.AioRpcError as exc:
        if exc.code() in UNAVAILABLE_CODES:
            raise HardFailure(
                envelope.COMPONENT_FAILED, "A required server component is unavailable", 500
            ) from exc
        raise _mapped(command, Problems([], decode_error(exc))) from exc
    except Exception as exc:
        if not db.is_connection_failure(exc):
            raise
        raise _component_failed(exc) from exc
    return payload


# The translator's own database (identity: keys, sessions) unreachable: logged once per interval, answered 100004.
_DATABASE_AWAY = RepeatingFailure("the identity database is unreachable; answering 100004")


def _component_failed(exc: Exception) -> HardFailure:
    """100004 (a required component is unavailable, HTTP 500 as the legacy API documents it) for a database
    outage, rather than 100005 and a traceback per request."""
    _DATABASE_AWAY.failed(exc)
    return HardFailure(envelope.COMPONENT_FAILED, "A required server component is unavailable", 500)


async def _database_back(ready: bool) -> None:
    if ready:
        _DATABASE_AWAY.recovered()


def _with_errors(command: Command | None, body: dict[str, Any]) -> dict[str, Any]:
    """v1-style handlers answer errors in both shapes: the envelope and `Errors: [{Code, Message}]`."""
    if command is None or not command.errors_list:
        return body
    codes, texts = body["ErrorCode"], body["ErrorText"]
    pairs = zip(codes, texts, strict=True) if isinstance(codes, list) else [(codes, texts)]
    return {**body, "Errors": [{"Code": code, "Message": text} for code, text in pairs]}


async def api(request: web.Request) -> web.Response:
    """POST /api.php and /api/v1/<command> (GET for the commands that allow it)."""
    started = time.perf_counter()
    request["request_id"] = request_id_of(request)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request["request_id"])
    xml = False
    command: Command | None = None
    name = request.match_info.get("command", "")
    try:
        if request.method not in ("POST", "GET"):
            raise HardFailure(envelope.INVALID_METHOD, f"Unsupported connection method {request.method}", 400)
        raw = await read_params(request)
        xml = raw.get("responseformat") == "XML"
        if not name:
            value = raw.get("command")
            name = value if isinstance(value, str) else ""
        command = _find_command(request, name.strip(), via_v1="command" in request.match_info)
        payload = await _dispatch(request, command, raw)
        body: dict[str, Any] = {"Success": True, "ErrorCode": 0, **payload}
        outcome, response = "ok", respond(body, xml=xml)
    except LegacyError as exc:
        shape = command.shape if command is not None else "int"
        outcome, response = "error", respond(_with_errors(command, envelope.error_body(exc, shape)), xml=xml)
    except AuthError as exc:
        outcome = "auth"
        error = {"Success": False, "ErrorCode": exc.code, "ErrorText": exc.text}
        response = respond(_with_errors(command, error), xml=xml)
    except RateLimited as exc:
        outcome = "rate_limited"
        text = f"Rate limit exceeded: retry after {exc.retry_after} seconds"
        error = {"Success": False, "ErrorCode": 429, "ErrorText": text}
        response = respond(_with_errors(command, error), status=429, xml=xml)
        response.headers["Retry-After"] = str(exc.retry_after)
    except UnreadableBody as exc:
        outcome = "hard"
        unreadable = HardFailure(envelope.INVALID_JSON, exc.text, 400)
        response = respond(envelope.hard_failure_body(unreadable), status=400)
        if exc.close_connection:
            response.force_close()
    except HardFailure as exc:
        outcome = "hard"
        json_only = exc.code in (envelope.INVALID_JSON, envelope.INVALID_METHOD)
        response = respond(envelope.hard_failure_body(exc), status=exc.status, xml=xml and not json_only)
    label = command.name if command is not None else "unknown"
    if tracing.enabled():
        tracing.set_attributes({"herald.command": label, "herald.outcome": outcome})
    REQUESTS.labels(label, outcome).inc()
    LATENCY.labels(label).observe(time.perf_counter() - started)
    return response


@web.middleware
async def never_a_stack_trace(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every unexpected failure is answered 100005 in the envelope; 404s and 405s are JSON too."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        failure = HardFailure(envelope.INVALID_JSON, f"Request body larger than {MAX_BODY} bytes", 413)
        return respond(envelope.hard_failure_body(failure), status=413)
    except web.HTTPMethodNotAllowed:
        failure = HardFailure(envelope.INVALID_METHOD, f"Unsupported connection method {request.method}", 400)
        return respond(envelope.hard_failure_body(failure), status=400)
    except web.HTTPNotFound:
        return web.json_response({"Success": False, "ErrorCode": 404, "ErrorText": "Not found"}, status=404)
    except web.HTTPException:
        raise
    except Exception as exc:
        if db.is_connection_failure(exc):  # a page (tracking, archive, mail) whose database is away
            failure = _component_failed(exc)
            return respond(envelope.hard_failure_body(failure), status=failure.status)
        log.exception("unexpected fault", path=request.path)
        failure = HardFailure(envelope.UNEXPECTED_FAULT, "Unexpected error", 500)
        return respond(envelope.hard_failure_body(failure), status=500)


@web.middleware
async def traced_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The request's server span `<METHOD> <route>`, the child of the caller's W3C traceparent if it sent one."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    attributes: dict[str, object] = {"http.request.method": request.method, "url.path": request.path}
    if route:
        attributes["http.route"] = route
    with tracing.span(
        f"{request.method} {route}".strip(),
        parent=request.headers.get("traceparent"),
        kind=tracing.SpanKind.SERVER,
        attributes=attributes,
        exceptions_fail=False,
    ):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a redirect or a 404 raised, answered by aiohttp
            status = exc.status
            raise
        except BaseException:
            status = 500
            raise
        else:
            status = response.status
            return response
        finally:
            tracing.set_attributes({"http.response.status_code": status})
            if status >= 500:
                tracing.mark_error(f"HTTP {status}")


async def livez(request: web.Request) -> web.Response:
    """GET /livez: the process runs and its event loop answers (this handler runs on it)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz (and /healthz, the same): 200 while the identity database and the four gRPC services answer the
    health probe (services/common/health.py), else 503 with what is down."""
    return web.json_response(health.PROCESS.body(), status=200 if health.PROCESS.ready else 503)


async def openapi_document(request: web.Request) -> web.Response:
    """GET /api/openapi.json: the legacy API as OpenAPI 3.1, generated from the command table at start."""
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(
    identity: IdentityStore, stubs: Stubs, public_url: str, commands: dict[str, Command]
) -> web.Application:
    # With tracing on (services/common/tracing.py) each request has a server span; off, no middleware is added.
    middlewares = [traced_request, never_a_stack_trace] if tracing.enabled() else [never_a_stack_trace]
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[COMMANDS_KEY] = commands
    health.PROCESS.on_change(_database_back)
    app[IDENTITY_KEY] = identity
    app[STUBS_KEY] = stubs
    app[PUBLIC_URL_KEY] = public_url
    app[RATE_LIMITER_KEY] = RateLimiter()
    app[TRUSTED_PROXIES_KEY] = TrustedProxies.parse(identity.settings.trusted_proxies)
    app[OPENAPI_KEY] = json.dumps(openapi.document(commands, public_url), indent=1).encode()
    app.router.add_route("*", "/api.php", api)
    app.router.add_route("*", "/api/v1/{command}", api)
    app.router.add_get(openapi.PATH, openapi_document)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", readyz)
    app.router.add_get("/metrics", metrics)
    archive.add_routes(app, identity, stubs, public_url)
    tracking.add_routes(app, identity, stubs)
    message_pages.add_routes(app, identity, stubs, public_url)
    mail.add_routes(app, identity, stubs)
    webhooks.add_routes(app, identity, stubs)
    return app
