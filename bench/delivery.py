"""Delivery benchmark: a 100,000-recipient campaign from Ready to Sent into Postfix's smtp-sink, beside this machine's SMTP ceilings.

    .venv/bin/python bench/delivery.py [--recipients 100000] [--workers 1,2,4]

In one run, against one smtp-sink (bench/postfix.py):

(a) smtp-source pushing the same number of messages of the same size: the most this machine does
    over SMTP;
(b) a bare aiosmtplib loop over as many connections as Herald's workers open together: the most
    any Python sender does here;
(c) Herald end to end, once per worker count: a fresh `herald run` with SMTP_URL pointing at the
    sink, a list filled with `herald subscribers import`, an email and an Immediate campaign set
    Ready; the time from that campaign.update to campaign.get answering Sent.

Prints emails/s for each, Herald's ratio to (a) and (b), and the peak resident memory of every
Herald process (psutil samples every 0.2 s, and the kernel's high-water mark at the end).
Targets on a 2-core machine: >= 2,000 emails/s end to end, >= 50% of (b), worker memory <= 200 MB.

For each Herald run it also prints (the figures of issue 16's million-recipient send):
- the time from the campaign.update that set it Ready to the first message the sink counted;
- the steady emails/s: the sink's rate between 10% and 90% of the campaign's messages;
- the CPU each process spent per message during the send (ms), PostgreSQL's backends summed, and smtp-sink's
  beside them (not in Herald's sum): what receiving costs on this machine;
- the PostgreSQL disk the send added per recipient (the delivery schema; the database as a whole);
- the queue rows' updates per recipient and the heap-only share of them, and what the send cost PostgreSQL on
  the write side: WAL bytes, full-page images and buffers written out to make room, per message; checkpoints;
  blocks of the queue's heap read from outside shared buffers, per message;
- p50 / p99 of the legacy campaign.get the benchmark polls every 50 ms while the campaign is Sending.

    .venv/bin/python bench/delivery.py --recipients 1000000 --workers 2 --ceiling-messages 200000 [--second-campaign]

--second-campaign sets a second campaign to the same 1,000,000 subscribers Ready once the first has sent 50% (--second-at)
(the first's steady rate is then read between 10% and 45%), and prints both campaigns' Sent counts every 10 s:
neither may stand still while both are Sending. --profile-worker FILE runs one more worker under cProfile.
--ceiling-messages caps the messages of (a) and (b) (a rate is a rate; a million through each takes minutes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psutil
import psycopg
import uvloop
from harness import Herald, running_herald

from bench.postfix import PostfixTools, SmtpSink, SourceRun, postfix_tools, run_source
from bench.smtp_ceiling import bare_loop, message_of
from services.common.config import Settings

SUBJECT = 'Weekly news for {{ Subscriber:FirstName | "you" }}'
HTML = (
    "<html><body><h1>Hello %Subscriber:FirstName%</h1>"
    + "<p>This week at Herald: a paragraph of news that makes the message a realistic size.</p>" * 12
    + '<p><a href="https://example.com/article">Read more</a> · <a href="{{ Link:Unsubscribe }}">Unsubscribe</a></p>'
    "</body></html>"
)
PLAIN = (
    "Hello {{ Subscriber:FirstName }}\n"
    + "This week at Herald: news.\n" * 12
    + "Unsubscribe: {{ Link:Unsubscribe }}\n"
)


def legacy(herald: Herald, command: str, **params: Any) -> dict[str, Any]:
    body = json.dumps({"Command": command, **params}).encode()
    request = urllib.request.Request(
        herald.base_url + "/api.php", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.load(response)
    if answer.get("Success") is not True:
        raise RuntimeError(f"{command} failed: {answer}")
    return answer


def immediate_campaign(herald: Herald, key: str, list_id: int, name: str) -> int:
    """A campaign with the benchmark's email, sent to the list at once when it is set Ready; its id."""
    email_id = legacy(herald, "email.create", APIKey=key)["EmailID"]
    legacy(
        herald,
        "email.update",
        APIKey=key,
        EmailID=email_id,
        ValidateScope="Campaign",
        Subject=SUBJECT,
        FromName=f"Herald {name}",
        FromEmail="bench@herald.example",
        HTMLContent=HTML,
        PlainContent=PLAIN,
    )
    campaign_id: int = legacy(herald, "campaign.create", APIKey=key, CampaignName=name)["CampaignID"]
    legacy(
        herald,
        "campaign.update",
        APIKey=key,
        CampaignID=campaign_id,
        RelEmailID=email_id,
        RecipientListsAndSegments=f"{list_id}:0",
        ScheduleType="Immediate",
    )
    return campaign_id


