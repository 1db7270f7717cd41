"""Generates the TypeScript and Java client stubs of protos/ into sdk/gen (`make sdk`), and type-checks them.

The plugins come from package registries only, so generation needs no other network: ts-proto (grpc-js
services) from npm, pinned by sdk/package-lock.json; the Java messages from Debian's protoc and the Java
services from Debian's grpc-java plugin, the versions that match Debian's protobuf-java and grpc-java jars
that compile them (the venv's grpcio-tools protoc has no Java generator). `check DIR` generates into DIR
and compiles both languages without writing class files: tests/test_sdk.py runs it.

Both languages also get google.rpc.Status, ErrorInfo and BadRequest (googleapis' google/rpc/status.proto
and error_details.proto, which buf.yaml declares as a dependency): Herald's errors carry them in the
`grpc-status-details-bin` trailer. The .proto files come from the googleapis-common-protos package that
uv.lock pins, so the build needs no network.

`package DIR` (what `make sdk` writes to sdk/gen) is the Node.js package: DIR/package.json, the TypeScript
compiled to CommonJS with declarations (DIR/herald/..., DIR/google/...), the .proto files for
@grpc/proto-loader (DIR/proto), the Java sources (DIR/java) and the README (sdk/README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import google.rpc.status_pb2
import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
SDK = ROOT / "sdk"
NODE_BIN = SDK / "node_modules" / ".bin"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"
# googleapis-common-protos ships google/rpc/*.proto beside its Python modules.
GOOGLEAPIS = Path(google.rpc.status_pb2.__file__).parent.parent.parent
RPC_PROTOS = ["google/rpc/status.proto", "google/rpc/error_details.proto"]
PACKAGE_NAME = "@herald/sdk"

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


def sdk_protos() -> list[str]:
    """Herald's protos and the google.rpc ones its errors carry."""
    return [*proto_files(), *RPC_PROTOS]


def _run(args: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def generate(out: Path) -> None:
    """Writes out/ts (ts-proto with @grpc/grpc-js clients) and out/java (protobuf-java with grpc-java stubs)."""
    ts, java = out / "ts", out / "java"
    ts.mkdir(parents=True, exist_ok=True)
    java.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{PROTOS}", f"-I{GOOGLEAPIS}", f"-I{WELL_KNOWN}"]
    _run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *includes,
            f"--plugin=protoc-gen-ts_proto={NODE_BIN / 'protoc-gen-ts_proto'}",
            f"--ts_proto_out={ts}",
            f"--ts_proto_opt={TS_OPTIONS}",
            *sdk_protos(),
        ]
    )
    _run(
        [
            JAVA_PROTOC,
            *includes,
            f"--java_out={java}",
            f"--plugin=protoc-gen-grpc-java={JAVA_GRPC_PLUGIN}",
            f"--grpc-java_out={java}",
            *sdk_protos(),
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


def package(out: Path) -> None:
    """The SDK as a Node.js package in out/ (see the module's docstring); its node_modules are the caller's."""
    shutil.rmtree(out, ignore_errors=True)
    work = out / ".build"
    generate(work)
    ts_files = sorted(str(p) for p in (work / "ts").rglob("*.ts"))
    flags = [flag for flag in TSC_FLAGS if flag != "--noEmit"]
    (work / "node_modules").symlink_to(SDK / "node_modules")
    _run(
        [
            str(NODE_BIN / "tsc"),
            *flags,
            "--declaration",
            "--rootDir",
            str(work / "ts"),
            "--outDir",
            str(out),
            *ts_files,
        ],
        cwd=work,
    )
    shutil.move(work / "java", out / "java")
    shutil.rmtree(work)
    for name in sdk_protos():
        source = PROTOS / name if (PROTOS / name).is_file() else GOOGLEAPIS / name
        target = out / "proto" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    tools = json.loads((SDK / "package.json").read_text())["devDependencies"]
    manifest = {
        "name": PACKAGE_NAME,
        "version": "1.0.0",
        "description": "Herald's gRPC API for Node.js: ts-proto messages and @grpc/grpc-js clients, with google.rpc error details",
        "license": "UNLICENSED",
        "files": ["herald", "google", "proto", "java", "README.md"],
        "dependencies": {name: tools[name] for name in ("@bufbuild/protobuf", "@grpc/grpc-js")},
    }
    (out / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.copyfile(SDK / "README.md", out / "README.md")


def main(argv: list[str]) -> None:
    if argv[:1] == ["check"] and len(argv) == 2:
        check(Path(argv[1]))
        print(f"TypeScript and Java stubs in {argv[1]} compile")
    elif argv[:1] == ["package"] and len(argv) <= 2:
        out = Path(argv[1]) if len(argv) == 2 else SDK / "gen"
        package(out)
        print(f"wrote the {PACKAGE_NAME} package to {out}")
    else:
        raise SystemExit(f"usage: {sys.argv[0]} check DIR | package [DIR]")


if __name__ == "__main__":
    main(sys.argv[1:])
