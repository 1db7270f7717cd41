"""The build's own guarantees: dependencies come from uv.lock, gen/ matches protos/, and the protos pass buf."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _uv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "uv", *args], cwd=ROOT, capture_output=True, text=True, check=False, env=env or dict(os.environ)
    )


def test_lock_matches_pyproject() -> None:
    # Offline: a changed requirement in pyproject.toml that uv.lock does not satisfy fails here, not on a new machine.
    result = _uv("lock", "--check", "--offline")
    assert result.returncode == 0, result.stdout + result.stderr


def test_environment_is_what_the_lock_says() -> None:
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(Path(sys.prefix)))
    result = _uv("sync", "--locked", "--check", "--offline", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bootstrapped_uv_is_the_locked_uv() -> None:
    bootstrap = (ROOT / "tools" / "uv-requirements.txt").read_text()
    match = re.search(r"^uv==(\S+)", bootstrap, re.MULTILINE)
    assert match is not None
    locked = {p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    assert locked["uv"] == match.group(1)


def test_every_locked_package_has_hashes() -> None:
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        if package["source"].get("editable") or package["source"].get("virtual"):
            continue
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files, package["name"]
        assert all(f.get("hash", "").startswith("sha256:") for f in files), package["name"]


def test_docker_image_installs_from_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml uv.lock" in dockerfile
    assert "uv sync --locked --no-dev" in dockerfile
    assert "pip install ." not in dockerfile


def test_runtime_dependencies_alone_run_herald(tmp_path: Path) -> None:
    # What the image does: the locked runtime set without the dev group, the project not editable.
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(tmp_path / "venv"))
    result = _uv("sync", "--locked", "--no-dev", "--no-editable", "--quiet", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    herald = subprocess.run(
        [tmp_path / "venv" / "bin" / "herald", "--help"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert herald.returncode == 0, herald.stdout + herald.stderr
    imports = subprocess.run(
        [tmp_path / "venv" / "bin" / "python", "-c", "import translator.main, services.delivery.worker"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert imports.returncode == 0, imports.stderr


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
