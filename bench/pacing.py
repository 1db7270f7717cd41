"""Pacing benchmark: does the fleet keep to a domain's rate whatever the number of workers, and do the other domains go
at full speed meanwhile?

    .venv/bin/python bench/pacing.py [--recipients 10000] [--workers 1,2,4] [--rate 100] [--overall-rate 0]
                                     [--baseline]

Per worker count N, a fresh `herald run` with N delivery workers sends one campaign into a sink (bench/deferred.py's
SMTP sink, greylisting nothing, in a process of its own, which stamps every accepted message with the machine's
monotonic clock). Half the recipients are on the domains `limited-a.example` and `limited-b.example` (a group: one
rate for both, HERALD_DELIVERY_DOMAIN_RATES="limited-a.example+limited-b.example=<rate>"), half on 97 other domains
with no limit, interleaved so that every batch and every window holds both kinds. With --overall-rate, also
HERALD_DELIVERY_RATE_PER_SECOND (the fleet's overall rate). With --baseline, one more run (N = the first worker
count) without any limit: what "full speed" is on this machine now.

Printed per run: the limited group's messages per second from its first message to its last (the configured rate
is what the fleet may send after the bucket's first tokens), the most it accepted in any 1 s and any 5 s window
(the overshoot: a share of the configured rate over that window), the unlimited domains' messages per second
while they were being sent and when their last message arrived relative to the group's first and last; and the
check that every address was accepted exactly once. No figure is asserted.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import uvloop
from deferred import GreylistingSink, SinkState, load_average
from harness import free_port, running_herald

from bench.delivery import immediate_campaign, legacy

LIMITED = ("limited-a.example", "limited-b.example")


class StampingState(SinkState):
    """The sink's state, with the domain of every accepted message (in the order of `accepted_at`)."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.domains: list[str] = []

    def accept(self, recipients: list[str]) -> None:
        super().accept(recipients)
        self.domains.extend(address.rpartition("@")[2] for address in recipients)

    def dump(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {"accepted": self.accepted, "accepted_at": self.accepted_at.tolist(), "domains": self.domains}
            )
        )