def write_csv(path: Path, rows: int) -> None:
    with path.open("w") as out:
        out.write("email,first_name\n")
        for start in range(0, rows, 100_000):
            out.write(
                "".join(
                    f"reader{i}@example{i % 97}.com,First{i}\n" for i in range(start, min(start + 100_000, rows))
                )
            )


def typical_message_size() -> int:
    """Bytes of a message like Herald's (same content, both parts, the usual headers): the ceilings send this size."""
    message = EmailMessage()
    for name, value in (
        ("From", "Herald Bench <bench@herald.example>"),
        ("To", "reader12345@example42.com"),
        ("Subject", "Weekly news for First12345"),
        ("Message-ID", "<1234567890.12345.abcdef0123456789@herald.example>"),
        ("List-Unsubscribe", "<http://127.0.0.1:8080/t/u/" + "x" * 120 + ">"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ):
        message[name] = value
    message.set_content(PLAIN.replace("{{ Subscriber:FirstName }}", "First12345"))
    message.add_alternative(HTML.replace("%Subscriber:FirstName%", "First12345"), subtype="html")
    return len(message.as_bytes())


def _peak_rss(process: psutil.Process) -> int:
    """The larger of the current RSS and the kernel's high-water mark (VmHWM) of the process."""
    rss = int(process.memory_info().rss)
    with open(f"/proc/{process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                rss = max(rss, int(line.split()[1]) * 1024)
    return rss


SINK_ROLE = "smtp-sink (not Herald)"


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class PeakMemory:
    """Peak RSS of processes by role: psutil samples every 0.2 s in a thread, plus VmHWM when read. Also the CPU
    seconds each role spent while watched (PostgreSQL's backends summed, each from when it was first seen)."""

    def __init__(self) -> None:
        self.watched: dict[str, psutil.Process] = {}
        self.peaks: dict[str, int] = {}
        self._cpu_first: dict[tuple[str, int], float] = {}
        self._cpu_last: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def watch(self, role: str, process: psutil.Process) -> None:
        self.watched[role] = process
        try:
            self._cpu_first[(role, process.pid)] = _cpu(process)
        except psutil.Error:
            pass

    def cpu_seconds(self) -> dict[str, float]:
        spent: dict[str, float] = {}
        for (role, pid), last in self._cpu_last.items():
            spent[role] = spent.get(role, 0.0) + last - self._cpu_first.get((role, pid), 0.0)
        return spent

    def _read(self) -> None:
        for role, process in list(self.watched.items()):
            try:
                rss = _peak_rss(process)
                self._cpu_last[(role, process.pid)] = _cpu(process)
                if role == "postgres":
                    # PostgreSQL forks a backend per connection: the largest one is reported too.
                    children = process.children()
                    backends = [_peak_rss(child) for child in children]
                    self.peaks["postgres backend"] = max([self.peaks.get("postgres backend", 0), *backends])
                    for child in children:
                        # A backend that started during the send counts from zero.
                        self._cpu_first.setdefault(("postgres backends", child.pid), 0.0)
                        self._cpu_last[("postgres backends", child.pid)] = _cpu(child)
            except (psutil.Error, OSError):
                continue
            self.peaks[role] = max(self.peaks.get(role, 0), rss)

    def note_existing_backends(self) -> None:
        """Counts the PostgreSQL backends that already run from their CPU time now."""
        process = self.watched.get("postgres")
        if process is None:
            return
        for child in process.children():
            try:
                self._cpu_first[("postgres backends", child.pid)] = _cpu(child)
            except psutil.Error:
                continue

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self._read()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()


def watch_herald(memory: PeakMemory, herald: Herald) -> None:
    memory.watch("herald run", psutil.Process(herald.process.pid))
    workers = 0
    for child in psutil.Process(herald.process.pid).children(recursive=True):
        try:
            command = child.cmdline()
        except psutil.NoSuchProcess:
            continue  # a short-lived helper (the embedded PostgreSQL's pg_ctl) that ended meanwhile
        if "serve" in command:
            role = command[-1]
            if role == "delivery-worker":
                workers += 1
                role = f"delivery-worker {workers}"
        elif "nats-server" in " ".join(command):
            role = "nats-server"
        else:
            continue
        memory.watch(role, child)
    # The embedded PostgreSQL runs detached from `herald run`; its postmaster.pid says where it is.
    pid_file = herald.data_dir / "pg" / "postmaster.pid"
    if pid_file.exists():
        memory.watch("postgres", psutil.Process(int(pid_file.read_text().split()[0])))


class SinkProgress:
    """The sink's message count every 0.1 s in a thread, from `before`: (seconds since start, messages)."""

    def __init__(self, sink: SmtpSink, before: int, started: float) -> None:
        self.samples: list[tuple[float, int]] = []
        self._sink, self._before, self._started = sink, before, started
        self.first_message: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            if self.first_message is None:
                # Woken by the sink's counter itself: the first message is timed to when the sink counted it.
                if self._sink.wait_for(self._before + 1, timeout=0.1):
                    self.first_message = time.perf_counter() - self._started
            else:
                self._stop.wait(0.1)
            self.samples.append((time.perf_counter() - self._started, self._sink.messages - self._before))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def when(self, messages: int) -> float:
        """When the sink had counted `messages` (interpolated between samples)."""
        previous = (0.0, 0)
        for at, count in self.samples:
            if count >= messages:
                if count == previous[1]:
                    return at
                return previous[0] + (at - previous[0]) * (messages - previous[1]) / (count - previous[1])
            previous = (at, count)
        return self.samples[-1][0]

    def steady(self, total: int, until: float = 0.9) -> float:
        """Messages per second between 10% (or half of `until`, when that is lower) and `until` (90%) of `total`."""
        low, high = int(total * min(0.1, until / 2)), int(total * until)
        return (high - low) / max(self.when(high) - self.when(low), 1e-9)


def profiled_worker(herald: Herald, out: str) -> subprocess.Popen[bytes]:
    """One more delivery worker, under cProfile (bench/profile_worker.py), with the environment of one of Herald's."""
    model = next(p for role, p in herald.processes().items() if role.startswith("delivery-worker"))
    env = {**model.environ(), "HERALD_DELIVERY_WORKER_METRICS_PORT": "0"}
    command = [sys.executable, str(Path(__file__).with_name("profile_worker.py")), out]
    process = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parent.parent)
    time.sleep(5)  # connected and consuming before the campaign is set Ready
    return process


def database_url(herald: Herald) -> str:
    """The embedded PostgreSQL's URL, as `herald run` handed it to its services."""
    return str(herald.processes()["delivery"].environ()["DATABASE_URL"])


def disk_bytes(url: str, *, checkpoint: bool = True) -> tuple[int, int]:
    """(bytes of the delivery schema's tables with their indexes and TOAST, bytes of the whole database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if checkpoint:
            conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c "
            "        JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "        WHERE n.nspname = 'delivery' AND c.relkind IN ('r', 'm')), "
            "pg_database_size(current_database())"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def database_counters(url: str) -> dict[str, int]:
    """PostgreSQL's cumulative counters that say what a send cost it on the write side.

    - updates / hot_updates: updates of delivery.recipients, and the heap-only ones (no index entry written);
    - wal_bytes / wal_fpi: WAL written, and the full-page images in it (a page's first change after a checkpoint);
    - checkpoints: checkpoints done, on time or asked for (WAL past max_wal_size);
    - heap_reads / heap_hits: blocks of delivery.recipients read from outside shared buffers, and found in them;
    - evicted_writes: blocks that backends or the background writer wrote out to free a buffer;
    - "read <relation>": blocks of each table (with its TOAST) and each index read from outside shared buffers;
    - "vacuums <table>": autovacuum and autoanalyze runs on each table.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        table = conn.execute(
            "SELECT t.n_tup_upd, t.n_tup_hot_upd, io.heap_blks_read, io.heap_blks_hit "
            "FROM pg_stat_user_tables t JOIN pg_statio_user_tables io USING (relid) "
            "WHERE t.schemaname = 'delivery' AND t.relname = 'recipients'"
        ).fetchone() or (0, 0, 0, 0)
        wal = conn.execute("SELECT wal_bytes, wal_fpi FROM pg_stat_wal").fetchone() or (0, 0)
        checkpoints = conn.execute(
            # PostgreSQL 17 moved the checkpoints' counters out of pg_stat_bgwriter.
            "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
            if conn.info.server_version >= 170000
            else "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
        ).fetchone() or (0,)
        evicted = conn.execute(
            "SELECT sum(writes) FROM pg_stat_io WHERE object = 'relation' "
            "AND backend_type IN ('client backend', 'background writer')"
            if conn.info.server_version >= 160000
            else "SELECT buffers_clean + buffers_backend FROM pg_stat_bgwriter"
        ).fetchone() or (0,)
        relations = conn.execute(
            "SELECT schemaname || '.' || relname, coalesce(heap_blks_read, 0) + coalesce(toast_blks_read, 0) "
            "FROM pg_statio_user_tables UNION ALL "
            "SELECT schemaname || '.' || indexrelname, coalesce(idx_blks_read, 0) FROM pg_statio_user_indexes"
        ).fetchall()
        vacuums = conn.execute(
            "SELECT schemaname || '.' || relname, autovacuum_count + autoanalyze_count FROM pg_stat_user_tables"
        ).fetchall()
    names = (
        "updates",
        "hot_updates",
        "heap_reads",
        "heap_hits",
        "wal_bytes",
        "wal_fpi",
        "checkpoints",
        "evicted_writes",
    )
    counters = {
        name: int(value or 0) for name, value in zip(names, (*table, *wal, *checkpoints, *evicted), strict=True)
    }
    counters.update({f"read {relation}": int(blocks) for relation, blocks in relations})
    counters.update({f"vacuums {table}": int(runs) for table, runs in vacuums})
    return counters


@dataclass
class HeraldRun:
    workers: int
    recipients: int
    seconds: float
    sink_messages: int
    herald_emails_per_second: float
    peaks: dict[str, int] = field(default_factory=dict)
    first_message: float = 0.0
    steady: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    delivery_disk: int = 0
    database_disk: int = 0
    # What the send cost PostgreSQL on the write side: database_counters() after less before.
    counters: dict[str, int] = field(default_factory=dict)
    get_latencies: list[float] = field(default_factory=list)
    second: str = ""

    @property
    def per_second(self) -> float:
        return self.recipients / self.seconds

    def get_percentile(self, p: float) -> float:
        ordered = sorted(self.get_latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")


def herald_run(
    sink: SmtpSink,
    csv: Path,
    recipients: int,
    workers: int,
    extra_env: dict[str, str],
    *,
    second: bool = False,
    second_at: float = 0.5,
    profile: str = "",
    before_send: Sequence[str] = (),
) -> HeraldRun:
    env = {
        "SMTP_URL": f"smtp://127.0.0.1:{sink.port}",
        "HERALD_DELIVERY_WORKERS": str(workers),
        **extra_env,
    }
    with running_herald(env) as herald:
        user = json.loads(herald.cli("user", "create", "--username", "bench", "--password", "bench-password"))
        key = user["APIKey"]
        list_id = legacy(herald, "list.create", APIKey=key, SubscriberListName="Benchmark")["ListID"]
        started = time.perf_counter()
        report = json.loads(herald.cli("subscribers", "import", "--list", str(list_id), str(csv)))
        if report["Imported"] != recipients:
            raise RuntimeError(f"expected {recipients} imported subscribers: {report}")
        print(f"    imported {recipients:,} subscribers in {time.perf_counter() - started:.1f} s", flush=True)
        campaign_id = immediate_campaign(herald, key, list_id, "Benchmark")
        other_id = immediate_campaign(herald, key, list_id, "Second") if second else None
        url = database_url(herald)
        profiled = profiled_worker(herald, profile) if profile else None
        if before_send:
            with psycopg.connect(url, autocommit=True) as conn:
                for statement in before_send:
                    conn.execute(statement)
        delivery_before, database_before = disk_bytes(url)
        counters_before = database_counters(url)
        before = sink.messages
        latencies: list[float] = []
        second_line = ""
        with PeakMemory() as memory:
            watch_herald(memory, herald)
            # The sink's CPU is shown beside Herald's, not in its sum: what receiving costs on this machine.
            memory.watch(SINK_ROLE, psutil.Process(sink.pid))
            memory.note_existing_backends()
            started = time.perf_counter()
            legacy(herald, "campaign.update", APIKey=key, CampaignID=campaign_id, CampaignStatus="Ready")
            progress = SinkProgress(sink, before, started)
            other_started: float | None = None
            sent_counts: list[tuple[float, int, int]] = []
            next_report = 0.0
            next_progress = 30.0
            while True:
                asked = time.perf_counter()
                body = legacy(herald, "campaign.get", APIKey=key, CampaignID=campaign_id)
                status = body["Campaign"]["CampaignStatus"]
                if status == "Sending":
                    latencies.append(time.perf_counter() - asked)
                if time.perf_counter() - started >= next_progress:
                    # A long send shows its figures so far (all of them again at the end).
                    next_progress += 30
                    ordered = sorted(latencies)
                    p99 = ordered[int(0.99 * (len(ordered) - 1))] * 1000 if ordered else float("nan")
                    peaks = ", ".join(f"{role} {peak / 1e6:.0f}" for role, peak in sorted(memory.peaks.items()))
                    disk = (disk_bytes(url, checkpoint=False)[0] - delivery_before) / (
                        recipients * (2 if other_started else 1)
                    )
                    print(
                        f"    {time.perf_counter() - started:7.1f} s: sink {sink.messages - before:,}, "
                        f"delivery schema +{disk:,.0f} B per recipient, first message "
                        f"{progress.first_message if progress.first_message is not None else float('nan'):.2f} s, "
                        f"campaign.get p99 {p99:.0f} ms; peak RSS MB: {peaks}",
                        flush=True,
                    )
                if other_id is not None:
                    now = time.perf_counter() - started
                    if other_started is None and sink.messages - before >= recipients * second_at:
                        legacy(herald, "campaign.update", APIKey=key, CampaignID=other_id, CampaignStatus="Ready")
                        other_started = now
                        print(f"    second campaign set Ready at {now:.1f} s", flush=True)
                    if other_started is not None and now >= next_report:
                        next_report = now + 10
                        counts = [
                            legacy(herald, "campaign.get", APIKey=key, CampaignID=c, RetrieveStatistics=True)
                            for c in (campaign_id, other_id)
                        ]
                        sent = [int(c["Campaign"]["TotalSent"]) for c in counts]
                        sent_counts.append((now, sent[0], sent[1]))
                        print(f"    {now:7.1f} s: first {sent[0]:>9,} sent, second {sent[1]:>9,} sent", flush=True)
                        other_status = counts[1]["Campaign"]["CampaignStatus"]
                        if status in ("Sent", "Failed", "Cancelled") and other_status in (
                            "Sent",
                            "Failed",
                            "Cancelled",
                        ):
                            break
                elif status in ("Sent", "Failed", "Cancelled"):
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            progress.stop()
        if status != "Sent":
            raise RuntimeError(f"the campaign ended {status}: {body['Campaign'].get('CampaignStatusReason')}")
        statistics = legacy(herald, "campaign.get", APIKey=key, CampaignID=campaign_id, RetrieveStatistics=True)
        campaign = statistics["Campaign"]
        if (campaign["TotalSent"], campaign["TotalFailed"]) != (recipients, 0):
            raise RuntimeError(f"not everything was sent: {campaign}")
        messages = recipients * (2 if second else 1)
        # smtp-sink's counter line may lag a moment behind the last 250 it answered.
        sink.wait_for(before + messages, timeout=10)
        if other_id is not None:
            # Both progressed in every 10 s interval while both were Sending: neither starved.
            both = [
                (b[1] - a[1], b[2] - a[2])
                for a, b in itertools.pairwise(sent_counts)
                if b[1] < recipients and b[2] < recipients
            ]
            second_line = (
                f"both campaigns Sending for {len(both)} intervals of 10 s; in each, the first sent "
                f"{min((d[0] for d in both), default=0):,}-{max((d[0] for d in both), default=0):,} and the second "
                f"{min((d[1] for d in both), default=0):,}-{max((d[1] for d in both), default=0):,}; "
                f"all {messages:,} sent in {seconds:.1f} s ({messages / seconds:,.0f} emails/s)"
            )
        # Before disk_bytes(), whose CHECKPOINT would count as the send's.
        counters_after = database_counters(url)
        delivery_after, database_after = disk_bytes(url)
        if profiled is not None:
            profiled.terminate()
            profiled.wait(60)
            print(f"    the profiled worker's statistics are in {profile}", flush=True)
        return HeraldRun(
            workers=workers,
            recipients=recipients,
            seconds=seconds if other_id is None else progress.when(recipients),
            sink_messages=sink.messages - before,
            herald_emails_per_second=statistics["CampaignThroughput"]["EmailsPerSecond"],
            peaks=dict(memory.peaks),
            first_message=progress.first_message or float("nan"),
            # With a second campaign (Ready at 50%), the first's steady rate is read before it started.
            steady=progress.steady(recipients, min(0.9, second_at - 0.05) if second else 0.9),
            cpu={role: spent * 1000 / messages for role, spent in memory.cpu_seconds().items()},
            delivery_disk=(delivery_after - delivery_before) // messages,
            database_disk=(database_after - database_before) // messages,
            counters={name: value - counters_before.get(name, 0) for name, value in counters_after.items()},
            get_latencies=latencies,
            second=second_line,
        )


def connections_per_worker(extra_env: dict[str, str]) -> int:
    """How many SMTP connections one delivery worker opens, from the settings Herald would read."""
    # Herald's processes read the same environment, with --env on top.
    value = extra_env.get("HERALD_DELIVERY_CONCURRENCY")
    return int(value) if value else Settings().delivery_concurrency


def ceilings(
    tools: PostfixTools, sink: SmtpSink, worker_counts: list[int], per_worker: int, ceiling: int, size: int
) -> tuple[SourceRun, dict[int, float]]:
    """(a) smtp-source and (b) the bare aiosmtplib loop (msg/s by worker count) on the sink, `ceiling` messages each."""
    connections = per_worker * max(worker_counts)
    before = sink.messages
    source = run_source(tools, sink.port, messages=ceiling, connections=connections, size=size)
    if not sink.wait_for(before + ceiling, timeout=30):
        raise RuntimeError("smtp-sink did not count every smtp-source message")
    bare = {}
    for workers in sorted(set(worker_counts)):
        before = sink.messages
        started = time.perf_counter()
        uvloop.run(bare_loop(sink.port, ceiling, per_worker * workers, message_of(size)))
        if not sink.wait_for(before + ceiling, timeout=30):
            raise RuntimeError("smtp-sink did not count every aiosmtplib message")
        bare[workers] = ceiling / (time.perf_counter() - started)
    return source, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure, comma-separated")
    parser.add_argument(
        "--ceiling-messages",
        type=int,
        default=0,
        help="messages of the smtp-source and aiosmtplib runs (default: --recipients)",
    )
    parser.add_argument(
        "--second-at", type=float, default=0.5, help="the share of the first campaign sent when the second starts"
    )
    parser.add_argument(
        "--ceilings-first", action="store_true", help="measure (a) and (b) before Herald, not after"
    )
    parser.add_argument(
        "--profile-worker",
        default="",
        metavar="FILE",
        help="run one more worker under cProfile; its statistics to FILE",
    )
    parser.add_argument(
        "--second-campaign",
        action="store_true",
        help="set a second campaign to the same subscribers Ready once the first sent 50%%; show both progress",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for Herald; repeatable"
    )
    parser.add_argument(
        "--sql",
        action="append",
        default=[],
        metavar="STATEMENT",
        help="run on Herald's database once the campaign is ready to send, before the send; repeatable "
        "(for example a table's storage parameters, to see what they change)",
    )
    args = parser.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]
    extra_env = dict(item.split("=", 1) for item in args.env)
    per_worker = connections_per_worker(extra_env)
    size = typical_message_size()
    tools = postfix_tools()
    print(
        f"{args.recipients:,} recipients, messages of ~{size:,} bytes, {os.cpu_count()} CPUs, "
        f"{per_worker} SMTP connections per worker",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="herald-delivery-bench-") as tmp, SmtpSink(tools) as sink:
        csv = Path(tmp) / "subscribers.csv"
        write_csv(csv, args.recipients)

        if args.ceilings_first:
            # A long send may not end before a deadline: its ratios need the ceilings measured already.
            source, bare = ceilings(
                tools, sink, worker_counts, per_worker, args.ceiling_messages or args.recipients, size
            )
            print(f"(a) smtp-source {source.per_second:,.0f} msg/s; (b) bare aiosmtplib {bare} msg/s", flush=True)
        runs: list[HeraldRun] = []
        for workers in worker_counts:
            print(f"(c) Herald with {workers} worker process(es)...", flush=True)
            run = herald_run(
                sink,
                csv,
                args.recipients,
                workers,
                extra_env,
                second=args.second_campaign,
                second_at=args.second_at,
                profile=args.profile_worker,
                before_send=args.sql,
            )
            runs.append(run)
            print(
                f"    Ready -> Sent in {run.seconds:.2f} s: {run.per_second:,.0f} emails/s end to end "
                f"(first to last send: {run.herald_emails_per_second:,.0f} emails/s); sink counted {run.sink_messages:,}",
                flush=True,
            )
            print(
                f"    first message {run.first_message:.2f} s after Ready; steady (10%-90%) {run.steady:,.0f} emails/s; "
                f"campaign.get while Sending: p50 {run.get_percentile(50):.1f} ms, p99 {run.get_percentile(99):.1f} ms "
                f"({len(run.get_latencies):,} calls)",
                flush=True,
            )
            if run.second:
                print(f"    {run.second}", flush=True)

        if not args.ceilings_first:
            # The ceilings, measured after Herald so they run on the same warmed-up sink.
            source, bare = ceilings(
                tools, sink, worker_counts, per_worker, args.ceiling_messages or args.recipients, size
            )

    print()
    print(
        f"(a) smtp-source, {source.connections} connections:  {source.per_second:9,.0f} msg/s   ({source.command})"
    )
    for workers, rate in bare.items():
        print(f"(b) bare aiosmtplib, {per_worker * workers:>2} connections: {rate:9,.0f} msg/s")
    print()
    print("workers   Ready->Sent   emails/s   vs smtp-source   vs bare aiosmtplib (same connections)")
    for run in runs:
        print(
            f"{run.workers:>7}   {run.seconds:9.2f} s   {run.per_second:8,.0f}   {run.per_second / source.per_second:14.0%}"
            f"   {run.per_second / bare[run.workers]:18.0%}"
        )
    print()
    print("workers   first message after Ready   steady emails/s   vs smtp-source   vs bare aiosmtplib")
    for run in runs:
        print(
            f"{run.workers:>7}   {run.first_message:21.2f} s   {run.steady:15,.0f}   {run.steady / source.per_second:14.0%}"
            f"   {run.steady / bare[run.workers]:18.0%}"
        )
    print()
    print("campaign.get while Sending (ms)   p50   p99   calls")
    for run in runs:
        print(
            f"{run.workers:>7} worker(s)            {run.get_percentile(50):8.1f} {run.get_percentile(99):5.1f}"
            f"   {len(run.get_latencies):,}"
        )
    print()
    print("PostgreSQL disk added by the send, bytes per recipient: delivery schema / whole database")
    for run in runs:
        print(f"{run.workers:>7} worker(s)   {run.delivery_disk:,} / {run.database_disk:,}")
    print()
    print("queue row updates during the send: per recipient, and heap-only (HOT: no index entry written)")
    for run in runs:
        done, hot = run.counters["updates"], run.counters["hot_updates"]
        print(f"{run.workers:>7} worker(s)   {done / max(run.sink_messages, 1):.2f} / {hot / max(done, 1):.0%}")
    print()
    print(
        "PostgreSQL writes during the send, per message: WAL bytes, full-page images, blocks evicted dirty; "
        "checkpoints; queue heap blocks read from outside shared buffers per message"
    )
    for run in runs:
        c, n = run.counters, max(run.sink_messages, 1)
        print(
            f"{run.workers:>7} worker(s)   {c['wal_bytes'] / n:,.0f} B, {c['wal_fpi'] / n:.3f} FPI, "
            f"{c['evicted_writes'] / n:.3f} evicted; {c['checkpoints']} checkpoints; {c['heap_reads'] / n:.3f} reads"
        )
        reads = sorted(
            ((v, k.removeprefix("read ")) for k, v in c.items() if k.startswith("read ") and v >= n / 1000),
            reverse=True,
        )
        if reads:
            print(
                "      blocks read from outside shared buffers, per message: "
                + ", ".join(f"{relation} {blocks / n:.3f}" for blocks, relation in reads[:6])
            )
        vacuumed = sorted(
            (k.removeprefix("vacuums "), v) for k, v in c.items() if k.startswith("vacuums ") and v > 0
        )
        if vacuumed:
            print(
                "      autovacuum and autoanalyze runs: "
                + ", ".join(f"{table} {runs}" for table, runs in vacuumed)
            )
    print()
    print("CPU per message during the send (ms), by process")
    cpu_roles = sorted({role for run in runs for role in run.cpu} - {SINK_ROLE})
    print(f"{'':<24}" + "".join(f"{f'{run.workers} worker(s)':>14}" for run in runs))
    for role in cpu_roles:
        print(f"{role:<24}" + "".join(f"{run.cpu.get(role, 0):>14.3f}" for run in runs))
    print(
        f"{'all of Herald':<24}"
        + "".join(f"{sum(v for role, v in run.cpu.items() if role != SINK_ROLE):>14.3f}" for run in runs)
    )
    print(f"{SINK_ROLE:<24}" + "".join(f"{run.cpu.get(SINK_ROLE, 0):>14.3f}" for run in runs))
    print()
    print("peak RSS per process (MB; target: delivery worker <= 200 MB; every process <= 250 MB at a million)")
    roles = sorted({role for run in runs for role in run.peaks})
    print(f"{'':<24}" + "".join(f"{f'{run.workers} worker(s)':>14}" for run in runs))
    for role in roles:
        print(f"{role:<24}" + "".join(f"{run.peaks.get(role, 0) / 1e6:>14.1f}" for run in runs))


if __name__ == "__main__":
    main()
