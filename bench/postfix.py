"""Postfix's smtp-sink and smtp-source for benchmarks, unpacked from the Debian package without installing a mail server.

`postfix_tools()` runs `apt-get download postfix` into bench/.tools/ (git-ignored), unpacks it with
`dpkg -x`, and returns the two programs with the library path they need (Postfix's own shared
libraries live in the package; the system libraries they link against are downloaded and
unpacked too when `ldd` finds them missing). Nothing is installed and no mail server runs.

`unpacked_package()` does the same for any package (tools/bounce_corpus.py runs a whole private
Postfix, and Exim, from it).

`SmtpSink` runs smtp-sink on a free port (as root with `-u nobody`, which it requires) and reads
its running counter (`-c`), so a benchmark knows how many messages the sink accepted.
`run_source()` runs smtp-source and times it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

BENCH = Path(__file__).resolve().parent
TOOLS = BENCH / ".tools"
_COUNTER = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


@dataclass(frozen=True)
class PostfixTools:
    """The unpacked smtp-sink and smtp-source, and the LD_LIBRARY_PATH they run with."""

    sink: Path
    source: Path
    library_path: str

    def env(self) -> dict[str, str]:
        return _with_library_path(self.library_path)


def _with_library_path(library_path: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (library_path, env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def _apt_download(packages: list[str], into: Path) -> None:
    """`apt-get download` the packages into `into`; runs `apt-get update` once if apt does not know them."""
    into.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        result = subprocess.run(["apt-get", "download", *packages], cwd=into, capture_output=True, text=True)
        if result.returncode == 0:
            return
        if attempt == 0:
            subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    raise RuntimeError(f"apt-get download {' '.join(packages)} failed:\n{result.stderr}")


def _unpack(debs: Path, root: Path) -> None:
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)


def _library_dirs(root: Path) -> list[str]:
    return sorted({str(path.parent) for path in root.rglob("*.so*") if path.is_file()})


def _missing_libraries(binaries: Iterable[Path], library_path: str) -> set[str]:
    env = _with_library_path(library_path)
    missing: set[str] = set()
    for binary in binaries:
        output = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True).stdout
        missing |= {line.split()[0] for line in output.splitlines() if "not found" in line}
    return missing


def _library_dependencies(package: str) -> list[str]:
    """The lib* packages that `package` depends on (where the shared libraries of its binaries come from)."""
    output = subprocess.run(["apt-cache", "depends", package], capture_output=True, text=True, check=True).stdout
    names = [line.split(":", 1)[1].strip() for line in output.splitlines() if line.strip().startswith("Depends:")]
    # libc stays the system's: a second C library next to the system's loader would not load.
    return [name for name in names if name.startswith("lib") and name != "libc6"]


@dataclass(frozen=True)
class UnpackedPackage:
    """A Debian package unpacked with `dpkg -x` under `root`, and the LD_LIBRARY_PATH its programs run with."""

    root: Path
    library_path: str

    def env(self) -> dict[str, str]:
        return _with_library_path(self.library_path)


def unpacked_package(package: str, binaries: Iterable[str], cache: Path) -> UnpackedPackage:
    """`package` downloaded into cache/debs and unpacked into cache/root on first use, reused afterwards.

    `binaries` (paths inside the package) must run: the system libraries they miss are fetched from
    the package's lib* dependencies and unpacked next to it."""
    root, debs = cache / "root", cache / "debs"
    programs = [root / binary for binary in binaries]
    if not all(program.exists() for program in programs):
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise RuntimeError(f"apt-get and dpkg are needed to fetch {package}")
        if not list(debs.glob(f"{package}_*.deb")):
            _apt_download([package], debs)
        _unpack(debs, root)
    unpacked = UnpackedPackage(root, ":".join(_library_dirs(root)))
    if _missing_libraries(programs, unpacked.library_path):
        # Postfix links against system libraries (Berkeley DB, ICU, SASL, OpenSSL...) that a
        # minimal machine may lack: their packages are unpacked next to it.
        _apt_download(_library_dependencies(package), debs)
        _unpack(debs, root)
        unpacked = UnpackedPackage(root, ":".join(_library_dirs(root)))
        missing = _missing_libraries(programs, unpacked.library_path)
        if missing:
            raise RuntimeError(f"{package}'s programs still miss libraries: {', '.join(sorted(missing))}")
    return unpacked


def postfix_tools(cache: Path = TOOLS) -> PostfixTools:
    """smtp-sink and smtp-source, downloaded and unpacked on first use, reused afterwards."""
    sink, source = "usr/sbin/smtp-sink", "usr/sbin/smtp-source"
    postfix = unpacked_package("postfix", [sink, source], cache)
    return PostfixTools(postfix.root / sink, postfix.root / source, postfix.library_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """smtp-sink on 127.0.0.1:<free port>, accepting and discarding everything; `messages` counts what it accepted."""

    def __init__(self, tools: PostfixTools, port: int | None = None, backlog: int = 1024) -> None:
        self.tools = tools
        self.port = port or free_port()
        self.backlog = backlog
        self.messages = 0
        self.sessions = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()

    @property
    def pid(self) -> int:
        """smtp-sink's process (one, event-driven), once started."""
        assert self._process is not None, "SmtpSink.start() first"
        return self._process.pid

    def start(self) -> SmtpSink:
        command = [str(self.tools.sink), "-c"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # smtp-sink refuses to run as root without dropping privileges
        command += [f"127.0.0.1:{self.port}", str(self.backlog)]
        self._process = subprocess.Popen(
            command, env=self.tools.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read_counter, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 10
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"smtp-sink exited with {self._process.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError("smtp-sink did not start listening")
            time.sleep(0.05)

    def _read_counter(self) -> None:
        # -c rewrites one status line with \r after every event: "sess=N quit=N mesg=N".
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout.fileno()
        pending = b""
        while chunk := os.read(stdout, 65536):
            pending += chunk
            *complete, pending = re.split(rb"[\r\n]", pending)
            found = [match for line in complete if (match := _COUNTER.search(line))]
            if found:
                with self._changed:
                    self.sessions, self.messages = int(found[-1].group(1)), int(found[-1].group(3))
                    self._changed.notify_all()

    def wait_for(self, messages: int, timeout: float = 60.0) -> bool:
        """Waits until the sink has accepted at least `messages` in total; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.messages >= messages, timeout)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class SourceRun:
    """One smtp-source run: what it sent and how long it took."""

    messages: int
    connections: int
    seconds: float
    command: str

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


def run_source(
    tools: PostfixTools, port: int, *, messages: int, connections: int, size: int, reuse_sessions: bool = True
) -> SourceRun:
    """smtp-source sending `messages` of `size` bytes over `connections` concurrent sessions, timed.

    With `reuse_sessions` (`-d`) each session carries many messages, as Herald's pool does;
    without it every message gets its own connection.
    """
    command = [
        str(tools.source),
        "-s",
        str(connections),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        "bench@herald.test",
        "-t",
        "sink@herald.test",
    ]
    if reuse_sessions:
        command.append("-d")
    command.append(f"127.0.0.1:{port}")
    started = time.perf_counter()
    subprocess.run(command, env=tools.env(), check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    shown = " ".join(["smtp-source", *command[1:]])
    return SourceRun(messages=messages, connections=connections, seconds=seconds, command=shown)
