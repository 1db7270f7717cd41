"""The build's own guarantees: gen/ matches protos/, and the protos pass buf lint and buf format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "tools/protogen.py", "check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_protos_pass_buf_lint() -> None:
    result = subprocess.run([BIN / "buf", "lint"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_protos_are_buf_formatted() -> None:
    result = subprocess.run(
        [BIN / "buf", "format", "--diff", "--exit-code"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
