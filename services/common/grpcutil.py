"""gRPC plumbing every service shares: interceptors, rich error statuses, client channels and the server bootstrap."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import grpc
import structlog
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services.common import auth, db, grpc_config, grpc_metrics, health, natsutil, permissions, tracing
from services.common.config import Settings, get_settings
from services.common.errors import DomainError, ErrorKind
from services.common.logging import RepeatingFailure

log = structlog.get_logger()

_UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

_KIND_TO_CODE = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.PERMISSION: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


def rich_status(error: DomainError, domain: str) -> grpc.Status:
    """The status of a domain error: its code and message, with ErrorInfo (and BadRequest) as google.rpc.Status
    details, which grpcio-status carries in the grpc-status-details-bin trailer."""
    code = _KIND_TO_CODE[error.kind]
    if error.reason == "UNAUTHENTICATED":
        code = grpc.StatusCode.UNAUTHENTICATED
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata))
    details = [info]
    if error.violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, reason=v.reason, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
        details.append(bad)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message, details=details))


@dataclass
class RpcFailure:
    """A decoded error status as a client sees it."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[error_details_pb2.BadRequest.FieldViolation] = field(default_factory=list)

    def field_reasons(self) -> list[tuple[str, str]]:
        """(field, reason) per violation; the error's own reason when there are none."""
        if self.violations:
            return [(v.field, v.reason or self.reason) for v in self.violations]
        return [("", self.reason)]


