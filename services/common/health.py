"""Liveness and readiness of a Herald process (docs/operations.md, "Health checks").

Liveness: the process runs and its event loop answers. Readiness: besides, what the process needs can be
reached: its PostgreSQL (a `SELECT 1`), its NATS (the connection is up and JetStream answers an account-info
request), and for the translator the gRPC services it calls (their grpc.health.v1 status). A background probe
checks them every HERALD_HEALTH_PROBE_SECONDS, each with a timeout of HERALD_HEALTH_PROBE_TIMEOUT_SECONDS,
and keeps the result: a readiness request costs no query.

Each process has one `Health` (PROCESS): its entry point adds the checks, and the gRPC server (grpc.health.v1,
services/common/grpcutil.py), the translator (/livez, /readyz, /healthz) and the metrics port of every other
process (/livez, /readyz, services/common/metrics.py) all answer from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import structlog

from services.common.config import Settings
from services.common.logging import describe

log = structlog.get_logger()

# A check returns when the dependency answers and raises when it does not.
Check = Callable[[], Awaitable[None]]
# Told each change of readiness (True: ready).
Listener = Callable[[bool], Awaitable[None]]

# How long /livez waits for the event loop to run a callback before it calls the process stuck.
LIVENESS_SECONDS = 10.0


class Unreachable(Exception):
    """A check's finding, when the dependency's own error says nothing more (e.g. "not connected yet")."""


class Health:
    """The checks of one process, their last findings, and the probe that refreshes them."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._listeners: list[Listener] = []
        # What is down, by check name: its error. Written on the event loop, read from the metrics thread.
        self._down: dict[str, str] = {}
        self._probed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def ready(self) -> bool:
        """True once a probe found every check passing, and until one fails (no checks: always)."""
        return not self._checks or (self._probed and not self._down)

    def down(self) -> dict[str, str]:
        """What is unreachable, by check name, with its error ("not probed yet" before the first probe)."""
        if not self._probed and self._checks:
            return dict.fromkeys(self._checks, "not probed yet")
        return dict(self._down)

    def body(self) -> dict[str, Any]:
        """The JSON answer of a readiness request."""
        if self.ready:
            return {"status": "ok"}
        return {"status": "unavailable", "down": self.down()}

    async def probe(self, within: float) -> bool:
        """Runs every check once, at the same time, each within `within` seconds; returns readiness."""
        names = list(self._checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self._checks[name](), within) for name in names), return_exceptions=True
        )
        was_ready = self.ready
        down: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, TimeoutError):
                down[name] = f"no answer within {within:g} s"
            elif isinstance(result, Unreachable):
                down[name] = str(result)
            elif isinstance(result, BaseException):
                down[name] = describe(result)
        for name in sorted(down.keys() - self._down.keys()):
            log.warning("dependency unreachable; not ready", dependency=name, error=down[name])
        for name in sorted(self._down.keys() - down.keys()):
            log.info("dependency reachable again", dependency=name)
        self._down = down
        first = not self._probed
        self._probed = True
        if first or self.ready != was_ready:
            for listener in self._listeners:
                await listener(self.ready)
        return self.ready

    async def run(self, stop: asyncio.Event, every: float, within: float) -> None:
        """Probes now and then every `every` seconds until `stop`."""
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            await self.probe(within)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    def runner(self, settings: Settings) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
        """`run` with the settings' interval and timeout, as a background task of services/common/grpcutil.py."""

        async def run_health_probe(stop: asyncio.Event) -> None:
            await self.run(stop, settings.health_probe_seconds, settings.health_probe_timeout_seconds)

        return run_health_probe

    def alive(self, within: float = LIVENESS_SECONDS) -> bool:
        """From another thread (the metrics server's): whether the event loop runs a callback within `within`
        seconds. True before the probe started (the process is starting: not stuck)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return True
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the loop closed meanwhile: the process is stopping
            return True
        return answered.wait(within)


# The process's health: its entry point adds the checks.
PROCESS = Health()


def postgres_check(settings: Settings, name: str) -> Check:
    """`SELECT 1` on a connection of the probe's own (made again after a failure), not one of the pool's: a pool
    busy with work must not make the process look unready, nor the probe wait for a connection."""
    from services.common.db import asyncpg_connection

    dsn, connect_args = asyncpg_connection(settings.sqlalchemy_url())
    connect_args.setdefault("server_settings", {})["application_name"] = f"herald-{name}-health"
    timeout = settings.health_probe_timeout_seconds
    connect_args["timeout"] = min(float(connect_args.get("timeout", timeout)), timeout)
    connection: asyncpg.Connection | None = None

    async def check() -> None:
        nonlocal connection
        try:
            if connection is None or connection.is_closed():
                connection = await asyncpg.connect(dsn, **connect_args)
            await connection.fetchval("SELECT 1", timeout=timeout)
        except BaseException:
            if connection is not None:
                connection.terminate()
                connection = None
            raise

    return check


def grpc_check(settings: Settings, service: str) -> Check:
    """The grpc.health.v1 status of a Herald service (its overall status, ""), on a channel of the probe's own:
    SERVING passes; NOT_SERVING (its PostgreSQL or NATS is away) or no answer fails."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.common import grpc_config

    stub = health_pb2_grpc.HealthStub(grpc_config.open_channel(settings, settings.grpc_addr(service)))
    timeout = settings.health_probe_timeout_seconds

    async def check() -> None:
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise Unreachable(f"{exc.code().name}: {exc.details()}") from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unreachable(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    return check
