"""Deferred-mail benchmark: a 100,000-recipient send where 20% of the addresses are greylisted once, beside the same send without.

    .venv/bin/python bench/deferred.py [--recipients 100000] [--greylisted-percent 20] [--workers 2]
                                       [--retry-interval 10[,60...]] [--rounds 1]

The SMTP server is a greylisting sink written here (an asyncio protocol on uvloop, in a process of its
own): it answers RCPT TO for a fixed share of the addresses (those whose CRC-32 falls in the first
`--greylisted-percent` of the range) with "450 4.2.0 <address>: Recipient address rejected: Greylisted"
the first time it sees them and accepts every later attempt; every other address is accepted at once. It
offers PIPELINING, answers DATA after a refused recipient with 554 as Postfix does, and discards what it
accepts. It stamps every RCPT TO and every accepted message with the machine's monotonic clock and hands
the stamps back when it stops.

In one run, each step with a fresh sink:

(A) Herald end to end without greylisting: a fresh `herald run` (SMTP_URL the sink, `--workers`
    delivery workers), a list filled with `herald subscribers import`, an email and an Immediate
    campaign set Ready (as bench/delivery.py); the time from that campaign.update until campaign.get
    answers Sent (polled every 50 ms): the main send.
(B) The same with `--greylisted-percent` of the addresses greylisted once. The main send is timed the
    same way; the campaign is Sent once no recipient is Pending, the greylisted ones Deferred. Then
    delivery's recipient counts (the figures TotalDeferred is made of, read from PostgreSQL every
    0.2 s) until no recipient is Deferred or being sent: the time from Sent until every deferred
    recipient was delivered.
    Both runs use the same Herald settings, the retry schedule compressed to
    HERALD_DELIVERY_RETRY_INTERVALS=`--retry-interval` (jitter left at its default ±20%), so that
    retries come due during the main send and the tail ends within the benchmark. With several
    intervals (`--retry-interval 10,60`), (B) runs once per interval: with Herald's default first
    retry (60 s) they come due after a quick main send, which then carries the deferrals alone.
(C) The sink's own ceiling, after the Herald runs: Herald's SmtpConnectionPool (which pipelines, as the
    workers do) and the bare aiosmtplib loop of bench/smtp_ceiling.py, each over as many connections as
    Herald's workers open together, pushing `--recipients` messages of Herald's size into a sink that
    greylists nothing; and the sink's CPU time per accepted message during (A) and (B).

Printed, per run: the main send's recipients handled per second (sent or deferred: every recipient of
the campaign, since nothing is Pending at Sent) and messages the sink accepted per second in that time
(retries included, and counted apart); the ratio B/A of recipients handled per second (the issue's goal:
at least 90%); the longest time between two consecutive accepted messages from the first to the moment
Sent was seen, and the fewest messages accepted in any 0.5 s of it; per batch (which one lane works from
its first window to its last), from delivery.recipients, the longest pause between two of its recipients
handled at their first attempt (sent_at, or deferred_since for the deferred) and how long the longest
and the median batch took (a lane that slept on a retry would show as a long pause there); the checks,
from the sink's stamps and from delivery.recipients, that every address was accepted exactly once, that
the greylisted ones were tried exactly twice and the others once; CPU time per recipient of each process
during the main send, and per retry after it (psutil, user + system: a figure other load on the machine
disturbs less than rates), and peak resident memory. No figure is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psutil
import psycopg
import uvloop
from harness import Herald, free_port, running_herald

from bench.delivery import PeakMemory, immediate_campaign, legacy, typical_message_size, watch_herald, write_csv
from bench.smtp_ceiling import bare_loop, message_of, through_pool
from services.common.config import Settings

# --- the greylisting sink ---------------------------------------------------------------------------------


def greylisted(address: str, percent: float) -> bool:
    """Whether the sink greylists `address` (lower-case): a fixed share of addresses, the same in every run."""
    return zlib.crc32(address.encode()) % 10_000 < percent * 100


class SinkState:
    """What the sink saw: RCPT TO attempts and accepted messages per address, and when each happened."""

    def __init__(self, percent: float) -> None:
        self.percent = percent
        self.attempts: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        # time.monotonic() of every accepted message, and whether it was a retry (the address was refused before).
        self.accepted_at = array("d")
        self.retries = bytearray()
        self.refused_at = array("d")

    def refuses(self, address: str) -> bool:
        """Counts the attempt; True when it is the first one to a greylisted address."""
        self.attempts[address] += 1
        if self.attempts[address] == 1 and greylisted(address, self.percent):
            self.refused_at.append(time.monotonic())
            return True
        return False

    def accept(self, recipients: list[str]) -> None:
        now = time.monotonic()
        for address in recipients:
            self.accepted[address] += 1
            self.accepted_at.append(now)
            self.retries.append(self.attempts[address] > 1)

    def dump(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "attempts": self.attempts,
                    "accepted": self.accepted,
                    "accepted_at": self.accepted_at.tolist(),
                    "retries": list(self.retries),
                    "refused_at": self.refused_at.tolist(),
                }
            )
        )


EHLO = (
    b"250-sink.herald-bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
)
MAX_LINE = 4096


class GreylistingSink(asyncio.Protocol):
    """One SMTP session: commands answered from memory, pipelined commands answered in one write."""

    def __init__(self, state: SinkState) -> None:
        self.state = state
        self.buffer = bytearray()
        self.recipients: list[str] = []
        self.in_data = False
        self.scanned = 0
        self.closing = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(b"220 sink.herald-bench.test ESMTP greylisting sink\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buffer = self.buffer
        buffer += data
        replies: list[bytes] = []
        while buffer and not self.closing:
            if self.in_data:
                if buffer.startswith(b".\r\n"):
                    end = 3
                else:
                    found = buffer.find(b"\r\n.\r\n", self.scanned)
                    if found < 0:
                        self.scanned = max(len(buffer) - 4, 0)
                        break
                    end = found + 5
                del buffer[:end]
                self.scanned = 0
                self.in_data = False
                self.state.accept(self.recipients)
                self.recipients = []
                replies.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > MAX_LINE:
                    replies.append(b"500 5.5.0 Error: line too long\r\n")
                    self.closing = True
                break
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            replies.append(self.command(line))
        if replies:
            self.transport.write(b"".join(replies))
        if self.closing:
            self.transport.close()

    def command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"RCPT":
            address = line[line.find(b"<") + 1 : line.rfind(b">")].decode("utf-8", "replace").lower()
            if self.state.refuses(address):
                return f"450 4.2.0 <{address}>: Recipient address rejected: Greylisted\r\n".encode()
            self.recipients.append(address)
            return b"250 2.1.5 Ok\r\n"
        if verb == b"MAIL":
            self.recipients = []
            return b"250 2.1.0 Ok\r\n"
        if verb == b"DATA":
            if not self.recipients:
                return b"554 5.5.1 Error: no valid recipients\r\n"
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"RSET":
            self.recipients = []
            return b"250 2.0.0 Ok\r\n"
        if verb == b"EHLO":
            return EHLO
        if verb in (b"HELO", b"NOOP"):
            return b"250 2.0.0 Ok\r\n"
        if verb == b"QUIT":
            self.closing = True
            return b"221 2.0.0 Bye\r\n"
        return b"502 5.5.2 Error: command not recognized\r\n"


async def serve_sink(port: int, percent: float, dump: Path) -> None:
    """The sink on 127.0.0.1:`port` until SIGTERM; then what it saw is written to `dump`."""
    loop = asyncio.get_running_loop()
    state = SinkState(percent)
    server = await loop.create_server(lambda: GreylistingSink(state), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    state.dump(dump)


@dataclass
class SinkRecord:
    """What one sink saw, read back when it stopped."""

    attempts: dict[str, int]
    accepted: dict[str, int]
    accepted_at: list[float]
    retries: list[int]
    refused_at: list[float]

    def accepted_between(self, start: float, end: float) -> tuple[int, int]:
        """(messages accepted in [start, end], how many of them were retries)."""
        inside = [retry for at, retry in zip(self.accepted_at, self.retries, strict=True) if start <= at <= end]
        return len(inside), sum(inside)


class SinkProcess:
    """The greylisting sink in a process of its own (this file with --sink), so that it has a CPU of its own."""

    def __init__(self, percent: float, folder: Path) -> None:
        self.port = free_port()
        self.dump = folder / f"sink-{self.port}.json"
        self.record: SinkRecord | None = None
        command = [sys.executable, __file__, "--sink", str(self.port), "--greylisted-percent", str(percent)]
        self.process = subprocess.Popen([*command, "--sink-dump", str(self.dump)])
        self.psutil = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the greylisting sink did not start")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        times = self.psutil.cpu_times()
        return times.user + times.system

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(30)
        if self.dump.exists():
            saw = json.loads(self.dump.read_text())
            self.record = SinkRecord(**saw)


# --- Herald ---------------------------------------------------------------------------------------------------


def cpu_seconds(herald: Herald, sink: SinkProcess) -> dict[str, float]:
    """CPU seconds (user + system) used so far per role; the delivery workers together, PostgreSQL with its backends."""
    totals: dict[str, float] = Counter()
    found: list[tuple[str, psutil.Process]] = [
        ("delivery-worker" if role.startswith("delivery-worker") else role, process)
        for role, process in herald.processes().items()
    ]
    pid_file = herald.data_dir / "pg" / "postmaster.pid"
    if pid_file.exists():
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        found += [("postgres", process) for process in (postmaster, *postmaster.children())]
    found += [("sink", sink.psutil), ("benchmark", psutil.Process())]
    for role, process in found:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        totals[role] += times.user + times.system
    return dict(totals)


@dataclass
class Run:
    name: str
    round: int
    percent: float
    recipients: int
    load: str
    seconds: float = 0.0
    tail_seconds: float = 0.0
    at_sent: tuple[int, int, int] = (0, 0, 0)
    statuses: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    sent_at: float = 0.0
    # (longest pause between two recipients handled in one batch, longest batch, median batch), seconds.
    batches: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpu_main: dict[str, float] = field(default_factory=dict)
    cpu_tail: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)
    record: SinkRecord | None = None

    @property
    def handled_per_second(self) -> float:
        return sum(self.at_sent) / self.seconds

    def accepted_main(self) -> tuple[int, int]:
        assert self.record is not None
        return self.record.accepted_between(self.started, self.sent_at)

    def transactions_main(self) -> int:
        """SMTP transactions the sink answered in the main send: messages accepted and recipients greylisted."""
        assert self.record is not None
        return self.accepted_main()[0] + sum(
            1 for at in self.record.refused_at if self.started <= at <= self.sent_at
        )

    def first_accept(self) -> float:
        assert self.record is not None
        return min(self.record.accepted_at) - self.started

    def longest_gap(self) -> float:
        """The longest time without an accepted message, from the first accepted message until Sent was seen."""
        assert self.record is not None
        times = sorted(at for at in self.record.accepted_at if self.started <= at <= self.sent_at)
        return max(b - a for a, b in zip(times, [*times[1:], self.sent_at], strict=True))

    def quietest(self, width: float = 0.5) -> int:
        """The fewest messages accepted in a `width`-second interval, intervals counted from the first accept."""
        assert self.record is not None
        times = [at for at in self.record.accepted_at if self.started <= at <= self.sent_at]
        first = min(times)
        full = int((self.sent_at - first) // width)
        bins = Counter(int((at - first) // width) for at in times)
        return min(bins.get(i, 0) for i in range(full)) if full else len(times)

    def tail_end(self) -> float:
        """Seconds from Sent until the sink accepted its last message."""
        assert self.record is not None
        return max(self.record.accepted_at) - self.sent_at


def delivery_counts(conn: psycopg.Connection, campaign_id: int) -> tuple[int, int, int, int]:
    """(total, sent, failed, deferred) of the campaign, from delivery's counts (what the Total* statistics read)."""
    row = conn.execute(
        "SELECT total, sent, failed, deferred FROM delivery.recipient_counts WHERE campaign_id = %s",
        (campaign_id,),
    ).fetchone()
    if row is None:
        return 0, 0, 0, 0
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


