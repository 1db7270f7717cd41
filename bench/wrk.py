"""wrk, the C HTTP load generator, for benchmarks: unpacked from the Debian package without installing anything.

A Python load generator on a 2-core machine takes a core's share from the server it measures;
wrk costs a fraction of that, so its figures show what the translator itself can do.
`wrk_tool()` runs `apt-get download wrk` (and the LuaJIT library it links) into bench/.tools/
(git-ignored) and unpacks them with `dpkg -x`, as bench/postfix.py does for Postfix.
`run_wrk()` posts a JSON body chosen per request by a Lua script and counts as errors the answers
that are not HTTP 200 with `"Success": true`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.postfix import TOOLS, _apt_download, _library_dirs, _unpack

_LATENCY = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_ERRORS = re.compile(r"^herald-errors (\d+) of (\d+)$", re.MULTILINE)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}

# Each wrk thread keeps its own Lua state: the errors are summed over the threads in done().
_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) errors = 0 responses = 0 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%(bodies)s}
local n = #bodies
request = function() return wrk.format(nil, nil, nil, bodies[math.random(n)]) end
response = function(status, headers, body)
  responses = responses + 1
  if status ~= 200 or not string.find(body, '"Success": true', 1, true) then errors = errors + 1 end
end
done = function(summary, latency, requests)
  local e, r = 0, 0
  for _, t in ipairs(threads) do e = e + t:get("errors") r = r + t:get("responses") end
  io.write(string.format("herald-errors %%d of %%d\\n", e, r))
end
"""


@dataclass(frozen=True)
class WrkTool:
    binary: Path
    library_path: str


@dataclass(frozen=True)
class WrkResult:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int

    def line(self) -> str:
        return (
            f"{self.name:<38} {self.rps:>9.0f} req/s   p50 {self.p50_ms:7.2f} ms   p99 {self.p99_ms:7.2f} ms"
            f"   errors {self.errors}"
        )


def wrk_tool(cache: Path = TOOLS / "wrk") -> WrkTool:
    """wrk, downloaded and unpacked on first use, reused afterwards."""
    root, debs = cache / "root", cache / "debs"
    binary = root / "usr/bin/wrk"
    if not binary.exists():
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise RuntimeError("apt-get and dpkg are needed to fetch wrk")
        _apt_download(["wrk", "libluajit-5.1-2", "libluajit-5.1-common"], debs)
        _unpack(debs, root)
    return WrkTool(binary, ":".join(_library_dirs(root)))


def run_wrk(
    tool: WrkTool, name: str, url: str, bodies: list[str], *, connections: int, seconds: float, warmup: float = 2.0
) -> WrkResult:
    """Drives `url` with `connections` keep-alive connections over 2 threads, each request one of `bodies` at random."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (tool.library_path, env.get("LD_LIBRARY_PATH", "")) if p)
    lua = _SCRIPT % {"bodies": ",".join(_lua_string(body) for body in bodies)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua)
        script.flush()
        base = [str(tool.binary), "-t2", f"-c{connections}", "--latency", "-s", script.name]
        subprocess.run([*base, f"-d{warmup:g}s", url], env=env, capture_output=True, check=True)
        output = subprocess.run(
            [*base, f"-d{seconds:g}s", url], env=env, capture_output=True, text=True, check=True
        ).stdout
    latencies = {int(p): float(value) * _UNIT[unit] for p, value, unit in _LATENCY.findall(output)}
    rate, errors = _RATE.search(output), _ERRORS.search(output)
    if rate is None or errors is None or set(latencies) != {50, 99}:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    return WrkResult(name, float(rate.group(1)), latencies[50], latencies[99], int(errors.group(1)))


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
