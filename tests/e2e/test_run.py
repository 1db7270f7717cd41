"""`herald run` as a new user meets it: embedded PostgreSQL and NATS, the CLI, a clean Ctrl-C, data that survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, free_port, wait_healthy


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def herald(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL", "SMTP_URL")}
    env = {k: v for k, v in env.items() if not k.startswith("HERALD_")}
    env.update(
        HERALD_DATA_DIR=str(tmp_path / "var"),
        HERALD_HTTP_PORT=str(free_port()),
        HERALD_EMBEDDED_NATS_PORT=str(free_port()),
        HERALD_SMTP_CAPTURE_PORT=str(free_port()),
        HERALD_LOG_LEVEL="WARNING",
        **{f"HERALD_{name}_GRPC_PORT": str(free_port()) for name in ("CAMPAIGN", "TAG", "AUDIENCE", "DELIVERY")},
    )
    return env


def start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "run"], env=env, cwd=ROOT)
    base_url = f"http://127.0.0.1:{env['HERALD_HTTP_PORT']}"
    wait_healthy(base_url, process)
    return process, base_url


def interrupt_and_check_nothing_is_left(process: subprocess.Popen[bytes]) -> None:
    tree = psutil.Process(process.pid).children(recursive=True)
    assert len(tree) >= 6  # four services, the translator, nats-server (postgres is detached by pg_ctl)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive


def postgres_running(data_dir: Path) -> bool:
    return any(
        "postgres" in (p.info["name"] or "") and str(data_dir / "pg") in " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["name", "cmdline"])
    )


def test_make_run_starts_everything_embedded_stops_cleanly_and_keeps_data(embedded_env: dict[str, str]) -> None:
    data_dir = Path(embedded_env["HERALD_DATA_DIR"])
    process, base_url = start(embedded_env)
    try:
        created = json.loads(herald(embedded_env, "user", "create", "--username", "ada", "--password", "pw"))
        assert set(created) == {"UserID", "APIKey"}
        body = post(base_url + "/api.php", {"Command": "tag.create", "APIKey": created["APIKey"], "Tag": "kept"})
        assert body["Success"] is True
        token = herald(embedded_env, "token", "mint", "--user", str(created["UserID"]))
        assert token.count(".") == 2
        admin = json.loads(herald(embedded_env, "admin", "create", "--username", "root", "--password", "pw"))
        assert set(admin) == {"AdminID", "AdminAPIKey"}
    finally:
        interrupt_and_check_nothing_is_left(process)
    assert not postgres_running(data_dir), "the embedded PostgreSQL outlived herald run"

    process, base_url = start(embedded_env)
    try:
        body = post(base_url + "/api.php", {"Command": "tags.get", "APIKey": created["APIKey"]})
        assert [t["Tag"] for t in body["Tags"]] == ["kept"]  # type: ignore[union-attr]
    finally:
        interrupt_and_check_nothing_is_left(process)


def test_the_cli_works_when_herald_is_not_running(embedded_env: dict[str, str]) -> None:
    data_dir = Path(embedded_env["HERALD_DATA_DIR"])
    created = json.loads(herald(embedded_env, "user", "create", "--username", "offline", "--password", "pw"))
    assert created["UserID"] == 1
    updated = json.loads(herald(embedded_env, "user", "update", "--user", "1", "--untrusted"))
    assert updated == {"UserID": 1, "Untrusted": True}
    assert not postgres_running(data_dir), "the CLI left the embedded PostgreSQL running"