# Per batch (one lane works a batch from its first window to its last), when each recipient was handled at its
# first attempt: sent_at for those sent then, deferred_since (the deferral's record) for the deferred ones.
_BATCHES = """
    SELECT max(gap), max(span), percentile_cont(0.5) WITHIN GROUP (ORDER BY span)
    FROM (
        SELECT batch_id, max(gap) AS gap, max(t) - min(t) AS span
        FROM (
            SELECT batch_id, t, t - lag(t) OVER (PARTITION BY batch_id ORDER BY t) AS gap
            FROM (
                SELECT batch_id, extract(epoch FROM coalesce(deferred_since, sent_at)) AS t
                FROM delivery.recipients WHERE campaign_id = %s
            ) AS handled
        ) AS gaps
        GROUP BY batch_id
    ) AS batches
"""


def herald_run(
    name: str, round_: int, csv: Path, folder: Path, recipients: int, percent: float, env: dict[str, str]
) -> Run:
    run = Run(name, round_, percent, recipients, load_average())
    with SinkProcess(percent, folder) as sink:
        with running_herald({"SMTP_URL": f"smtp://127.0.0.1:{sink.port}", **env}) as herald:
            user = json.loads(herald.cli("user", "create", "--username", "bench", "--password", "bench-password"))
            key = user["APIKey"]
            list_id = legacy(herald, "list.create", APIKey=key, SubscriberListName="Benchmark")["ListID"]
            started = time.perf_counter()
            report = json.loads(herald.cli("subscribers", "import", "--list", str(list_id), str(csv)))
            if report["Imported"] != recipients:
                raise RuntimeError(f"expected {recipients} imported subscribers: {report}")
            print(f"    imported {recipients:,} subscribers in {time.perf_counter() - started:.1f} s", flush=True)
            campaign_id = immediate_campaign(herald, key, list_id, "Benchmark")
            url = herald.processes()["delivery"].environ()["DATABASE_URL"]
            with psycopg.connect(url, autocommit=True) as conn, PeakMemory() as memory:
                watch_herald(memory, herald)
                memory.watch("sink", sink.psutil)
                before = cpu_seconds(herald, sink)
                run.load = load_average()
                run.started = time.monotonic()
                legacy(herald, "campaign.update", APIKey=key, CampaignID=campaign_id, CampaignStatus="Ready")
                while True:
                    body = legacy(herald, "campaign.get", APIKey=key, CampaignID=campaign_id)
                    status = body["Campaign"]["CampaignStatus"]
                    if status in ("Sent", "Failed", "Cancelled"):
                        break
                    time.sleep(0.05)
                run.sent_at = time.monotonic()
                run.seconds = run.sent_at - run.started
                at_sent = cpu_seconds(herald, sink)
                if status != "Sent":
                    raise RuntimeError(
                        f"the campaign ended {status}: {body['Campaign'].get('CampaignStatusReason')}"
                    )
                _, sent, failed, deferred = delivery_counts(conn, campaign_id)
                run.at_sent = (sent, failed, deferred)
                print(
                    f"    Ready -> Sent in {run.seconds:.2f} s: {sent:,} sent, {deferred:,} deferred, "
                    f"{failed:,} failed",
                    flush=True,
                )
                deadline = time.monotonic() + 600
                while True:
                    total, sent, failed, deferred = delivery_counts(conn, campaign_id)
                    if sent + failed == total or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                run.tail_seconds = time.monotonic() - run.sent_at
                after = cpu_seconds(herald, sink)
                longest_pause, longest, median = conn.execute(_BATCHES, (campaign_id,)).fetchone() or (0, 0, 0)
                run.batches = (float(longest_pause or 0), float(longest or 0), float(median or 0))
                run.statuses = dict(
                    conn.execute(
                        "SELECT status, count(*) FROM delivery.recipients WHERE campaign_id = %s GROUP BY status",
                        (campaign_id,),
                    ).fetchall()
                )
            run.cpu_main = {role: at_sent[role] - before.get(role, 0.0) for role in at_sent}
            run.cpu_tail = {role: after[role] - at_sent.get(role, 0.0) for role in after}
            run.peaks = dict(memory.peaks)
    run.record = sink.record
    if run.record is None:
        raise RuntimeError("the sink left no record")
    return run