async def serve_sink(port: int, dump: Path) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    state = StampingState()
    server = await loop.create_server(lambda: GreylistingSink(state), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    state.dump(dump)


class Sink:
    """The stamping sink in a process of its own (this file with --sink)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.dump = folder / f"sink-{self.port}.json"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--sink", str(self.port), "--sink-dump", str(self.dump)]
        )
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sink did not start")
            time.sleep(0.05)

    def stop(self) -> dict[str, object]:
        self.process.terminate()
        self.process.wait(30)
        saw: dict[str, object] = json.loads(self.dump.read_text())
        return saw


def write_csv(path: Path, rows: int) -> list[str]:
    """Half the rows on the limited group (alternating its two domains), half on 97 free domains, interleaved."""
    addresses = []
    for i in range(rows):
        domain = LIMITED[(i // 2) % 2] if i % 2 == 0 else f"free{i % 97}.example"
        addresses.append(f"reader{i}@{domain}")
    with path.open("w") as out:
        out.write("email,first_name\n")
        out.writelines(f"{address},First{i}\n" for i, address in enumerate(addresses))
    return addresses


def most_in_window(times: list[float], seconds: float) -> int:
    """The most stamps in any window of `seconds` (each window starting at a stamp)."""
    return max((bisect.bisect_right(times, t + seconds) - i for i, t in enumerate(times)), default=0)


@dataclass
class Run:
    name: str
    workers: int
    rate: float
    load: str
    seconds: float = 0.0
    limited: list[float] | None = None
    free: list[float] | None = None
    once: bool = False

    def lines(self) -> list[str]:
        limited, free = self.limited or [], self.free or []
        out = [f"{self.name}: Ready -> Sent {self.seconds:.1f} s (load average before: {self.load})"]
        if len(limited) > 1:
            span = limited[-1] - limited[0]
            mean = (len(limited) - 1) / span if span else float("inf")
            one, five = most_in_window(limited, 1.0), most_in_window(limited, 5.0)
            configured = f"{self.rate:g}/s" if self.rate else "unlimited"
            share = (lambda v: f" ({v / self.rate:.1%} of it)") if self.rate else (lambda v: "")
            out.append(
                f"  limited group ({configured}): {len(limited):,} messages in {span:.1f} s = {mean:.1f}/s{share(mean)}; "
                f"most in 1 s: {one}{share(one)}, in 5 s: {five / 5:.1f}/s{share(five / 5)}"
            )
        if len(free) > 1 and limited:
            span = free[-1] - free[0]
            out.append(
                f"  unlimited domains: {len(free):,} messages in {span:.2f} s = {(len(free) - 1) / max(span, 1e-9):.0f}/s; "
                f"their last {free[-1] - limited[0]:.2f} s after the group's first, "
                f"{limited[-1] - free[-1]:.2f} s before the group's last"
            )
        out.append(f"  every address accepted exactly once: {'yes' if self.once else 'NO'}")
        return out


def herald_run(name: str, workers: int, csv: Path, addresses: list[str], folder: Path, env: dict[str, str]) -> Run:
    rate = float(env.get("HERALD_DELIVERY_DOMAIN_RATES", "=0").rpartition("=")[2])
    run = Run(name, workers, rate, load_average())
    sink = Sink(folder)
    try:
        full_env = {"SMTP_URL": f"smtp://127.0.0.1:{sink.port}", "HERALD_DELIVERY_WORKERS": str(workers), **env}
        # A machine shared with other work may take minutes to start every process.
        with running_herald(full_env, ready_within=600) as herald:
            user = json.loads(herald.cli("user", "create", "--username", "bench", "--password", "bench-password"))
            key = user["APIKey"]
            list_id = legacy(herald, "list.create", APIKey=key, SubscriberListName="Benchmark")["ListID"]
            report = json.loads(herald.cli("subscribers", "import", "--list", str(list_id), str(csv)))
            if report["Imported"] != len(addresses):
                raise RuntimeError(f"expected {len(addresses)} imported subscribers: {report}")
            campaign_id = immediate_campaign(herald, key, list_id, "Benchmark")
            run.load = load_average()
            started = time.perf_counter()
            legacy(herald, "campaign.update", APIKey=key, CampaignID=campaign_id, CampaignStatus="Ready")
            while True:
                body = legacy(herald, "campaign.get", APIKey=key, CampaignID=campaign_id)
                status = body["Campaign"]["CampaignStatus"]
                if status in ("Sent", "Failed", "Cancelled"):
                    break
                time.sleep(0.1)
            run.seconds = time.perf_counter() - started
            if status != "Sent":
                raise RuntimeError(f"the campaign ended {status}")
            time.sleep(1.0)
    finally:
        saw = sink.stop()
    stamps = list(zip(saw["accepted_at"], saw["domains"], strict=True))  # type: ignore[call-overload]
    run.limited = sorted(t for t, domain in stamps if domain in LIMITED)
    run.free = sorted(t for t, domain in stamps if domain not in LIMITED)
    accepted = Counter(saw["accepted"])  # type: ignore[arg-type]
    run.once = set(accepted) == {a.lower() for a in addresses} and set(accepted.values()) == {1}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, one run each")
    parser.add_argument("--rate", type=float, default=100.0, help="the limited group's rate (messages/s)")
    parser.add_argument(
        "--overall-rate", type=float, default=0.0, help="HERALD_DELIVERY_RATE_PER_SECOND (0: none)"
    )
    parser.add_argument("--baseline", action="store_true", help="one more run without any limit")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink-dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        uvloop.run(serve_sink(args.sink, args.sink_dump))
        return
    counts = [int(value) for value in args.workers.split(",")]
    print(f"$ {shlex.join([os.path.relpath(sys.executable), *sys.argv])}", flush=True)
    print(
        f"{args.recipients:,} recipients (half on {'+'.join(LIMITED)} at {args.rate:g}/s), "
        f"{os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load_average()}",
        flush=True,
    )
    limits = {"HERALD_DELIVERY_DOMAIN_RATES": f"{'+'.join(LIMITED)}={args.rate:g}"}
    if args.overall_rate:
        limits["HERALD_DELIVERY_RATE_PER_SECOND"] = f"{args.overall_rate:g}"
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="herald-pacing-bench-") as tmp:
        folder = Path(tmp)
        csv = folder / "subscribers.csv"
        addresses = write_csv(csv, args.recipients)
        steps = [(f"N={n}", n, limits) for n in counts]
        if args.baseline:
            steps.append((f"N={counts[0]}, no limit", counts[0], {}))
        for name, workers, env in steps:
            print(f"{name}...", flush=True)
            run = herald_run(name, workers, csv, addresses, folder, env)
            runs.append(run)
            print("\n".join(run.lines()), flush=True)
    print("\nsummary")
    for run in runs:
        print("\n".join(run.lines()))
    print(f"\nload average at the end: {load_average()}; {psutil.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
