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
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psutil
import uvloop
from harness import Herald, running_herald

from bench.postfix import SmtpSink, postfix_tools, run_source
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


class PeakMemory:
    """Peak RSS of processes by role: psutil samples every 0.2 s in a thread, plus VmHWM when read."""

    def __init__(self) -> None:
        self.watched: dict[str, psutil.Process] = {}
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def watch(self, role: str, process: psutil.Process) -> None:
        self.watched[role] = process

    def _read(self) -> None:
        for role, process in list(self.watched.items()):
            try:
                rss = _peak_rss(process)
                if role == "postgres":
                    # PostgreSQL forks a backend per connection: the largest one is reported too.
                    backends = [_peak_rss(child) for child in process.children()]
                    self.peaks["postgres backend"] = max([self.peaks.get("postgres backend", 0), *backends])
            except (psutil.Error, OSError):
                continue
            self.peaks[role] = max(self.peaks.get(role, 0), rss)

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
        command = child.cmdline()
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


@dataclass
class HeraldRun:
    workers: int
    recipients: int
    seconds: float
    sink_messages: int
    herald_emails_per_second: float
    peaks: dict[str, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.recipients / self.seconds


def herald_run(sink: SmtpSink, csv: Path, recipients: int, workers: int, extra_env: dict[str, str]) -> HeraldRun:
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
        before = sink.messages
        with PeakMemory() as memory:
            watch_herald(memory, herald)
            started = time.perf_counter()
            legacy(herald, "campaign.update", APIKey=key, CampaignID=campaign_id, CampaignStatus="Ready")
            while True:
                body = legacy(herald, "campaign.get", APIKey=key, CampaignID=campaign_id)
                status = body["Campaign"]["CampaignStatus"]
                if status in ("Sent", "Failed", "Cancelled"):
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - started
        if status != "Sent":
            raise RuntimeError(f"the campaign ended {status}: {body['Campaign'].get('CampaignStatusReason')}")
        statistics = legacy(herald, "campaign.get", APIKey=key, CampaignID=campaign_id, RetrieveStatistics=True)
        campaign = statistics["Campaign"]
        if (campaign["TotalSent"], campaign["TotalFailed"]) != (recipients, 0):
            raise RuntimeError(f"not everything was sent: {campaign}")
        # smtp-sink's counter line may lag a moment behind the last 250 it answered.
        sink.wait_for(before + recipients, timeout=10)
        return HeraldRun(
            workers=workers,
            recipients=recipients,
            seconds=seconds,
            sink_messages=sink.messages - before,
            herald_emails_per_second=statistics["CampaignThroughput"]["EmailsPerSecond"],
            peaks=dict(memory.peaks),
        )


def connections_per_worker(extra_env: dict[str, str]) -> int:
    """How many SMTP connections one delivery worker opens, from the settings Herald would read."""
    # Herald's processes read the same environment, with --env on top.
    value = extra_env.get("HERALD_DELIVERY_CONCURRENCY")
    return int(value) if value else Settings().delivery_concurrency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure, comma-separated")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for Herald; repeatable"
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

        runs: list[HeraldRun] = []
        for workers in worker_counts:
            print(f"(c) Herald with {workers} worker process(es)...", flush=True)
            run = herald_run(sink, csv, args.recipients, workers, extra_env)
            runs.append(run)
            print(
                f"    Ready -> Sent in {run.seconds:.2f} s: {run.per_second:,.0f} emails/s end to end "
                f"(first to last send: {run.herald_emails_per_second:,.0f} emails/s); sink counted {run.sink_messages:,}",
                flush=True,
            )

        # The ceilings, measured after Herald so they run on the same warmed-up sink.
        connections = per_worker * max(worker_counts)
        before = sink.messages
        source = run_source(tools, sink.port, messages=args.recipients, connections=connections, size=size)
        if not sink.wait_for(before + args.recipients, timeout=30):
            raise RuntimeError("smtp-sink did not count every smtp-source message")
        bare = {}
        for workers in sorted(set(worker_counts)):
            before = sink.messages
            started = time.perf_counter()
            uvloop.run(bare_loop(sink.port, args.recipients, per_worker * workers, message_of(size)))
            if not sink.wait_for(before + args.recipients, timeout=30):
                raise RuntimeError("smtp-sink did not count every aiosmtplib message")
            bare[workers] = args.recipients / (time.perf_counter() - started)

    print()
    print(f"(a) smtp-source, {connections} connections:  {source.per_second:9,.0f} msg/s   ({source.command})")
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
    print("peak RSS per process (MB; target: delivery worker <= 200 MB)")
    roles = sorted({role for run in runs for role in run.peaks})
    print(f"{'':<24}" + "".join(f"{f'{run.workers} worker(s)':>14}" for run in runs))
    for role in roles:
        print(f"{role:<24}" + "".join(f"{run.peaks.get(role, 0) / 1e6:>14.1f}" for run in runs))


if __name__ == "__main__":
    main()