def decode_error(error: grpc.aio.AioRpcError) -> RpcFailure:
    """The error as a client sees it: its code and message, and the ErrorInfo and BadRequest of its details.

    An AioRpcError is the call's final status, read without awaiting, so grpcio-status's `from_call`
    (not its `aio.from_call`, which awaits a live call) decodes it. Details whose code or message
    disagree with the call's own are not the server's (a proxy answered): they are ignored.
    """
    failure = RpcFailure(code=error.code(), message=error.details() or "")
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            failure.reason, failure.domain = info.reason, info.domain
            failure.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            failure.violations = list(bad.field_violations)
    return failure


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    """The instant as a Timestamp (a naive datetime is taken as UTC, as Timestamp.FromDatetime does).

    Computed from the distance to the epoch: a third of FromDatetime's cost, which is felt in
    GetCampaign and every list.
    """
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    delta = instant - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def timestamp(instant: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for a message field; None leaves the field unset."""
    return None if instant is None else to_timestamp(instant)


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


def _wrap_handler(
    handler: grpc.RpcMethodHandler | None,
    unary: Callable[[Behavior], Behavior],
    streaming: Callable[[Behavior], Behavior],
) -> grpc.RpcMethodHandler | None:
    if handler is None:
        return None
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary(handler.unary_unary))
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=streaming(handler.unary_stream))
    if handler.stream_unary is not None:
        # A client-streaming behavior takes the request iterator and returns one response,
        # so the unary wrapping fits it unchanged.
        return handler._replace(stream_unary=unary(handler.stream_unary))
    return handler


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Every call of a service, in one wrapper: logging, metrics, the principal, and errors turned into statuses.

    - Logging: binds a request id (the caller's x-request-id, or a new one) to every log line of the
      call and logs its method, outcome and duration at debug level.
    - Metrics: records the call's duration by method and status code (services/common/grpc_metrics.py).
    - Principal: verifies the signed principal token, checks that it may call the method
      (services/common/permissions.py) and exposes it through contextvars, with the token this service
      presents to its neighbours on the caller's behalf.
    - Errors: DomainError becomes a status with ErrorInfo and BadRequest, a downstream service's
      error status passes through, and anything else becomes a bare INTERNAL.

    The wrapped handler of each method is built once and reused: grpc.aio asks the interceptors on
    every call, and building wrappers per call (three interceptors' worth) cost a noticeable share of
    a cheap call such as GetCampaign. Health and reflection calls pass through unwrapped.
    """

    def __init__(self, service: str, secret: str, durations: grpc_metrics.Durations = grpc_metrics.SERVER) -> None:
        self._service = service
        self._durations = durations
        self._domain = f"herald.{service}.v1"
        self._secret = secret
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(_UNAUTHENTICATED_PREFIXES):
            return handler
        wrapped = _wrap_handler(handler, self._unary(method), self._streaming(method))
        assert wrapped is not None
        self._handlers[method] = wrapped
        return wrapped

    def _unary(self, method: str) -> Callable[[Behavior], Behavior]:
        durations = self._durations.of(method)

        def wrap(behavior: Behavior) -> Behavior:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                metadata = context.invocation_metadata() or ()
                started = _bind_call(metadata, method)
                failed: BaseException | None = None
                try:
                    self._enter(context, metadata, method)
                    return await behavior(request, context)
                except (DomainError, grpc.aio.AioRpcError) as exc:
                    failed = exc
                    await self._abort(context, exc)
                except Exception as exc:
                    failed = exc
                    if context.code() is not None:  # already aborted by the behavior itself
                        raise
                    await self._abort(context, exc)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    _log_call(context, started, failed, durations)

            return wrapped

        return wrap

    def _streaming(self, method: str) -> Callable[[Behavior], Behavior]:
        durations = self._durations.of(method)

        def wrap(behavior: Behavior) -> Behavior:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                metadata = context.invocation_metadata() or ()
                started = _bind_call(metadata, method)
                failed: BaseException | None = None
                try:
                    self._enter(context, metadata, method)
                    async for item in behavior(request, context):
                        yield item
                except (DomainError, grpc.aio.AioRpcError) as exc:
                    failed = exc
                    await self._abort(context, exc)
                except Exception as exc:
                    failed = exc
                    if context.code() is not None:
                        raise
                    await self._abort(context, exc)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    _log_call(context, started, failed, durations)

            return wrapped

        return wrap

    def _enter(
        self, context: grpc.aio.ServicerContext, metadata: Sequence[tuple[str, str | bytes]], method: str
    ) -> None:
        token = ""
        for key, value in metadata:
            if key == "authorization" and isinstance(value, str):
                token = value.removeprefix("Bearer ").strip()
        if not token:
            raise DomainError(ErrorKind.PERMISSION, "UNAUTHENTICATED", "missing principal token")
        principal = auth.verify_token(token, self._secret)
        structlog.contextvars.bind_contextvars(user_id=principal.user_id)
        if principal.service:
            structlog.contextvars.bind_contextvars(via=principal.service)
        permissions.authorize(method, principal)
        auth.current_principal.set(principal)
        auth.current_downstream.set(auth.Downstream(principal, self._service, self._secret))
        remaining = context.time_remaining()
        auth.current_deadline.set(time.monotonic() + remaining if remaining is not None else None)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, DomainError):
            status = rich_status(exc, self._domain)
            # OpenTelemetry's server span sees abort() but not abort_with_status(): its status code is set here.
            tracing.set_attributes({"rpc.grpc.status_code": status.code.value[0]})
            await context.abort_with_status(status)
        if isinstance(exc, grpc.aio.AioRpcError):
            # A downstream service failed: pass its status through rather than hiding it.
            await context.abort(
                exc.code(), exc.details() or "", trailing_metadata=tuple(exc.trailing_metadata() or ())
            )
        unavailable = _unavailable(exc)
        if unavailable is not None:
            # PostgreSQL or NATS is away: a retryable UNAVAILABLE, logged once per interval rather than per call.
            _DEPENDENCY_AWAY.failed(exc, reason=unavailable.reason)
            status = rich_status(unavailable, self._domain)
            tracing.set_attributes({"rpc.grpc.status_code": status.code.value[0]})
            await context.abort_with_status(status)
        log.exception("unhandled error", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")


# Calls that fail because a dependency is away, logged as one repeating failure; the health probe's recovery ends it.
_DEPENDENCY_AWAY = RepeatingFailure("calls fail: a dependency is unreachable; answering UNAVAILABLE")


def _unavailable(exc: Exception) -> DomainError | None:
    """The UNAVAILABLE error for an exception that says PostgreSQL or NATS cannot be reached; None for any other."""
    if isinstance(exc, natsutil.NATS_UNREACHABLE):  # first: nats-py's timeout is a TimeoutError too
        return DomainError(ErrorKind.UNAVAILABLE, "NATS_UNAVAILABLE", "NATS is unreachable; try again")
    if db.is_connection_failure(exc):
        return DomainError(ErrorKind.UNAVAILABLE, "DATABASE_UNAVAILABLE", "the database is unreachable; try again")
    return None


def _bind_call(metadata: Sequence[tuple[str, str | bytes]], method: str) -> float:
    request_id = ""
    for key, value in metadata:
        if key == "x-request-id" and isinstance(value, str):
            request_id = value
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id or os.urandom(8).hex(), rpc=method)
    return time.perf_counter()


