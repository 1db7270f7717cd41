"""`herald run`: the whole system in the foreground on one machine, embedded PostgreSQL and NATS by default.

It starts the four services, the translator, HERALD_DELIVERY_WORKERS delivery workers, the bounce
receiver (on HERALD_BOUNCE_RECEIVER_PORT) and (without SMTP_URL) the local mail capture, each process
serving its Prometheus metrics on a port of its own (listening_ports), and restarts
any of them that dies, after a short backoff, instead of stopping: a crashed worker's batches come back
to the others meanwhile. The embedded PostgreSQL and NATS it started are watched too, and started again
on the same folder and port when they die (EmbeddedWatch); a DATABASE_URL or NATS_URL server is not its
to restart. The supervisor is a child subreaper, so that the postmaster, which pg_ctl leaves behind, is
its child: it sees it die and reaps it.

One Herald per data directory (services/datadir.py): before anything is started or attached to, it
takes the folder's lock; a second `herald run` on the same folder says who holds it and exits with
code 1, touching nothing. With the lock taken, whatever still serves the folder was left by a run that
was killed, and is stopped first. Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop everything.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Protocol

import psutil

from services.common import metrics
from services.common.config import SERVICES, Settings
from services.common.embedded import EmbeddedNats, EmbeddedPostgres, port_is_open
from services.datadir import DataDirInUse, DataDirLock, stop_leftovers

PROCESSES = (*SERVICES, "translator", "bounce-receiver")
# A child that died is restarted after this many seconds, doubled for each quick death in a row up to
# the maximum (a crash loop); one that ran for RESTART_RESET_SECONDS counts as healthy again, and one
# killed by a signal (an operator, the OOM killer, a chaos test) was not crash-looping at all.
RESTART_DELAY_SECONDS = 0.5
# How long the services may take to listen at start: seconds on a laptop, but eight Python processes
# importing and migrating at once on a busy two-core machine have been seen to need over a minute.
STARTUP_SECONDS = 180.0
RESTART_MAX_DELAY_SECONDS = 10.0
RESTART_RESET_SECONDS = 30.0
# Signals that stop Herald: Ctrl-C, a service manager, and the terminal it runs in closing.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# prctl(PR_SET_PDEATHSIG): Linux delivers a signal to a child when its parent dies.
PR_SET_PDEATHSIG = 1
# prctl(PR_SET_CHILD_SUBREAPER): orphans below this process (the postmaster, which pg_ctl starts and leaves)
# become its children rather than init's, so that it can tell when one dies and reap it.
PR_SET_CHILD_SUBREAPER = 36
# An embedded server that died is started again; while it cannot start yet, tried again this often.
EMBEDDED_RETRY_SECONDS = 1.0
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _say(line: str) -> None:
    """A line on stderr; after SIGHUP the terminal is gone and writing to it fails, which must not stop the stop."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _child_setup(supervisor: int) -> None:
    """Runs in each child between fork and exec.

    A closed terminal sends SIGHUP to the whole foreground process group. The children ignore it and
    are stopped by the supervisor with SIGTERM instead, gracefully, as on Ctrl-C. And should the
    supervisor be killed outright, Linux sends them SIGTERM, so that they do not hold on to their ports.
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != supervisor:  # it died before prctl took effect
            os._exit(1)


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
        supervisor = os.getpid()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", self.serves],
            env=self.env,
            preexec_fn=lambda: _child_setup(supervisor),
        )
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
            _say(f"{self.name} exited with code {self.process.returncode}; restarting in {self.delay:g} s")
            self.restart_at = now + self.delay
            self.delay = min(self.delay * 2, RESTART_MAX_DELAY_SECONDS)
        if self.restart_at is not None and now >= self.restart_at:
            self.start()


class Embedded(Protocol):
    def alive(self) -> bool: ...

    def restart(self) -> None: ...


class EmbeddedWatch:
    """An embedded server that `herald run` started (never one it only attached to): started again when it died,
    on the same folder and port, so the processes' DATABASE_URL and NATS_URL stay right; each restart is said
    and counted."""

    def __init__(self, name: str, server: Embedded) -> None:
        self.name = name
        self.server = server
        self.restarts = 0
        self.retry_at: float | None = None

    def watch(self, now: float) -> None:
        if self.retry_at is None:
            if self.server.alive():
                return
            _say(f"herald run: the embedded {self.name} died; starting it again")
            self.retry_at = now
        if now < self.retry_at:
            return
        try:
            self.server.restart()
        except RuntimeError as exc:
            if self.retry_at == now or now - self.retry_at > 30:
                _say(f"herald run: {exc}; trying again every {EMBEDDED_RETRY_SECONDS:g} s")
            self.retry_at = now + EMBEDDED_RETRY_SECONDS
            return
        self.restarts += 1
        self.retry_at = None
        _say(f"herald run: the embedded {self.name} runs again ({self.restarts} restart(s) in this run)")


def _reap_orphans(known: set[int]) -> None:
    """Reaps the dead orphans this subreaper inherited (not the supervised children: Popen reaps those)."""
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        if child.pid in known:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue


def listening_ports(settings: Settings, capture: bool) -> dict[str, int]:
    """Every port the processes of `herald run` listen on, by the setting that names it (HERALD_...).

    Each process serves its Prometheus metrics on a port of its own (services/common/metrics.py): the
    defaults are all different, and the workers take consecutive ports from theirs.
    """
    ports = {"HERALD_HTTP_PORT": settings.http_port, "HERALD_BOUNCE_RECEIVER_PORT": settings.bounce_receiver_port}
    ports |= {f"HERALD_{name.upper()}_GRPC_PORT": settings.grpc_port(name) for name in SERVICES}
    if capture:
        ports["HERALD_SMTP_CAPTURE_PORT"] = settings.smtp_capture_port
    for process, setting in metrics.PORT_SETTINGS.items():
        port = metrics.metrics_port(settings, process)
        if not port:
            continue
        if process == "delivery-worker":
            for index in range(settings.delivery_workers):
                ports[f"HERALD_{setting.upper()} (+{index}, worker {index + 1})"] = port + index
        else:
            ports[f"HERALD_{setting.upper()}"] = port
    return ports


def _check_ports(settings: Settings, capture: bool) -> None:
    """Refuses, before anything starts, settings that would have two processes listen on one port."""
    holders: dict[int, str] = {}
    for setting, port in listening_ports(settings, capture).items():
        if port in holders:
            raise RuntimeError(f"{holders[port]} and {setting} both name port {port}; give each its own")
        holders[port] = setting


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
    settings: Settings,
    children: dict[str, subprocess.Popen[bytes]],
    timeout: float,
    stopping: Callable[[], bool],
) -> None:
    ports = {name: settings.grpc_port(name) for name in SERVICES} | {
        "translator": settings.http_port,
        "bounce-receiver": settings.bounce_receiver_port,
    }
    if "mail-capture" in children:
        ports["mail-capture"] = settings.smtp_capture_port
    host = _local_host(settings)
    deadline = time.monotonic() + timeout
    waiting = dict(ports)
    while waiting and not stopping():
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
    """Starts everything, restarts what dies, and on Ctrl-C / SIGTERM / SIGHUP stops everything it started.

    Exits with 1, having touched nothing, when the data directory is in use.
    """
    try:
        lock = DataDirLock.acquire(settings.data_dir, "herald run")
    except DataDirInUse as exc:
        _say(f"herald run: {exc}; stop that first, or set HERALD_DATA_DIR to another folder")
        return 1
    with lock:
        return _run(settings)


def nats_pids(nats: EmbeddedNats | None) -> set[int]:
    """The embedded NATS's pid, which its Popen reaps."""
    return {nats.pid} if nats is not None and nats.pid is not None else set()


