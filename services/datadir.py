"""One Herald per data directory: the lock that says which process uses HERALD_DATA_DIR, and what a killed run left.

The lock is `flock` on `<data dir>/herald.lock`, which holds the holder's pid and command. The kernel
releases it when the holder dies, however it dies (Ctrl-C, SIGKILL, the OOM killer), so a lock that
can be taken means nobody uses the folder: no stale pid file to judge, no pid that may have been reused.
`herald run` holds it for its whole life; a CLI command that has to start the embedded PostgreSQL
itself holds it while it runs.

What a killed `herald run` leaves behind is found by the folder it served: a postgres whose data
directory is `<data dir>/pg`, a nats-server whose store is `<data dir>/nats`, and `herald serve`
processes whose HERALD_DATA_DIR is this folder (on Linux those receive SIGTERM when the supervisor
dies; elsewhere they may linger). Once the lock is ours, all of them are leftovers.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from services.common.embedded import nats_servers_of, postmasters_of

LOCK_FILE = "herald.lock"
# How long a leftover gets for a clean stop before it is killed: a postgres fast shutdown and a
# `herald serve` process's graceful stop both take seconds.
LEFTOVER_GRACE_SECONDS = 20.0


class DataDirInUse(Exception):
    """Another live process holds the data directory's lock."""

    def __init__(self, data_dir: Path, pid: int | None, command: str) -> None:
        self.pid = pid
        self.command = command
        holder = f"pid {pid}" if pid else "pid unknown"
        if command == "herald run":
            message = f"Herald already runs from {shown(data_dir)} ({holder})"
        else:
            message = f"{shown(data_dir)} is in use by `{command or 'another herald command'}` ({holder})"
        super().__init__(message)


def shown(data_dir: Path) -> str:
    """The data directory as a person recognises it: `./var` below the current folder, else absolute."""
    path = data_dir.resolve()
    try:
        return f"./{path.relative_to(Path.cwd())}"
    except ValueError:
        return str(path)


class DataDirLock:
    """The held lock of one data directory; `release()` (or the holder's death) gives it up."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, data_dir: Path, command: str) -> DataDirLock:
        """Takes the lock without waiting, or raises DataDirInUse naming the holder.

        Nothing in the folder changes when the lock is taken by somebody else: the file is opened, not
        truncated, and only the holder writes its pid into it.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        # Not inherited by children (O_CLOEXEC): a leftover child must not keep the folder locked.
        descriptor = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, holder = _holder(descriptor)
            os.close(descriptor)
            raise DataDirInUse(data_dir, pid, holder) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n{command}\n".encode(), 0)
        return cls(descriptor)

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        if self._descriptor is None:
            return
        # Emptied while still held, so that the file never names a process that no longer holds it.
        os.ftruncate(self._descriptor, 0)
        os.close(self._descriptor)
        self._descriptor = None


def _holder(descriptor: int) -> tuple[int | None, str]:
    """(pid, command) from the lock file; the holder writes them just after taking the lock, so wait a moment."""
    deadline = time.monotonic() + 1.0
    while True:
        lines = os.pread(descriptor, 4096, 0).decode(errors="replace").splitlines()
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    return pid, lines[1].strip() if len(lines) > 1 else ""


@dataclass(frozen=True)
class Leftover:
    """A process a killed run left serving this data directory."""

    what: str
    process: psutil.Process
    # The signal that stops it cleanly: a fast shutdown for postgres (SIGINT), SIGTERM for the others.
    stop_signal: signal.Signals

    def command(self) -> str:
        return f"kill -{self.stop_signal.name.removeprefix('SIG')} {self.process.pid}"


def leftovers(data_dir: Path) -> list[Leftover]:
    """Processes serving `data_dir`, in the order they are to stop: Herald's own first, then NATS and PostgreSQL.

    Only meaningful to the lock's holder: for anyone else they are a live Herald's processes.
    """
    found = [
        Leftover(f"herald serve {name}", process, signal.SIGTERM) for name, process in _herald_processes(data_dir)
    ]
    found += [Leftover("nats-server", process, signal.SIGTERM) for process in nats_servers_of(data_dir / "nats")]
    found += [Leftover("postgres", process, signal.SIGINT) for process in postmasters_of(data_dir / "pg")]
    return found


def _herald_processes(data_dir: Path) -> list[tuple[str, psutil.Process]]:
    wanted = str(data_dir.resolve())
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.pid == os.getpid() or "serve" not in cmdline or not _runs_herald(cmdline):
            continue
        try:
            if process.environ().get("HERALD_DATA_DIR") == wanted:
                found.append((cmdline[-1], process))
        except psutil.Error:
            continue  # gone, or another user's: not one of ours
    return found


def _runs_herald(cmdline: list[str]) -> bool:
    """`python -m services.cli ...` (how `herald run` starts its children) or the `herald` script."""
    return "services.cli" in cmdline or any(Path(part).name == "herald" for part in cmdline[:2])


def stop_leftovers(data_dir: Path, say: Callable[[str], None]) -> None:
    """Stops every leftover of `data_dir` (the caller holds its lock), saying what it stopped.

    Raises RuntimeError naming the command to run when one cannot be stopped (another user's process).
    """
    for leftover in leftovers(data_dir):
        say(
            f"stopping a {leftover.what} (pid {leftover.process.pid}) left running by an earlier run "
            f"from {shown(data_dir)}"
        )
        try:
            leftover.process.send_signal(leftover.stop_signal)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied as exc:
            raise RuntimeError(
                f"cannot stop the {leftover.what} (pid {leftover.process.pid}) that an earlier run left serving "
                f"{shown(data_dir)}; stop it with `{leftover.command()}` (as its owner) and start again"
            ) from exc
        if not _ended(leftover.process, LEFTOVER_GRACE_SECONDS):
            leftover.process.kill()
            _ended(leftover.process, 5.0)


def _ended(process: psutil.Process, timeout: float) -> bool:
    """Waits until the process has exited; a zombie has (its parent, not us, would have to reap it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
