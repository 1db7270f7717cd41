"""`herald run` as a new user meets it: embedded PostgreSQL and NATS, the CLI, a clean Ctrl-C, data that survives.

And at its edges: one Herald per data directory, a closed terminal, a supervisor killed outright, and an
embedded NATS that only Herald's own processes may use.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest

from services.common.embedded import EmbeddedNats, nats_servers_of, postmasters_of
from tests.conftest import ROOT, free_port, metrics_env, metrics_ports, wait_healthy


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
        HERALD_BOUNCE_RECEIVER_PORT=str(free_port()),
        HERALD_LOG_LEVEL="WARNING",
        **{f"HERALD_{name}_GRPC_PORT": str(free_port()) for name in ("CAMPAIGN", "TAG", "AUDIENCE", "DELIVERY")},
        **metrics_env(metrics_ports()),
    )
    return env


def start(env: dict[str, str], log: Path | None = None, **popen: Any) -> tuple[subprocess.Popen[bytes], str]:
    """Starts `herald run` and waits until it answers; its stderr goes to `log` when given."""
    stderr = log.open("ab") if log else None
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"], env=env, cwd=ROOT, stderr=stderr, **popen
    )
    base_url = f"http://127.0.0.1:{env['HERALD_HTTP_PORT']}"
    wait_healthy(base_url, process)
    return process, base_url


def stop_and_check_nothing_is_left(
    process: subprocess.Popen[bytes], send: Callable[[subprocess.Popen[bytes]], None] | None = None
) -> None:
    """Stops `herald run` (Ctrl-C unless `send` says otherwise); it exits 0 and every process it started is gone."""
    tree = psutil.Process(process.pid).children(recursive=True)
    assert len(tree) >= 6  # four services, the translator, nats-server (postgres is detached by pg_ctl)
    if send is None:
        process.send_signal(signal.SIGINT)
    else:
        send(process)
    assert process.wait(60) == 0
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive


def interrupt_and_check_nothing_is_left(process: subprocess.Popen[bytes]) -> None:
    stop_and_check_nothing_is_left(process)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


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


def folder_files(data_dir: Path) -> dict[Path, tuple[bytes, int]]:
    """The data directory's own files (the lock, the token secret) with their contents and modification times."""
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in data_dir.iterdir() if path.is_file()}


def test_a_second_herald_run_on_the_same_folder_refuses_in_one_line_and_leaves_the_first_alone(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = Path(embedded_env["HERALD_DATA_DIR"])
    first, base_url = start(embedded_env)
    try:
        created = json.loads(herald(embedded_env, "user", "create", "--username", "first", "--password", "pw"))
        postgres, nats_server = postmasters_of(data_dir / "pg"), nats_servers_of(data_dir / "nats")
        assert len(postgres) == 1 and len(nats_server) == 1
        files = folder_files(data_dir)

        # `make run` again in the same folder, as the user typed it: a relative ./var.
        again = {**embedded_env, "HERALD_DATA_DIR": "var"}
        # And as the old hint had it: another NATS port (once a second NATS on the same store).
        other_port = {**again, "HERALD_EMBEDDED_NATS_PORT": str(free_port())}
        for env in (again, other_port):
            second = subprocess.run(
                [sys.executable, "-m", "services.cli", "run"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 1
            assert second.stderr.splitlines() == [
                f"herald run: Herald already runs from ./var (pid {first.pid}); "
                "stop that first, or set HERALD_DATA_DIR to another folder"
            ]

        assert postmasters_of(data_dir / "pg") == postgres and alive(postgres) == postgres
        assert nats_servers_of(data_dir / "nats") == nats_server and alive(nats_server) == nats_server
        assert folder_files(data_dir) == files
        body = post(base_url + "/api.php", {"Command": "tag.create", "APIKey": created["APIKey"], "Tag": "still"})
        assert body["Success"] is True, body
    finally:
        interrupt_and_check_nothing_is_left(first)


def test_a_closed_terminal_stops_everything_like_ctrl_c(embedded_env: dict[str, str]) -> None:
    data_dir = Path(embedded_env["HERALD_DATA_DIR"])
    # A session of its own, standing in for the terminal: closing one sends SIGHUP to its foreground
    # process group, which is `herald run` and everything it started.
    process, _ = start(embedded_env, start_new_session=True)
    stop_and_check_nothing_is_left(process, lambda p: os.killpg(p.pid, signal.SIGHUP))
    assert not postgres_running(data_dir), "the embedded PostgreSQL outlived the terminal"


def test_what_a_killed_herald_run_left_running_is_stopped_at_the_next_start(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = Path(embedded_env["HERALD_DATA_DIR"])
    process, base_url = start(embedded_env)
    created = json.loads(herald(embedded_env, "user", "create", "--username", "kept", "--password", "pw"))
    assert post(base_url + "/api.php", {"Command": "tag.create", "APIKey": created["APIKey"], "Tag": "kept"})[
        "Success"
    ]
    served = [p for p in psutil.Process(process.pid).children() if "serve" in p.cmdline()]
    postgres, nats_server = postmasters_of(data_dir / "pg"), nats_servers_of(data_dir / "nats")
    assert len(served) >= 6 and len(postgres) == 1 and len(nats_server) == 1

    process.kill()
    process.wait()
    # The services stop on their own when their supervisor dies (Linux); PostgreSQL and NATS are left.
    _, still = psutil.wait_procs(served, timeout=30)
    assert not alive(still)
    assert alive(postgres + nats_server) == postgres + nats_server

    log = tmp_path / "second-start.log"
    process, base_url = start(embedded_env, log=log)
    try:
        said = log.read_text()
        assert f"herald run: stopping a nats-server (pid {nats_server[0].pid}) left running" in said, said
        assert f"herald run: stopping a postgres (pid {postgres[0].pid}) left running" in said, said
        assert not alive(postgres + nats_server)
        body = post(base_url + "/api.php", {"Command": "tags.get", "APIKey": created["APIKey"]})
        assert [t["Tag"] for t in body["Tags"]] == ["kept"]  # type: ignore[union-attr]
    finally:
        interrupt_and_check_nothing_is_left(process)


def test_the_embedded_nats_refuses_clients_without_its_credentials(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", free_port())
    url = server.start()
    try:
        password_file = tmp_path / "nats" / "password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "nats" / "server.conf").stat().st_mode) == 0o600
        assert password_file.read_text() not in " ".join(nats_servers_of(tmp_path / "nats")[0].cmdline())

        async def connect(to: str) -> None:
            client = await nats.connect(to, allow_reconnect=False, connect_timeout=5)
            await client.close()

        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            asyncio.run(connect(f"nats://127.0.0.1:{server.port}"))
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            asyncio.run(connect(f"nats://herald:guessed@127.0.0.1:{server.port}"))
        asyncio.run(connect(url))
    finally:
        server.stop()
    # Generated once: a restart keeps the credentials that clients were given.
    assert server.start() == url
    server.stop()