def _log_call(
    context: grpc.aio.ServicerContext,
    started: float,
    failed: BaseException | None,
    durations: grpc_metrics.MethodDurations,
) -> None:
    seconds = time.perf_counter() - started
    code = context.code() or (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
    if isinstance(failed, asyncio.CancelledError) and not context.code():
        code = grpc.StatusCode.CANCELLED  # the client left (or its deadline passed) mid-call
    if not isinstance(code, grpc.StatusCode):
        code = _CODES_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)
    durations.record(code, seconds)
    log.debug("rpc", code=code.name, ms=round(seconds * 1000, 2))


# A status code as an int (what some grpc versions' context.code() gives) to the enum.
_CODES_BY_VALUE: dict[object, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


class ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Client side of every unary call on a Herald channel: records its duration by method and status code and,
    on the services' channels, passes the caller and the remaining deadline on to downstream services.

    The caller's own token is not forwarded: the call carries a token of the same principal marked as
    this service's (auth.service_token), which internal RPCs require and which does not need the
    caller's permission for the downstream RPC — the caller's permission was checked for the RPC
    this service is serving (services/common/permissions.py).
    """

    def __init__(
        self,
        *,
        forward_principal: bool = True,
        durations: grpc_metrics.Durations = grpc_metrics.CLIENT,
        deadlines: grpc_config.Deadlines | None = None,
    ) -> None:
        self._forward_principal = forward_principal
        self._durations = durations
        self._deadlines = deadlines or grpc_config.Deadlines(get_settings())

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if not self._forward_principal:
            if details.timeout is None:
                return details._replace(timeout=self._deadlines.default(details.method))
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        downstream = auth.current_downstream.get(None)
        if downstream is not None and "authorization" not in metadata:
            metadata["authorization"] = f"Bearer {downstream.token()}"
        timeout = details.timeout
        deadline = auth.current_deadline.get()
        if timeout is None:
            if deadline is not None:
                timeout = max(deadline - time.monotonic(), 0.001)
            else:
                timeout = self._deadlines.default(details.method)
        # A peer that is restarting is waited for (until the deadline) rather than failing at once.
        wait_for_ready = True if details.wait_for_ready is None else details.wait_for_ready
        return details._replace(metadata=metadata, timeout=timeout, wait_for_ready=wait_for_ready)

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        durations = self._durations.of(client_call_details.method)
        started = time.perf_counter()
        call = await continuation(self._details(client_call_details), request)
        # The response is awaited here, so that the duration is the whole call's; the caller's own await
        # of the call then has it at once (and its error, which is not raised here).
        with contextlib.suppress(grpc.aio.AioRpcError):
            await _measured(call, durations, started)
        return call


class StreamClientInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """Client side of every server-streaming call on a Herald channel: records its duration (until the stream
    ended) by method and status code. It forwards nothing: a stream's caller sets its own token and deadline
    (a queue's recipients stream for up to an hour, far past a served call's deadline).

    A separate object from ClientInterceptor because grpc.aio files an interceptor under the first of the
    four interceptor kinds it is an instance of, and would never call it for another kind.
    """

    def __init__(self, *, durations: grpc_metrics.Durations = grpc_metrics.CLIENT) -> None:
        self._durations = durations

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        durations = self._durations.of(client_call_details.method)
        started = time.perf_counter()
        call = await continuation(client_call_details, request)

        def done(finished: grpc.aio.Call) -> None:
            # Runs once the stream ended, however: its status is known, and reading it waits for nothing.
            seconds = time.perf_counter() - started
            task = asyncio.ensure_future(finished.code())
            task.add_done_callback(
                lambda code: durations.record(
                    grpc.StatusCode.CANCELLED if code.cancelled() or code.exception() else code.result(), seconds
                )
            )

        call.add_done_callback(done)
        return call


def channel(
    target: str,
    *,
    forward_principal: bool = True,
    settings: Settings | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to another Herald service, whose calls are measured (services/common/grpc_metrics.py).

    Services forward the principal and deadline of the call they serve; the translator, which sets
    both itself on every call, does not forward. Its unary calls are measured without a grpc.aio interceptor
    (MeasuredChannel): the interceptor machinery cost it about 0.05 ms of CPU per call (README, "The cost of
    gRPC metrics"). Either way a unary call without a deadline gets its kind's default, and the channel has
    Herald's service config, keepalive and TLS (services/common/grpc_config.py).
    """
    settings = settings or get_settings()
    deadlines = grpc_config.Deadlines(settings)
    # With tracing on (services/common/tracing.py), OpenTelemetry's client interceptors come first: they start
    # the client span and put its traceparent into the call's metadata.
    traced = tracing.grpc_client_interceptors()
    if not forward_principal:
        inner = grpc_config.open_channel(
            settings, target, interceptors=[*traced, StreamClientInterceptor()], options=options
        )
        return cast(grpc.aio.Channel, MeasuredChannel(inner, deadlines=deadlines))
    return grpc_config.open_channel(
        settings,
        target,
        interceptors=[
            *traced,
            ClientInterceptor(forward_principal=True, deadlines=deadlines),
            StreamClientInterceptor(),
        ],
        options=options,
    )


class MeasuredChannel:
    """A grpc.aio channel whose unary calls record their duration by method and status code, as ClientInterceptor
    does, by wrapping the stubs' multicallables instead of going through grpc.aio's interceptor machinery. A call
    made through it is awaited by its caller (what Herald's code does with a unary call); everything else is the
    wrapped channel's.
    """

    def __init__(
        self,
        inner: grpc.aio.Channel,
        durations: grpc_metrics.Durations = grpc_metrics.CLIENT,
        deadlines: grpc_config.Deadlines | None = None,
    ) -> None:
        self._inner = inner
        self._durations = durations
        self._deadlines = deadlines or grpc_config.Deadlines(get_settings())

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _MeasuredUnaryUnary(
            self._inner.unary_unary(method, *args, **kwargs),
            self._durations.of(method),
            self._deadlines.default(method),
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> MeasuredChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._inner.close()


class _MeasuredUnaryUnary:
    def __init__(self, inner: Any, durations: grpc_metrics.MethodDurations, timeout: float | None) -> None:
        self._inner = inner
        self._durations = durations
        self._timeout = timeout

    def __call__(self, request: Any, **kwargs: Any) -> Awaitable[Any]:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return _measured(self._inner(request, **kwargs), self._durations, time.perf_counter())


async def _measured(call: Awaitable[Any], durations: grpc_metrics.MethodDurations, started: float) -> Any:
    """The response of a unary call, its duration since `started` recorded with its status code."""
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        durations.record(exc.code(), time.perf_counter() - started)
        raise
    except asyncio.CancelledError:
        durations.record(grpc.StatusCode.CANCELLED, time.perf_counter() - started)
        raise
    durations.record(grpc.StatusCode.OK, time.perf_counter() - started)
    return response


BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def serve(
    *,
    name: str,
    bind: str,
    port: int,
    token_secret: str,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    background: Sequence[BackgroundTask] = (),
    on_stop: Callable[[], Awaitable[None]] | None = None,
    settings: Settings | None = None,
) -> None:
    """Runs a service until SIGTERM or SIGINT: health, reflection, interceptors, graceful shutdown.

    `register` adds the servicers and returns their full service names. Keepalive enforcement and TLS come
    from the settings (services/common/grpc_config.py).
    """
    settings = settings or get_settings()
    server = grpc.aio.server(
        # With tracing on, OpenTelemetry's server interceptor wraps ours: the span is current in every log line.
        interceptors=[*tracing.grpc_server_interceptors(), CallInterceptor(name, token_secret)],
        options=[("grpc.so_reuseport", 0), *grpc_config.server_options(settings)],
    )
    try:
        await _run_server(
            server, name=name, bind=bind, port=port, register=register, background=background, settings=settings
        )
    finally:
        if on_stop is not None:
            await on_stop()
    log.info("stopped", service=name)


async def _run_server(
    server: grpc.aio.Server,
    *,
    name: str,
    bind: str,
    port: int,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    background: Sequence[BackgroundTask],
    settings: Settings,
) -> None:
    service_names = list(register(server))
    health_servicer = grpc_health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, grpc_health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{bind}:{port}"
    if grpc_config.add_port(server, address, settings) == 0:
        raise RuntimeError(f"cannot listen on {address}")
    await server.start()
    # The overall service ("") and each named one are SERVING while the process's dependencies answer the
    # health probe (services/common/health.py: its PostgreSQL and NATS), NOT_SERVING while one does not.

    async def follow(ready: bool) -> None:
        if ready:
            _DEPENDENCY_AWAY.recovered()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service_name in ["", *service_names]:
            await health_servicer.set(service_name, status)

    await follow(health.PROCESS.ready)
    health.PROCESS.on_change(follow)
    background = [*background, health.PROCESS.runner(settings)]
    log.info("serving", service=name, address=address, tls=settings.grpc_tls())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(task(stop), name=getattr(task, "__qualname__", "task")) for task in background
    ]
    stop_waiter = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[Any]] = {stop_waiter, *tasks}
    while not stop.is_set():
        finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            if task is not stop_waiter and task.exception() is not None:
                log.error("background task failed; stopping", task=task.get_name(), exc_info=task.exception())
                stop.set()

    log.info("stopping", service=name)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()
