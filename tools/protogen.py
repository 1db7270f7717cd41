"""Generates gen/ from protos/ with grpcio-tools and mypy-protobuf, or checks that gen/ is current."""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"


def generate(out: Path) -> None:
    """Runs protoc over every .proto under protos/ into `out`, adding the package __init__ files."""
    out.mkdir(parents=True, exist_ok=True)
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    plugin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{wkt}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package_dir in {p.parent for p in out.rglob("*_pb2.py")}:
        d = package_dir
        while d != out:
            (d / "__init__.py").touch()
            d = d.parent


def stale_files() -> list[str]:
    """Returns the files of gen/ that differ from a fresh generation (empty when gen/ is current)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        actual = {p.relative_to(GEN) for p in GEN.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        stale = sorted(str(p) for p in expected ^ actual)
        stale += sorted(str(p) for p in expected & actual if not filecmp.cmp(fresh / p, GEN / p, shallow=False))
        return stale


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "gen"
    if command == "gen":
        shutil.rmtree(GEN, ignore_errors=True)
        generate(GEN)
        print(f"generated {GEN}")
    elif command == "check":
        stale = stale_files()
        if stale:
            raise SystemExit("gen/ is stale; run `make protos`:\n  " + "\n  ".join(stale))
        print("gen/ is current")
    else:
        raise SystemExit(f"usage: {sys.argv[0]} gen|check")


if __name__ == "__main__":
    main()
