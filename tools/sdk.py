"""Generates the TypeScript and Java client stubs of protos/ into sdk/gen (`make sdk`), and type-checks them.

The plugins come from package registries only, so generation needs no other network: ts-proto (grpc-js
services) from npm, pinned by sdk/package-lock.json; the Java messages from Debian's protoc and the Java
services from Debian's grpc-java plugin, the versions that match Debian's protobuf-java and grpc-java jars
that compile them (the venv's grpcio-tools protoc has no Java generator). `check DIR` generates into DIR
and compiles both languages without writing class files: tests/test_sdk.py runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
SDK = ROOT / "sdk"
NODE_BIN = SDK / "node_modules" / ".bin"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"

# int64 ids as strings: JavaScript numbers lose precision above 2^53.
TS_OPTIONS = "outputServices=grpc-js,esModuleInterop=true,env=node,forceLong=string"
TSC_FLAGS = ["--noEmit", "--strict", "--skipLibCheck", "--target", "ES2022", "--module", "commonjs"]
TSC_FLAGS += ["--moduleResolution", "node", "--esModuleInterop", "--types", "node"]
JAVA_PROTOC = "/usr/bin/protoc"
JAVA_GRPC_PLUGIN = "/usr/bin/grpc_java_plugin"
JAVA_JARS = [
    f"/usr/share/java/{name}.jar"
    for name in (
        "protobuf",
        "grpc-api",
        "grpc-stub",
        "grpc-protobuf",
        "grpc-protobuf-lite",
        "guava",
        "jsr305",
        "geronimo-annotation-1.3-spec",  # javax.annotation.Generated, which JDK 11+ no longer has
    )
]


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def generate(out: Path) -> None:
    """Writes out/ts (ts-proto with @grpc/grpc-js clients) and out/java (protobuf-java with grpc-java stubs)."""
    ts, java = out / "ts", out / "java"
    ts.mkdir(parents=True, exist_ok=True)
    java.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{PROTOS}", f"-I{WELL_KNOWN}"]
    _run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *includes,
            f"--plugin=protoc-gen-ts_proto={NODE_BIN / 'protoc-gen-ts_proto'}",
            f"--ts_proto_out={ts}",
            f"--ts_proto_opt={TS_OPTIONS}",
            *proto_files(),
        ]
    )
    _run(
        [
            JAVA_PROTOC,
            *includes,
            f"--java_out={java}",
            f"--plugin=protoc-gen-grpc-java={JAVA_GRPC_PLUGIN}",
            f"--grpc-java_out={java}",
            *proto_files(),
        ]
    )


def check(out: Path) -> None:
    """Generates into out/ and type-checks both languages at once (tsc and javac, no output written)."""
    generate(out)
    # tsc resolves @grpc/grpc-js and @bufbuild/protobuf from the nearest node_modules up the tree.
    (out / "node_modules").symlink_to(SDK / "node_modules")
    ts_files = sorted(str(p) for p in (out / "ts").rglob("*.ts"))
    java_files = sorted(str(p) for p in (out / "java").rglob("*.java"))
    # javac stops after flow analysis (types checked, no bytecode) and runs on the client JIT: a third the time.
    javac = ["javac", "-J-XX:TieredStopAtLevel=1", "-XDshould-stop.ifNoError=FLOW", "-proc:none", "-nowarn"]
    javac += ["-d", str(out / "classes"), "-cp", os.pathsep.join(JAVA_JARS), *java_files]
    checks = [
        subprocess.Popen(
            [str(NODE_BIN / "tsc"), *TSC_FLAGS, *ts_files], stdout=subprocess.PIPE, text=True, cwd=out
        ),
        subprocess.Popen(javac, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    ]
    failures = []
    for process in checks:
        output, _ = process.communicate()
        if process.returncode != 0:
            failures.append(f"{process.args[0]} failed ({process.returncode}):\n{output}")
    if failures:
        raise SystemExit("\n".join(failures))


def main(argv: list[str]) -> None:
    if argv[:1] == ["check"] and len(argv) == 2:
        check(Path(argv[1]))
        print(f"TypeScript and Java stubs in {argv[1]} compile")
    elif not argv:
        gen = SDK / "gen"
        shutil.rmtree(gen, ignore_errors=True)
        generate(gen)
        print(f"generated {gen / 'ts'} and {gen / 'java'}")
    else:
        raise SystemExit(f"usage: {sys.argv[0]} [check DIR]")


if __name__ == "__main__":
    main(sys.argv[1:])
