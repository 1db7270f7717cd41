"""services/common/health.py's readiness, the metrics port's /livez and /readyz, and which errors count as an outage
of PostgreSQL or NATS (services/common/db.py, services/common/natsutil.py): those answer UNAVAILABLE
(services/common/grpcutil.py), a constraint or SQL error does not.

(tests/e2e/test_run_outages.py shows all of it on a running Herald whose PostgreSQL and NATS are killed.)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from wsgiref.util import setup_testing_defaults

import asyncpg
import nats.errors
import nats.js.errors
import psycopg
import psycopg.errors
import pytest
import sqlalchemy.exc

from services.common import health, metrics
from services.common.db import is_connection_failure
from services.common.grpcutil import _unavailable
from services.common.logging import is_outage


def refused() -> psycopg.OperationalError:
    try:
        psycopg.connect("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")
    except psycopg.OperationalError as exc:
        return exc
    raise AssertionError("something listens on port 9")


def wrapped(orig: Exception, kind: type[sqlalchemy.exc.DBAPIError] = sqlalchemy.exc.OperationalError) -> Exception:
    """The error SQLAlchemy raises around a driver's."""
    return kind("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "error",
    [
        refused(),
        wrapped(refused()),
        wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")),
        wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")),
        wrapped(psycopg.errors.TooManyConnections("sorry, too many clients already")),
        sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_connection_level_database_errors_are_an_outage(error: Exception) -> None:
    assert is_connection_failure(error) and is_outage(error)
    unavailable = _unavailable(error)
    assert unavailable is not None and unavailable.reason == "DATABASE_UNAVAILABLE"


@pytest.mark.parametrize(
    "error",
    [
        wrapped(psycopg.errors.UniqueViolation("duplicate key"), sqlalchemy.exc.IntegrityError),
        wrapped(psycopg.errors.SyntaxError("syntax error at or near"), sqlalchemy.exc.ProgrammingError),
        wrapped(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")),
        wrapped(psycopg.errors.LockNotAvailable("could not obtain lock")),
        asyncpg.UniqueViolationError("duplicate key"),
        KeyError("campaign_id"),
        ValueError("bad"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_statement_errors_and_bugs_are_not(error: Exception) -> None:
    assert not is_connection_failure(error) and not is_outage(error)
    assert _unavailable(error) is None


@pytest.mark.parametrize(
    "error",
    [
        nats.errors.NoServersError(),
        nats.errors.ConnectionClosedError(),
        nats.errors.TimeoutError(),
        nats.js.errors.ServiceUnavailableError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_nats_unreachable_is_an_outage_answered_unavailable(error: Exception) -> None:
    unavailable = _unavailable(error)
    assert unavailable is not None and unavailable.reason == "NATS_UNAVAILABLE" and is_outage(error)


def test_a_refused_nats_request_is_not() -> None:
    assert _unavailable(nats.js.errors.NotFoundError()) is None


async def test_readiness_follows_the_checks_and_tells_each_change_once() -> None:
    state = {"postgresql": True, "nats": True}
    told: list[bool] = []

    def check_of(name: str) -> health.Check:
        async def check() -> None:
            if not state[name]:
                raise ConnectionRefusedError(111, "Connection refused")

        return check

    async def slow() -> None:
        await asyncio.sleep(5)

    async def listener(ready: bool) -> None:
        told.append(ready)

    probed = health.Health()
    probed.add("postgresql", check_of("postgresql"))
    probed.add("nats", check_of("nats"))
    probed.on_change(listener)
    assert not probed.ready and probed.down() == {"postgresql": "not probed yet", "nats": "not probed yet"}

    assert await probed.probe(1.0) and probed.body() == {"status": "ok"}
    state["postgresql"] = False
    assert not await probed.probe(1.0)
    assert not await probed.probe(1.0)
    assert probed.body() == {
        "status": "unavailable",
        "down": {"postgresql": "ConnectionRefusedError: [Errno 111] Connection refused"},
    }
    probed.add("slow", slow)
    state["postgresql"] = True
    assert not await probed.probe(0.05)
    assert probed.down() == {"slow": "no answer within 0.05 s"}
    assert told == [True, False]


def call(app: Any, path: str) -> tuple[str, dict[str, Any]]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    started: list[str] = []
    body = b"".join(app(environ, lambda status, headers: started.append(status)))
    return started[0], json.loads(body)


async def test_the_metrics_port_answers_livez_and_readyz_from_the_process_health(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probed = health.Health()
    monkeypatch.setattr(health, "PROCESS", probed)
    app = metrics._health_app(lambda environ, start: [b"metrics"])
    ready = True

    async def check() -> None:
        if not ready:
            raise ConnectionRefusedError(111, "Connection refused")

    probed.add("postgresql", check)
    assert call(app, "/readyz") == (
        "503 Service Unavailable",
        {"status": "unavailable", "down": {"postgresql": "not probed yet"}},
    )
    await probed.probe(1.0)
    assert call(app, "/readyz") == ("200 OK", {"status": "ok"})
    ready = False
    await probed.probe(1.0)
    assert call(app, "/readyz")[0] == "503 Service Unavailable"
    # /livez asks the event loop from another thread, as the metrics server's does.
    stop = asyncio.Event()
    runner = asyncio.create_task(probed.run(stop, every=10, within=1))
    await asyncio.sleep(0)
    assert await asyncio.to_thread(call, app, "/livez") == ("200 OK", {"status": "ok"})
    stop.set()
    await runner