def addresses_of(rows: int) -> list[str]:
    """The addresses bench.delivery.write_csv writes, lower-case as the sink keys them."""
    return [f"reader{i}@example{i % 97}.com" for i in range(rows)]


def checks(run: Run, addresses: list[str]) -> list[str]:
    """What the sink and delivery.recipients say against what should have happened; one line each."""
    record = run.record
    assert record is not None
    expected_grey = {a for a in addresses if greylisted(a, run.percent)}
    missing = sum(1 for a in addresses if record.accepted.get(a, 0) == 0)
    twice = sum(1 for count in record.accepted.values() if count > 1)
    strangers = len(set(record.accepted) - set(addresses))
    grey_twice = sum(1 for a in expected_grey if record.attempts.get(a, 0) == 2)
    others_once = sum(1 for a in addresses if a not in expected_grey and record.attempts.get(a, 0) == 1)
    lines = [
        f"accepted exactly once: {len(addresses) - missing - twice:,} of {len(addresses):,} "
        f"(missing {missing}, accepted more than once {twice}, unknown addresses {strangers})",
        f"greylisted addresses tried exactly twice: {grey_twice:,} of {len(expected_grey):,}; "
        f"the others tried exactly once: {others_once:,} of {len(addresses) - len(expected_grey):,}",
        "delivery.recipients by status: " + ", ".join(f"{s} {n:,}" for s, n in sorted(run.statuses.items())),
    ]
    return lines


