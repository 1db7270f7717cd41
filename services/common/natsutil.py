"""NATS JetStream helpers: connecting with endless reconnects, the events stream, subject names, settling messages and counting their redeliveries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import nats
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError
from prometheus_client import Counter

from services.common.config import Settings
from services.common.logging import RepeatingFailure

log = structlog.get_logger()

# By the consumer's durable name without the install's namespace, as the consumer gauges (nats_link.py).
REDELIVERIES_TOTAL = Counter(
    "herald_jetstream_redeliveries_total",
    "Messages a consumer received again: not acknowledged in time (a worker died or stalled), or handed back",
    ["durable"],
)


class HasSubject(Protocol):
    """A kind of message with its subject below the namespace (services/common/events.py's EventType)."""

    @property
    def subject(self) -> str: ...


class Subjects:
    """Subject and stream names, all under the configured namespace."""

    def __init__(self, namespace: str, replicas: int = 1) -> None:
        self.namespace = namespace
        # Stream replicas: 1 on one machine, 3 on a JetStream cluster (HERALD_NATS_REPLICAS).
        self.replicas = replicas
        self.events_stream = f"{namespace.upper()}_EVENTS"
        self.events = f"{namespace}.events"

    @classmethod
    def of(cls, settings: Settings) -> Subjects:
        return cls(settings.nats_namespace, settings.nats_replicas)

    def event(self, event: HasSubject) -> str:
        """The subject `event` is published on in this install."""
        return f"{self.namespace}.{event.subject}"

    def durable(self, name: str) -> str:
        return f"{self.namespace}-{name}".replace(".", "-")


NATS_FAILURES = (nats.errors.Error, OSError, TimeoutError)

# While NATS is away every message in hand fails to settle or be kept alive: logged once per interval, with a count.
_SETTLE_FAILING = RepeatingFailure("cannot settle messages; they will come back")
_EXTEND_FAILING = RepeatingFailure("cannot extend messages' ack wait; they may come back")

# NATS could not be reached or did not answer (as opposed to a request it refused): worth retrying later.
NATS_UNREACHABLE = (
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
)


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


@dataclass(frozen=True)
class NatsCredentials:
    """What NATS_URL authenticates with: a user and password, a token, or nothing."""

    user: str | None = None
    password: str | None = None
    token: str | None = None


def nats_servers(nats_url: str) -> tuple[list[str], NatsCredentials]:
    """NATS_URL's servers without credentials, and the credentials.

    NATS_URL carries credentials as URLs do (`nats://user:password@host:4222`, or `nats://token@host:4222`),
    percent-encoded where needed; with several servers, the first URL that has credentials gives them.
    They are handed to nats-py as connect options rather than left in the URLs: nats-py uses a URL's
    credentials for that server only, not for the servers a cluster announces, and no log line ever
    shows a server URL with a password in it.
    """
    servers: list[str] = []
    credentials = NatsCredentials()
    for url in (part.strip() for part in nats_url.split(",")):
        if not url:
            continue
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        if parts.username is not None and credentials == NatsCredentials():
            if parts.password is not None:
                credentials = NatsCredentials(user=unquote(parts.username), password=unquote(parts.password))
            else:
                credentials = NatsCredentials(token=unquote(parts.username))
        netloc = parts.netloc.rpartition("@")[2]
        servers.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
    return servers, credentials


async def connect(settings: Settings, name: str) -> Client:
    """Connects and keeps reconnecting forever: a NATS restart delays work, it does not stop a service.

    While NATS is unreachable this waits (it does not fail); see `connect_unless_stopped`.
    """

    async def on_error(exc: Exception) -> None:
        # Every failed reconnect attempt lands here; disconnect/reconnect are logged once each.
        log.debug("nats error", error=str(exc))

    client = Client()

    async def on_disconnect() -> None:
        if not client.is_closed:  # our own close() is not worth a warning
            log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    servers, credentials = nats_servers(settings.nats_url)
    await client.connect(
        servers=servers,
        name=name,
        user=credentials.user,
        password=credentials.password,
        token=credentials.token,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    return client


async def connect_unless_stopped(settings: Settings, name: str, stop: asyncio.Event) -> Client | None:
    """A connected client, waiting for NATS as long as it takes; None when `stop` comes first.

    Services call this from a background task, so their gRPC API serves while NATS is down.
    """
    delay = 0.5
    failing = RepeatingFailure("cannot connect to NATS yet; retrying", name=name)
    while not stop.is_set():
        attempt = asyncio.ensure_future(connect(settings, name))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            return None
        try:
            client = attempt.result()
        except NATS_FAILURES as exc:
            failing.failed(exc, retry_in=delay)
        else:
            failing.recovered()
            return client
        await sleep_unless_stopped(stop, delay)
        delay = min(delay * 2, 10.0)
    return None


async def ensure_events_stream(js: JetStreamContext, subjects: Subjects) -> None:
    """Domain events are kept for a week; consumers are durable, so a service that was down catches up."""
    config = StreamConfig(
        name=subjects.events_stream,
        subjects=[f"{subjects.events}.>"],
        retention=RetentionPolicy.LIMITS,
        max_age=7 * 24 * 3600,
        duplicate_window=120,
        num_replicas=subjects.replicas,
    )
    try:
        await js.stream_info(subjects.events_stream)
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)


# JetStream's error code for "replicas > 1 not supported in non-clustered mode".
REPLICAS_NOT_SUPPORTED = 10074


class ReplicasUnsupported(RuntimeError):
    """HERALD_NATS_REPLICAS asks for more than one replica of a server that is not in a JetStream cluster."""


async def until_ready(setup: Callable[[], Awaitable[None]], stop: asyncio.Event, what: str) -> bool:
    """Runs `setup` until it succeeds (JetStream may be restarting, or electing a leader); False when `stop` came
    first. Raises ReplicasUnsupported, which waiting would not cure."""
    delay = 0.5
    failing = RepeatingFailure("cannot set up JetStream yet; retrying", what=what)
    while not stop.is_set():
        try:
            await setup()
        except nats.js.errors.APIError as exc:
            if exc.err_code == REPLICAS_NOT_SUPPORTED:
                raise ReplicasUnsupported(
                    f"HERALD_NATS_REPLICAS is more than 1, but the NATS server is not in a JetStream cluster "
                    f"({exc.description}): set HERALD_NATS_REPLICAS=1, or use a cluster of at least that many servers"
                ) from None
            failing.failed(exc, retry_in=delay)
        except NATS_FAILURES as exc:
            failing.failed(exc, retry_in=delay)
        else:
            failing.recovered()
            return True
        await sleep_unless_stopped(stop, delay)
        delay = min(delay * 2, 10.0)
    return False


@contextlib.asynccontextmanager
async def kept_alive(message: Msg | list[Msg], every: float) -> AsyncIterator[None]:
    """Tells JetStream every `every` seconds that `message` (or each of several messages, handled together)
    is still being worked on, so it is not redelivered."""
    messages = message if isinstance(message, list) else [message]

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            for each in messages:
                try:
                    await each.in_progress()
                except NATS_FAILURES as exc:
                    # NATS away: the message may be redelivered, which the handlers are safe against.
                    _EXTEND_FAILING.failed(exc)
                else:
                    _EXTEND_FAILING.recovered()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def count_redeliveries(durable: str, messages: Sequence[Msg]) -> None:
    """Counts the messages of a fetch that were delivered before (a consumer calls it with each fetch)."""
    redelivered = 0
    for message in messages:
        try:
            redelivered += message.metadata.num_delivered > 1
        except (nats.errors.Error, ValueError, IndexError, AttributeError):
            continue  # not a JetStream delivery: nothing to count
    if redelivered:
        REDELIVERIES_TOTAL.labels(durable).inc(redelivered)


def redelivery_delay(message: Msg) -> float:
    """Seconds before a failed message comes back: longer the more often it failed, at most 30."""
    try:
        delivered = message.metadata.num_delivered
    except (ValueError, IndexError, AttributeError):
        delivered = 1
    return float(min(2 ** max(delivered - 1, 0), 30))


async def settle(reply: Awaitable[None], how: str) -> None:
    """Acks, naks or terms a message; when NATS is away the message simply comes back, which is safe."""
    try:
        await reply
    except NATS_FAILURES as exc:
        _SETTLE_FAILING.failed(exc, how=how)
    else:
        _SETTLE_FAILING.recovered()
