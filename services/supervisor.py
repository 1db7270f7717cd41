"""`herald run`: the whole system in the foreground on one machine, embedded PostgreSQL and NATS by default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from services.common.config import SERVICES, Settings
from services.common.embedded import EmbeddedNats, EmbeddedPostgres, port_is_open

PROCESSES = (*SERVICES, "translator")


def _child_env(settings: Settings, database_url: str, nats_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        NATS_URL=nats_url,
        HERALD_DATA_DIR=str(settings.data_dir.resolve()),
        HERALD_TOKEN_SECRET=settings.effective_token_secret(),
        PYTHONUNBUFFERED="1",
    )
    if "HERALD_LOG_FORMAT" not in os.environ and sys.stderr.isatty():
        env["HERALD_LOG_FORMAT"] = "console"  # a person is watching; JSON lines are for log shippers
    return env


def _local_host(settings: Settings) -> str:
    """Where processes on this machine reach a server bound to HERALD_BIND."""
    return "127.0.0.1" if settings.bind in ("0.0.0.0", "::") else settings.bind


def _wait_until_listening(
    settings: Settings, children: dict[str, subprocess.Popen[bytes]], timeout: float
) -> None:
    ports = {name: settings.grpc_port(name) for name in SERVICES} | {"translator": settings.http_port}
    if "mail-capture" in children:
        ports["mail-capture"] = settings.smtp_capture_port
    host = _local_host(settings)
    deadline = time.monotonic() + timeout
    waiting = dict(ports)
    while waiting:
        for name, port in list(waiting.items()):
            if children[name].poll() is not None:
                raise RuntimeError(f"{name} exited with code {children[name].returncode} while starting")
            if port_is_open(host, port):
                del waiting[name]
        if time.monotonic() > deadline:
            raise RuntimeError(f"not listening after {timeout}s: {', '.join(waiting)}")
        time.sleep(0.1)


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in children.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in children.values():
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(settings: Settings) -> int:
    """Starts everything, waits for Ctrl-C / SIGTERM or a child's death, then stops everything it started."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    postgres = EmbeddedPostgres(settings.data_dir / "pg") if not settings.database_url else None
    nats = EmbeddedNats(settings.data_dir / "nats", settings.embedded_nats_port) if not settings.nats_url else None
    children: dict[str, subprocess.Popen[bytes]] = {}
    exit_code = 0
    try:
        database_url = postgres.start() if postgres else settings.database_url
        nats_url = nats.start() if nats else settings.nats_url
        env = _child_env(settings, database_url, nats_url)
        processes: tuple[str, ...] = PROCESSES
        # No mail relay configured: a local capture receives every message, readable at /mail.
        capture = not settings.smtp_url
        env["HERALD_MAIL_CAPTURE"] = "true" if capture else "false"
        if capture:
            env["SMTP_URL"] = f"smtp://{_local_host(settings)}:{settings.smtp_capture_port}"
            processes = (*PROCESSES, "mail-capture")
        for name in processes:
            children[name] = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name], env=env)
        _wait_until_listening(settings, children, timeout=60)
        print(
            f"Herald is up: legacy API at {settings.effective_public_url()}/api.php, "
            f"data in {settings.data_dir.resolve()}"
            + (f", sent mail at {settings.effective_public_url()}/mail" if capture else "")
            + ". Ctrl-C stops everything.",
            file=sys.stderr,
            flush=True,
        )
        while not stopping:
            for name, process in children.items():
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; stopping Herald", file=sys.stderr)
                    exit_code = 1
                    stopping = True
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"herald run: {exc}", file=sys.stderr)
        exit_code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_children(children)
        if nats:
            nats.stop()
        if postgres:
            postgres.stop()
    return exit_code