# --- the sink's ceiling ---------------------------------------------------------------------------------------


@dataclass
class Ceiling:
    name: str
    per_second: float
    sink_cpu_ms: float


Sender = Callable[[int, int, int, bytes], Coroutine[Any, Any, None]]


def ceiling(folder: Path, name: str, sender: Sender, messages: int, connections: int, size: int) -> Ceiling:
    """A Python client pushing `messages` into a fresh sink that greylists nothing; messages/s and sink CPU."""
    with SinkProcess(0, folder) as sink:
        cpu = sink.cpu_seconds()
        started = time.perf_counter()
        uvloop.run(sender(sink.port, messages, connections, message_of(size)))
        seconds = time.perf_counter() - started
        cpu = sink.cpu_seconds() - cpu
    if sink.record is None or sum(sink.record.accepted.values()) != messages:
        raise RuntimeError(f"the sink did not accept every message of the {name} run")
    return Ceiling(name, messages / seconds, cpu / messages * 1000)


# --- the report -----------------------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report(runs: list[Run], ceilings: list[Ceiling], addresses: list[str], workers: int) -> None:
    print()
    header = f"{'':<58}" + "".join(f"{run.name:>16}" for run in runs)
    print(header)

    def row(label: str, values: list[str]) -> None:
        print(f"{label:<58}" + "".join(f"{value:>16}" for value in values))

    row("greylisted once", [f"{run.percent:g}%" for run in runs])
    row("load average (1 min) at Ready", [run.load.split()[0] for run in runs])
    row("main send, Ready -> Sent (s)", [f"{run.seconds:.2f}" for run in runs])
    row(
        "  recipients handled/s (sent + deferred + failed at Sent)",
        [f"{run.handled_per_second:,.0f}" for run in runs],
    )
    row("  deferred at Sent", [f"{run.at_sent[2]:,}" for run in runs])
    row("  messages the sink accepted in it", [f"{run.accepted_main()[0]:,}" for run in runs])
    row("    of which retries of greylisted addresses", [f"{run.accepted_main()[1]:,}" for run in runs])
    row("  messages accepted/s", [f"{run.accepted_main()[0] / run.seconds:,.0f}" for run in runs])
    row("  SMTP transactions (accepted + greylisted) in it", [f"{run.transactions_main():,}" for run in runs])
    row("  SMTP transactions/s", [f"{run.transactions_main() / run.seconds:,.0f}" for run in runs])
    row("  first message accepted after Ready (s)", [f"{run.first_accept():.2f}" for run in runs])
    row("  longest time without an accepted message (s)", [f"{run.longest_gap():.3f}" for run in runs])
    row("  fewest messages accepted in 0.5 s", [f"{run.quietest():,}" for run in runs])
    row("  longest pause inside one batch (s)", [f"{run.batches[0]:.3f}" for run in runs])
    row(
        "  batches: longest / median, first to last recipient (s)",
        [f"{b[1]:.2f} / {b[2]:.2f}" for b in (r.batches for r in runs)],
    )
    row("Sent -> no recipient Deferred or being sent (s)", [f"{run.tail_seconds:.2f}" for run in runs])
    row(
        "Sent -> the sink's last accepted message (s)",
        [f"{run.tail_end():.2f}" if run.at_sent[2] else "-" for run in runs],
    )
    plain = [run for run in runs if run.percent == 0]
    grey = [run for run in runs if run.percent > 0]
    print()
    for b in grey:
        a = next(run for run in plain if run.round == b.round)
        accepted = (b.accepted_main()[0] / b.seconds) / (a.accepted_main()[0] / a.seconds)
        print(
            f"{b.name} / {a.name}: recipients handled/s {b.handled_per_second / a.handled_per_second:.0%} "
            f"(goal >= 90%), messages accepted/s {accepted:.0%}"
        )
    print()
    for run in runs:
        print(f"{run.name} checks:")
        for line in checks(run, addresses):
            print(f"    {line}")
    print()
    print("CPU ms per recipient during the main send (user + system):")
    roles = ["delivery-worker", "delivery", "campaign", "audience", "postgres", "nats-server", "sink", "benchmark"]
    print(f"{'':<22}" + "".join(f"{role:>16}" for role in [*roles, "all"]))
    for run in runs:
        cpu = [run.cpu_main.get(role, 0.0) / run.recipients * 1000 for role in roles]
        total = sum(run.cpu_main.values()) / run.recipients * 1000
        print(f"{run.name:<22}" + "".join(f"{ms:>16.3f}" for ms in [*cpu, total]))
    for run in grey:
        retried = run.at_sent[2]
        if retried:
            cpu = [run.cpu_tail.get(role, 0.0) / retried * 1000 for role in roles]
            total = sum(run.cpu_tail.values()) / retried * 1000
            print(f"{run.name + ' tail, per retry':<22}" + "".join(f"{ms:>16.3f}" for ms in [*cpu, total]))
    for run in runs:
        busy = run.cpu_main.get("sink", 0.0) / run.seconds
        print(f"    {run.name}: the sink was busy {busy:.0%} of one CPU during the main send")
    print()
    print(f"the sink's ceiling ({workers * Settings().delivery_concurrency} connections, greylisting nothing):")
    for result in ceilings:
        print(
            f"    {result.name:<40} {result.per_second:9,.0f} messages/s   sink CPU {result.sink_cpu_ms:.3f} ms/message"
        )
    for run in runs:
        accepted = len(run.record.accepted_at) if run.record else 0
        if accepted:
            print(
                f"    sink CPU during {run.name}, per accepted message (RCPT refusals included): "
                f"{(run.cpu_main.get('sink', 0.0) + run.cpu_tail.get('sink', 0.0)) / accepted * 1000:.3f} ms"
            )
    print()
    print("peak RSS (MB)")
    roles = sorted({role for run in runs for role in run.peaks})
    print(f"{'':<24}" + "".join(f"{run.name:>16}" for run in runs))
    for role in roles:
        print(f"{role:<24}" + "".join(f"{run.peaks.get(role, 0) / 1e6:>16.1f}" for run in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--greylisted-percent", type=float, default=20.0)
    parser.add_argument(
        "--workers", type=int, default=Settings().delivery_workers, help="delivery workers (Herald's default)"
    )
    parser.add_argument(
        "--retry-interval",
        default="10",
        help="HERALD_DELIVERY_RETRY_INTERVALS (s); comma-separated: one (B) run per value (default 10)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of runs: (A), then (B) per retry interval")
    parser.add_argument("--no-ceiling", action="store_true", help="skip (C)")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink-dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        uvloop.run(serve_sink(args.sink, args.greylisted_percent, args.sink_dump))
        return

    intervals = [float(value) for value in args.retry_interval.split(",")]
    size = typical_message_size()
    connections = args.workers * Settings().delivery_concurrency
    addresses = addresses_of(args.recipients)
    grey = sum(1 for a in addresses if greylisted(a, args.greylisted_percent))
    print(f"$ {shlex.join([os.path.relpath(sys.executable), *sys.argv])}", flush=True)
    print(
        f"{args.recipients:,} recipients ({grey:,} greylisted once in B), messages of ~{size:,} bytes, "
        f"{args.workers} delivery workers ({connections} SMTP connections), retries after "
        f"{' or '.join(f'{value:g}' for value in intervals)} s ±20%, {os.cpu_count()} CPUs, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load_average()}",
        flush=True,
    )
    env = {"HERALD_DELIVERY_WORKERS": str(args.workers)}
    runs: list[Run] = []
    ceilings: list[Ceiling] = []
    with tempfile.TemporaryDirectory(prefix="herald-deferred-bench-") as tmp:
        folder = Path(tmp)
        csv = folder / "subscribers.csv"
        write_csv(csv, args.recipients)
        for round_ in range(1, args.rounds + 1):
            suffix = f" #{round_}" if args.rounds > 1 else ""
            steps = [(f"A{suffix}", 0.0, intervals[0])]
            for interval in intervals:
                label = f"B {interval:g}s" if len(intervals) > 1 else "B"
                steps.append((label + suffix, args.greylisted_percent, interval))
            for name, percent, interval in steps:
                print(
                    f"({name[0]}) Herald, {percent:g}% greylisted once, retries after {interval:g} s "
                    f"(load average {load_average()})...",
                    flush=True,
                )
                retry = {"HERALD_DELIVERY_RETRY_INTERVALS": f"{interval:g}"}
                run = herald_run(name, round_, csv, folder, args.recipients, percent, {**env, **retry})
                runs.append(run)
                if percent:
                    print(
                        f"    every deferred recipient delivered {run.tail_seconds:.2f} s after Sent", flush=True
                    )
        if not args.no_ceiling:
            print("(C) the sink's ceiling...", flush=True)
            ceilings.append(
                ceiling(
                    folder,
                    "Herald's SmtpConnectionPool (pipelined)",
                    through_pool,
                    args.recipients,
                    connections,
                    size,
                )
            )
            ceilings.append(ceiling(folder, "bare aiosmtplib loop", bare_loop, args.recipients, connections, size))
    report(runs, ceilings, addresses, args.workers)
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
