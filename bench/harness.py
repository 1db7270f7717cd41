"""Shared benchmark plumbing: start Herald (embedded PostgreSQL and NATS) on free ports, and measure load."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# Ports free_port has handed out: the system may offer a port again once its probe socket is closed, and
# two settings of one Herald on one port make `herald run` refuse to start.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, and never one this process handed out before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive free ports (delivery workers serve metrics on consecutive ports)."""
    while True:
        first = free_port()
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", port))
            if _HANDED_OUT.isdisjoint(range(first + 1, first + count)):
                _HANDED_OUT.update(range(first, first + count))
                return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


def metrics_port_env(workers: int) -> dict[str, str]:
    """Free metrics ports for every process of a `herald run` (the defaults would collide with another run)."""
    env = {
        f"HERALD_{name}_METRICS_PORT": str(free_port())
        for name in ("CAMPAIGN", "TAG", "AUDIENCE", "DELIVERY", "BOUNCE_RECEIVER")
    }
    env["HERALD_DELIVERY_WORKER_METRICS_PORT"] = str(free_ports_in_a_row(max(workers, 1)))
    return env


# The processes of `herald run` that `herald serve <role>` runs once each.
ROLES = ("campaign", "tag", "audience", "delivery", "translator", "mail-capture", "bounce-receiver")


@dataclass
class Herald:
    """A running `herald run` started for a benchmark."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    ports: dict[str, int]
    data_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def processes(self) -> dict[str, psutil.Process]:
        """Herald's processes by role (the services, the translator, nats-server, postgres)."""
        found: dict[str, psutil.Process] = {}
        for child in psutil.Process(self.process.pid).children(recursive=True):
            cmdline = " ".join(child.cmdline())
            for role in ROLES:
                if cmdline.endswith(f"serve {role}"):
                    found[role] = child
            if cmdline.endswith("serve delivery-worker"):
                found[f"delivery-worker-{child.pid}"] = child
            if "nats-server" in cmdline:
                found["nats-server"] = child
        return found


def postgres_processes(herald: Herald) -> list[psutil.Process]:
    """The embedded PostgreSQL's postmaster (started with this run's data folder) and its backends."""
    data = str(herald.data_dir)
    for process in psutil.process_iter(["cmdline"]):
        if data in " ".join(process.info["cmdline"] or []) and "postgres" in " ".join(
            process.info["cmdline"] or []
        ):
            return [process, *process.children(recursive=True)]
    return []


@contextmanager
def running_herald(extra_env: dict[str, str] | None = None, ready_within: float = 300) -> Iterator[Herald]:
    """Starts `herald run` with its own data folder and free ports (healthy within `ready_within` seconds); stops
    it (and everything it started) after."""
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        ports = {
            name: free_port()
            for name in ("http", "campaign", "tag", "audience", "delivery", "nats", "smtp", "bounces")
        }
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL", "SMTP_URL")}
        env.update(
            HERALD_DATA_DIR=str(Path(tmp) / "var"),
            HERALD_HTTP_PORT=str(ports["http"]),
            HERALD_EMBEDDED_NATS_PORT=str(ports["nats"]),
            HERALD_SMTP_CAPTURE_PORT=str(ports["smtp"]),
            HERALD_BOUNCE_RECEIVER_PORT=str(ports["bounces"]),
            HERALD_LOG_LEVEL="WARNING",
            HERALD_LOG_FORMAT="console",
            **{
                f"HERALD_{n.upper()}_GRPC_PORT": str(ports[n]) for n in ("campaign", "tag", "audience", "delivery")
            },
            **metrics_port_env(int((extra_env or {}).get("HERALD_DELIVERY_WORKERS", "2"))),
            **(extra_env or {}),
        )
        process = subprocess.Popen([sys.executable, "-m", "services.cli", "run"], env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + ready_within
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/healthz", timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("herald run did not come up") from None
                    time.sleep(0.2)
            yield Herald(process, env, ports, Path(tmp) / "var")
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class Result:
    """Latencies of one load run."""

    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def line(self) -> str:
        return (
            f"{self.name:<38} {self.rps:>9.0f} req/s   p50 {self.percentile(50):7.2f} ms   "
            f"p99 {self.percentile(99):7.2f} ms   mean {statistics.fmean(self.latencies) * 1000 if self.latencies else 0:7.2f} ms"
            f"   errors {self.errors}"
        )


async def drive(
    name: str, call: Callable[[int], Awaitable[bool]], *, concurrency: int, seconds: float, warmup: float = 2.0
) -> Result:
    """Runs `concurrency` workers calling `call(i)` back to back; counts only what finishes after the warm-up."""
    result = Result(name, seconds)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def worker(worker_id: int) -> None:
        i = worker_id
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            ok = await call(i)
            ended = time.perf_counter()
            if began >= measure_from:
                if ok:
                    result.latencies.append(ended - began)
                else:
                    result.errors += 1
            i += concurrency

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return result
