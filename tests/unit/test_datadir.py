"""The data directory's lock: one holder at a time, named to whoever else tries, released by release() or death."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.datadir import DataDirInUse, DataDirLock, shown


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_command(tmp_path: Path) -> None:
    with DataDirLock.acquire(tmp_path, "herald run"):
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock.acquire(tmp_path, "herald user create")
        assert refused.value.pid == os.getpid()
        assert str(refused.value) == f"Herald already runs from {tmp_path} (pid {os.getpid()})"
    with DataDirLock.acquire(tmp_path, "herald user create"):
        with pytest.raises(DataDirInUse, match=r"is in use by `herald user create` \(pid \d+\)"):
            DataDirLock.acquire(tmp_path, "herald run")


def test_the_lock_file_names_only_a_live_holder(tmp_path: Path) -> None:
    lock = DataDirLock.acquire(tmp_path, "herald run")
    assert (tmp_path / "herald.lock").read_text() == f"{os.getpid()}\nherald run\n"
    lock.release()
    assert (tmp_path / "herald.lock").read_text() == ""


def test_a_dead_holders_lock_is_free(tmp_path: Path) -> None:
    # A process that takes the lock and is killed without releasing it.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from services.datadir import DataDirLock;"
            "DataDirLock.acquire(Path(sys.argv[1]), 'herald run'); print('held', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    with pytest.raises(DataDirInUse):
        DataDirLock.acquire(tmp_path, "herald run")
    holder.kill()
    holder.wait()
    DataDirLock.acquire(tmp_path, "herald run").release()


def test_a_folder_below_the_current_one_is_shown_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert shown(Path("var")) == "./var"
    assert shown(tmp_path / "var") == "./var"
    assert shown(Path("/elsewhere/var")) == "/elsewhere/var"
