"""`herald run` when its embedded PostgreSQL or NATS dies (SIGKILL), as an operator saw it happen.

During the outage readiness is false (translator /readyz 503 naming what is down, a worker's /readyz 503,
gRPC health NOT_SERVING) and a legacy call answers 100004 rather than 100005; `herald run` starts the dead
server again, readiness comes back, a campaign then sends, and the log holds no flood of tracebacks.

The outage is held open by stopping `herald run` itself (SIGSTOP) while the server dies, so that the test sees
it however fast the restart would be; SIGCONT lets the supervisor notice and restart the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc

from services.common.embedded import nats_servers_of, postmasters_of
from services.common.grpcutil import decode_error
from tests.conftest import Api, User, free_port, metrics_env, metrics_ports
from tests.e2e.delivery_helpers import (
    create_campaign,
    create_email,
    create_list,
    import_people,
    people,
    send,
    wait_for_status,
)
from tests.e2e.test_run import herald, start, stop_and_check_nothing_is_left

pytestmark = pytest.mark.asyncio(loop_scope="function")

# The lines of a traceback in the log: the first failure of an unexpected error may carry one; an outage's none.
MAX_TRACEBACKS = 5


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL", "SMTP_URL")}
    env = {k: v for k, v in env.items() if not k.startswith("HERALD_")}
    ports = metrics_ports()
    env.update(
        HERALD_DATA_DIR=str(tmp_path / "var"),
        HERALD_HTTP_PORT=str(free_port()),
        HERALD_EMBEDDED_NATS_PORT=str(free_port()),
        HERALD_SMTP_CAPTURE_PORT=str(free_port()),
        HERALD_BOUNCE_RECEIVER_PORT=str(free_port()),
        HERALD_LOG_LEVEL="INFO",
        HERALD_DELIVERY_WORKERS="1",
        # The probe runs often here, so that the test sees each change soon.
        HERALD_HEALTH_PROBE_SECONDS="0.3",
        HERALD_HEALTH_PROBE_TIMEOUT_SECONDS="1",
        **{f"HERALD_{name}_GRPC_PORT": str(free_port()) for name in ("CAMPAIGN", "TAG", "AUDIENCE", "DELIVERY")},
        **metrics_env(ports),
    )
    return env


@pytest.fixture
def running(run_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    log = tmp_path / "herald-run.log"
    process, base_url = start(run_env, log=log)
    try:
        yield process, base_url, log
    finally:
        os.kill(process.pid, signal.SIGCONT)  # should an assertion have left it stopped
        stop_and_check_nothing_is_left(process)


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.1)


async def grpc_health(port: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        return int(response.status)


async def test_herald_run_outlives_a_killed_postgresql_and_a_killed_nats(
    running: tuple[subprocess.Popen[bytes], str, Path], run_env: dict[str, str]
) -> None:
    process, base_url, log = running
    data_dir = Path(run_env["HERALD_DATA_DIR"])
    worker_ready = f"http://127.0.0.1:{run_env['HERALD_DELIVERY_WORKER_METRICS_PORT']}/readyz"
    campaign_port = run_env["HERALD_CAMPAIGN_GRPC_PORT"]
    created = json.loads(herald(run_env, "user", "create", "--username", "ops", "--password", "pw"))
    user = User(created["UserID"], created["APIKey"], "ops")
    token = herald(run_env, "token", "mint", "--user", str(user.user_id))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        api = Api(session, base_url)
        assert get(base_url + "/livez") == (200, {"status": "ok"})

        async def ready() -> bool:
            return get(base_url + "/readyz")[0] == 200 and get(worker_ready)[0] == 200

        await until(ready, "every process ready after the start")
        assert get(base_url + "/readyz") == (200, {"status": "ok"})
        assert get(base_url + "/healthz") == (200, {"status": "ok"})
        assert get(worker_ready) == (200, {"status": "ok"})
        assert await grpc_health(campaign_port) == health_pb2.HealthCheckResponse.SERVING

        # --- PostgreSQL dies, and herald run cannot restart it yet (stopped) -----------------------------------
        os.kill(process.pid, signal.SIGSTOP)
        (postmaster,) = postmasters_of(data_dir / "pg")
        postmaster.send_signal(signal.SIGKILL)

        async def translator_unready() -> bool:
            status, body = get(base_url + "/readyz")
            return status == 503 and "postgresql" in body["down"]

        await until(translator_unready, "translator /readyz 503 naming postgresql")
        status, body = get(base_url + "/healthz")
        assert status == 503 and body["status"] == "unavailable", body
        assert get(base_url + "/livez")[0] == 200  # alive: nothing for a supervisor to restart

        async def worker_unready() -> bool:
            status, body = get(worker_ready)
            return status == 503 and "postgresql" in body["down"]

        await until(worker_unready, "the delivery worker's /readyz 503 naming postgresql")

        async def not_serving() -> bool:
            return await grpc_health(campaign_port) == health_pb2.HealthCheckResponse.NOT_SERVING

        await until(not_serving, "campaign's gRPC health NOT_SERVING")

        status, body = await api.post({"Command": "campaign.create", "APIKey": user.api_key, "CampaignName": "x"})
        assert (status, body["ErrorCode"]) == (500, 100004), body
        # A gRPC client hears a retryable UNAVAILABLE that names the database, not INTERNAL.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{campaign_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await campaign_pb2_grpc.CampaignServiceStub(channel).ListCampaigns(
                    campaign_pb2.ListCampaignsRequest(),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10,
                )
        failure = decode_error(raised.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"), failure

        os.kill(process.pid, signal.SIGCONT)
        await until(ready, "readiness back after PostgreSQL restarted")
        assert await grpc_health(campaign_port) == health_pb2.HealthCheckResponse.SERVING
        assert postmasters_of(data_dir / "pg") not in ([], [postmaster])

        # --- NATS dies --------------------------------------------------------------------------------------
        os.kill(process.pid, signal.SIGSTOP)
        (nats_server,) = nats_servers_of(data_dir / "nats")
        nats_server.send_signal(signal.SIGKILL)

        async def worker_without_nats() -> bool:
            status, body = get(worker_ready)
            return status == 503 and "nats" in body["down"]

        await until(worker_without_nats, "the delivery worker's /readyz 503 naming nats")
        await until(not_serving, "campaign's gRPC health NOT_SERVING without NATS")
        await until(translator_unready_without_nats(base_url), "translator /readyz 503 naming the services")

        os.kill(process.pid, signal.SIGCONT)
        await until(ready, "readiness back after NATS restarted")
        assert nats_servers_of(data_dir / "nats") not in ([], [nats_server])

        # --- and Herald works: a campaign sends --------------------------------------------------------------
        list_id = await create_list(api, user)
        await import_people(api, user, list_id, people(3, "outage.example"))
        email_id = await create_email(api, user)
        campaign_id = await create_campaign(api, user, email_id, [list_id], name="After the outages")
        await send(api, user, campaign_id)
        await wait_for_status(api, user, campaign_id, "Sent", within=60)

    said = log.read_text()
    assert "herald run: the embedded PostgreSQL died; starting it again" in said
    assert "herald run: the embedded PostgreSQL runs again (1 restart(s) in this run)" in said
    assert "herald run: the embedded NATS died; starting it again" in said
    assert "herald run: the embedded NATS runs again (1 restart(s) in this run)" in said
    tracebacks = said.count("Traceback (most recent call last)")
    assert tracebacks <= MAX_TRACEBACKS, said[-20000:]
    print(f"log: {len(said.splitlines())} lines, {tracebacks} tracebacks")


def translator_unready_without_nats(base_url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        status, body = get(base_url + "/readyz")
        return status == 503 and body["down"].get("campaign") == "NOT_SERVING"

    return check