def _run(settings: Settings) -> int:
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, request_stop)

    if _LIBC is not None:
        _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    postgres = EmbeddedPostgres(settings.data_dir / "pg") if not settings.database_url else None
    nats = EmbeddedNats(settings.data_dir / "nats", settings.embedded_nats_port) if not settings.nats_url else None
    children: dict[str, subprocess.Popen[bytes]] = {}
    exit_code = 0
    try:
        stop_leftovers(settings.data_dir, lambda line: _say(f"herald run: {line}"))
        database_url = postgres.start() if postgres else settings.database_url
        nats_url = nats.start() if nats else settings.nats_url
        env = _child_env(settings, database_url, nats_url)
        # No mail relay configured: a local capture receives every message, readable at /mail.
        capture = not settings.smtp_url
        _check_ports(settings, capture)
        env["HERALD_MAIL_CAPTURE"] = "true" if capture else "false"
        if capture:
            env["SMTP_URL"] = f"smtp://{_local_host(settings)}:{settings.smtp_capture_port}"
        supervised = _children(settings, env, capture)
        # What this run started, watched and started again when it dies: not a DATABASE_URL or NATS_URL server.
        embedded = [
            *([EmbeddedWatch("PostgreSQL", postgres)] if postgres is not None and postgres.started else []),
            *([EmbeddedWatch("NATS", nats)] if nats is not None else []),
        ]
        for child in supervised:
            children[child.name] = child.start()
        _wait_until_listening(settings, children, STARTUP_SECONDS, lambda: stopping)
        _say(
            f"Herald is up: legacy API at {settings.effective_public_url()}/api.php, "
            f"data in {settings.data_dir.resolve()}"
            + (f", sent mail at {settings.effective_public_url()}/mail" if capture else "")
            + ". Ctrl-C stops everything."
        )
        reaped_at = 0.0
        while not stopping:
            now = time.monotonic()
            for server in embedded:
                server.watch(now)
            if now - reaped_at >= 1.0:
                reaped_at = now
                _reap_orphans({process.pid for process in children.values()} | nats_pids(nats))
            for child in supervised:
                if stopping:
                    break  # Ctrl-C reaches the children too: their deaths now are no crash
                child.watch(now)
                if child.process is not None:
                    children[child.name] = child.process
            time.sleep(0.2)
    except RuntimeError as exc:
        _say(f"herald run: {exc}")
        exit_code = 1
    finally:
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)
        _stop_children(children)
        if nats:
            nats.stop()
        if postgres:
            # Ours even when start() found it running: holding the lock, this run owns the folder, and
            # whoever started it meanwhile (a `herald user ...` command) leaves it to us.
            postgres.stop()
    return exit_code
