"""`herald run`: the whole system in the foreground on one machine, embedded PostgreSQL and NATS by default.

It starts the four services, the translator, HERALD_DELIVERY_WORKERS delivery workers and (without
SMTP_URL) the local mail capture, and restarts any of them that dies, after a short backoff, instead
of stopping: a crashed worker's batches come back to the others meanwhile.
"""

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
# A child that died is restarted after this many seconds, doubled for each quick death in a row up to
# the maximum (a crash loop); one that ran for RESTART_RESET_SECONDS counts as healthy again, and one
# killed by a signal (an operator, the OOM killer, a chaos test) was not crash-looping at all.
RESTART_DELAY_SECONDS = 0.5
RESTART_MAX_DELAY_SECONDS = 10.0
RESTART_RESET_SECONDS = 30.0


class Child:
    """One supervised process: what `herald serve` runs, its environment, and its restarts."""

    def __init__(self, name: str, serves: str, env: dict[str, str]) -> None:
        self.name = name
        self.serves = serves
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = RESTART_DELAY_SECONDS
        self.restart_at: float | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", self.serves], env=self.env)
        self.started_at = time.monotonic()
        self.restart_at = None
        return self.process

    def watch(self, now: float) -> None:
        """Restarts the process when it died and its backoff has passed."""
        if self.process is None:
            return
        if self.restart_at is None and self.process.poll() is not None:
            if self.process.returncode < 0 or now - self.started_at >= RESTART_RESET_SECONDS:
                self.delay = RESTART_DELAY_SECONDS
            print(
                f"{self.name} exited with code {self.process.returncode}; restarting in {self.delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            self.restart_at = now + self.delay
            self.delay = min(self.delay * 2, RESTART_MAX_DELAY_SECONDS)
        if self.restart_at is not None and now >= self.restart_at:
            self.start()


def _children(settings: Settings, env: dict[str, str], capture: bool) -> list[Child]:
    children = [Child(name, name, env) for name in PROCESSES]
    if capture:
        children.append(Child("mail-capture", "mail-capture", env))
    for index in range(settings.delivery_workers):
        worker_env = dict(env)
        if settings.delivery_worker_metrics_port:
            # One machine, several workers: each exposes its metrics on a port of its own.
            worker_env["HERALD_DELIVERY_WORKER_METRICS_PORT"] = str(settings.delivery_worker_metrics_port + index)
        children.append(Child(f"delivery-worker-{index + 1}", "delivery-worker", worker_env))
    return children


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
    """Starts everything, restarts what dies, and on Ctrl-C / SIGTERM stops everything it started."""
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
        # No mail relay configured: a local capture receives every message, readable at /mail.
        capture = not settings.smtp_url
        env["HERALD_MAIL_CAPTURE"] = "true" if capture else "false"
        if capture:
            env["SMTP_URL"] = f"smtp://{_local_host(settings)}:{settings.smtp_capture_port}"
        supervised = _children(settings, env, capture)
        for child in supervised:
            children[child.name] = child.start()
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
            now = time.monotonic()
            for child in supervised:
                if stopping:
                    break  # Ctrl-C reaches the children too: their deaths now are no crash
                child.watch(now)
                if child.process is not None:
                    children[child.name] = child.process
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
