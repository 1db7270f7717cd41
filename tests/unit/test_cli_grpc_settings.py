"""The herald command sets gRPC core's GRPC_EXPERIMENTS before grpc loads (services/cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.cli import GRPC_EXPERIMENTS

ROOT = Path(__file__).resolve().parent.parent.parent

# Reports the value GRPC_EXPERIMENTS has at the moment grpc is first imported, which is when gRPC
# core reads it; then loads what a service process loads.
PROBE = """
import os, sys

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc":
            print("at grpc import:", repr(os.environ.get("GRPC_EXPERIMENTS")))
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, Watch())
import services.cli
import services.campaign.main
"""


def probe(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_the_setting_is_in_place_before_grpc_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert probe(env) == f"at grpc import: {GRPC_EXPERIMENTS!r}"


def test_an_operators_own_setting_wins() -> None:
    env = {**os.environ, "GRPC_EXPERIMENTS": ""}
    assert probe(env) == "at grpc import: ''"
