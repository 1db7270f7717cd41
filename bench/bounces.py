"""Bounce receiver benchmark: DSNs over SMTP into `herald serve bounce-receiver`, beside a bare aiosmtpd server.

    .venv/bin/python bench/bounces.py [--messages 20000] [--connections 400]

Setup: a fresh `herald run` (its local mail capture as the relay), a user, a list of N subscribers
(`herald subscribers import`), an email and an Immediate campaign sent to them, so that delivery's
queue holds N real (campaign, recipient) pairs (read back with ListQueuedRecipients). For each a
realistic DSN is built (~3 KB: multipart/report with a human-readable part, message/delivery-status
with Status 5.1.1 and a Diagnostic-Code, and the original's headers as text/rfc822-headers), addressed
to that recipient's signed return path.

Measured in one run, with the same client (aiosmtplib on uvloop, K connections each sending its
share back to back: MAIL FROM:<>, RCPT TO the return path, DATA) and the same messages:

(a) a bare aiosmtpd server in its own process (uvloop, the receiver's SMTP settings) whose handler
    answers 250 and does nothing: what the SMTP conversation alone cost the receiver when it ran on
    aiosmtpd, before it had a server of its own (services/delivery/smtp_server.py). Run before and after (b).
(b) Herald's bounce receiver: each DSN verified at RCPT, parsed, reported to DeliveryService.RecordBounces
    (group commit), classified and recorded in delivery's PostgreSQL with its outbox event, and only then
    answered 250. Then the time until the campaign's statistics count N hard bounces, and until the
    audience service has applied the N events from NATS (N subscribers Hard and suppressed).

Prints DSNs/s (time from the first connection until the last 250), the ratio to (a), the CPU time each
process spent per DSN (user + system, from psutil: a figure other load on the machine disturbs less
than DSNs/s), and the peak resident memory of the bounce receiver and its neighbours.
Target: >= 1,000 DSNs/s end to end (issue 12, section 6).
"""

from __future__ import annotations

import os

# The benchmark's gRPC clients use the setting every Herald process runs with (services/cli.py).
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

import argparse
import asyncio
import json
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import grpc
import psutil
import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session
from harness import Herald, free_port, running_herald
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from bench.delivery import PeakMemory, immediate_campaign, legacy, watch_herald, write_csv
from services.common import auth
from services.common.return_path import ReturnPaths
from services.delivery import bounce_receiver
from services.delivery.smtp_listener import LISTEN_BACKLOG

BOUNCE_DOMAIN = "bounces.herald-bench.test"
CPU_ROLES = ("bounce-receiver", "delivery", "audience", "postgres", "nats-server", "benchmark client")


@dataclass(frozen=True)
class Recipient:
    campaign_id: int
    recipient_id: int
    address: str


# --- the DSNs -------------------------------------------------------------------------------------------------


def dsn(recipient: Recipient, return_path: str, token: str, n: int) -> bytes:
    """A delivery status notification for one recipient, as a receiving MTA sends it back to the return path."""
    domain = recipient.address.rpartition("@")[2]
    mx = f"mx{n % 7}.{domain}"
    now = datetime.now(UTC)
    sent = now - timedelta(minutes=3)
    boundary = f"dsn-{uuid.uuid4().hex}"
    queue_id = uuid.uuid4().hex[:12].upper()
    original_id = f"<{uuid.uuid4().hex}.{recipient.recipient_id}@herald.example>"
    lines = [
        "Return-Path: <>",
        f"Received: by {mx} (MTA, from userid 0) id {queue_id}; {format_datetime(now)}",
        f"Date: {format_datetime(now)}",
        f"From: MAILER-DAEMON@{mx} (Mail Delivery System)",
        f"To: {return_path}",
        "Subject: Undelivered Mail Returned to Sender",
        "Auto-Submitted: auto-replied",
        f"Message-ID: <{queue_id}.{uuid.uuid4().hex}@{mx}>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "Content-Transfer-Encoding: 7bit",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at host {mx}.",
        "",
        "Your message could not be delivered to the recipient below: the receiving",
        "server refused it permanently. Please check the address and do not send to",
        "it again. The headers of your message follow at the end of this report.",
        "",
        "                   The mail system",
        "",
        f"<{recipient.address}>: host {mx}[192.0.2.{n % 250 + 1}] said: 550 5.1.1",
        f"    <{recipient.address}>: Recipient address rejected: User unknown in virtual",
        "    mailbox table (in reply to RCPT TO command)",
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {mx}",
        f"X-Postfix-Queue-ID: {queue_id}",
        f"X-Postfix-Sender: rfc822; {return_path}",
        f"Arrival-Date: {format_datetime(sent)}",
        "",
        f"Final-Recipient: rfc822; {recipient.address}",
        f"Original-Recipient: rfc822;{recipient.address}",
        "Action: failed",
        "Status: 5.1.1",
        f"Remote-MTA: dns; {mx}",
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient.address}>: Recipient address",
        "    rejected: User unknown in virtual mailbox table",
        f"Last-Attempt-Date: {format_datetime(now)}",
        "",
        f"--{boundary}",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "",
        f"Return-Path: <{return_path}>",
        "Received: from herald.example (herald.example [198.51.100.7])",
        f"    by {mx} (MTA) with ESMTPS id {queue_id}",
        f"    for <{recipient.address}>; {format_datetime(sent)}",
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=herald.example; s=s1;",
        "    h=from:to:subject:date:message-id:list-unsubscribe:list-unsubscribe-post;",
        f"    bh={secrets.token_urlsafe(32)}=;",
        *(f"    b={secrets.token_urlsafe(57)}" for _ in range(3)),
        "From: Herald Benchmark <bench@herald.example>",
        f"To: {recipient.address}",
        f"Subject: Weekly news for First{n}",
        f"Date: {format_datetime(sent)}",
        f"Message-ID: {original_id}",
        "MIME-Version: 1.0",
        f"List-Unsubscribe: <https://herald.example/t/u/{secrets.token_urlsafe(64)}>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        f"X-Herald-Token: {token}",
        f'Content-Type: multipart/alternative; boundary="{uuid.uuid4().hex}"',
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


# --- the bare server ------------------------------------------------------------------------------------------


class Accept:
    """The bare server's handler: every recipient accepted (aiosmtpd's default), every message answered 250."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 OK"


async def serve_bare(port: int) -> None:
    """An aiosmtpd server with the bounce receiver's SMTP settings and a handler that does nothing."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            Accept(),
            hostname=BOUNCE_DOMAIN,
            ident="bare aiosmtpd",
            data_size_limit=bounce_receiver.MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=bounce_receiver.SESSION_TIMEOUT_SECONDS,
            loop=loop,
        ),
        "127.0.0.1",
        port,
        backlog=LISTEN_BACKLOG,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


class BareServer:
    """The bare aiosmtpd server as a process of its own (this file with --bare-server), like the receiver."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, __file__, "--bare-server", str(self.port)])
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare aiosmtpd server did not start")
            time.sleep(0.05)

    def __enter__(self) -> BareServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


# --- the client -----------------------------------------------------------------------------------------------


@dataclass
class Push:
    """One push of every DSN: seconds from the start until the last 250, and what was refused."""

    seconds: float
    accepted: int
    refused: int
    first_refusal: str = ""

    @property
    def per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


async def push(port: int, messages: Sequence[tuple[str, bytes]], connections: int) -> Push:
    """K aiosmtplib connections, each sending its share of (return path, DSN) back to back as a bouncing MTA does."""
    started = time.perf_counter()
    last_reply = started
    accepted = refused = 0
    first_refusal = ""

    async def session(share: Sequence[tuple[str, bytes]]) -> None:
        nonlocal last_reply, accepted, refused, first_refusal
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="mx.bench.test")
        await client.connect()
        for rcpt, raw in share:
            try:
                await client.sendmail("", [rcpt], raw)
                accepted += 1
            except aiosmtplib.SMTPResponseException as exc:
                refused += 1
                first_refusal = first_refusal or f"{exc.code} {exc.message}"
            last_reply = time.perf_counter()
        await client.quit()

    await asyncio.gather(*(session(messages[i::connections]) for i in range(connections)))
    return Push(last_reply - started, accepted, refused, first_refusal)


# --- Herald ---------------------------------------------------------------------------------------------------


def metadata(herald: Herald, user_id: int) -> tuple[tuple[str, str], ...]:
    """A token of the user marked as a Herald process's, as the callers of internal RPCs present (tests do the same)."""
    principal = auth.Principal(user_id=user_id, permissions=frozenset({"*"}), service="bench")
    return (("authorization", f"Bearer {auth.mint_token(principal, herald.env['HERALD_TOKEN_SECRET'], 3600)}"),)


async def queued(herald: Herald, user_id: int, campaign_id: int) -> list[Recipient]:
    """The campaign's queue rows (ListQueuedRecipients, paged)."""
    rows: list[Recipient] = []
    after = 0
    async with grpc.aio.insecure_channel(herald.target("delivery")) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        while True:
            page = await stub.ListQueuedRecipients(
                delivery_pb2.ListQueuedRecipientsRequest(
                    campaign_id=campaign_id, page_size=500, after_recipient_id=after
                ),
                metadata=metadata(herald, user_id),
            )
            if not page.recipients:
                return rows
            rows.extend(Recipient(campaign_id, r.recipient_id, r.email_address) for r in page.recipients)
            after = page.recipients[-1].recipient_id


async def hard_bounces(herald: Herald, user_id: int, campaign_id: int) -> int:
    async with grpc.aio.insecure_channel(herald.target("delivery")) as channel:
        response = await delivery_pb2_grpc.DeliveryServiceStub(channel).BatchGetCampaignStatistics(
            delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=[campaign_id]),
            metadata=metadata(herald, user_id),
        )
    return int(response.statistics[0].total_hard_bounces)


async def audience_counts(herald: Herald, user_id: int, list_id: int) -> tuple[int, int]:
    """(subscribers of the list now Hard, subscribers of the list suppressed)."""
    async with grpc.aio.insecure_channel(herald.target("audience")) as channel:
        stub = audience_pb2_grpc.AudienceServiceStub(channel)
        hard = await stub.ListSubscribers(
            audience_pb2.ListSubscribersRequest(
                list_id=list_id, bounce_type=audience_pb2.BOUNCE_TYPE_HARD, page_size=1
            ),
            metadata=metadata(herald, user_id),
        )
        suppressed = await stub.ListSubscribers(
            audience_pb2.ListSubscribersRequest(list_id=list_id, suppressed_only=True, page_size=1),
            metadata=metadata(herald, user_id),
        )
    return int(hard.total_size), int(suppressed.total_size)


def poll_until(check: Any, wanted: int, *, timeout: float, interval: float) -> tuple[float, Any]:
    """Calls `check()` until its first value reaches `wanted`; (seconds since called, last value)."""
    started = time.perf_counter()
    while True:
        value = check()
        count = value[0] if isinstance(value, tuple) else value
        if count >= wanted or time.perf_counter() - started > timeout:
            return time.perf_counter(), value
        time.sleep(interval)


def postgres(herald: Herald) -> psutil.Process | None:
    pid_file = herald.data_dir / "pg" / "postmaster.pid"
    return psutil.Process(int(pid_file.read_text().split()[0])) if pid_file.exists() else None


def cpu_seconds(herald: Herald) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the processes a DSN passes through, and this client."""
    totals = dict.fromkeys(CPU_ROLES, 0.0)
    found: dict[str, list[psutil.Process]] = {role: [p] for role, p in herald.processes().items()}
    postmaster = postgres(herald)
    if postmaster is not None:
        found["postgres"] = [postmaster, *postmaster.children()]
    found["benchmark client"] = [psutil.Process()]
    for role, processes in found.items():
        if role not in totals:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            totals[role] += times.user + times.system
    return totals


@dataclass
class HeraldFigures:
    push: Push
    recorded_seconds: float
    recorded: int
    applied_seconds: float
    hard: int
    suppressed: int
    cpu_ingest: dict[str, float]
    cpu_after: dict[str, float]
    peaks: dict[str, int]


def prepare(herald: Herald, csv: Path, count: int) -> tuple[int, int, int, list[Recipient]]:
    """A user, a list of `count` subscribers and a campaign sent to them; (user, list, campaign, queue rows)."""
    user = json.loads(herald.cli("user", "create", "--username", "bench", "--password", "bench-password"))
    user_id, key = int(user["UserID"]), user["APIKey"]
    list_id = legacy(herald, "list.create", APIKey=key, SubscriberListName="Bounces")["ListID"]
    started = time.perf_counter()
    report = json.loads(herald.cli("subscribers", "import", "--list", str(list_id), str(csv)))
    if report["Imported"] != count:
        raise RuntimeError(f"expected {count} imported subscribers: {report}")
    campaign_id = immediate_campaign(herald, key, list_id, "Bounces")
    legacy(herald, "campaign.update", APIKey=key, CampaignID=campaign_id, CampaignStatus="Ready")
    while True:
        campaign = legacy(herald, "campaign.get", APIKey=key, CampaignID=campaign_id)["Campaign"]
        if campaign["CampaignStatus"] in ("Sent", "Failed", "Cancelled"):
            break
        time.sleep(0.2)
    if campaign["CampaignStatus"] != "Sent":
        raise RuntimeError(f"the campaign ended {campaign['CampaignStatus']}")
    rows = uvloop.run(queued(herald, user_id, campaign_id))
    if len(rows) != count:
        raise RuntimeError(f"expected {count} queue rows, found {len(rows)}")
    print(
        f"  imported {count:,} subscribers and sent the campaign to the mail capture in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return user_id, list_id, campaign_id, rows


def measure_herald(
    herald: Herald, user_id: int, list_id: int, campaign_id: int, messages: Sequence[tuple[str, bytes]], k: int
) -> HeraldFigures:
    count = len(messages)
    with PeakMemory() as memory:
        watch_herald(memory, herald)
        before = cpu_seconds(herald)
        started = time.perf_counter()
        result = uvloop.run(push(herald.ports["bounces"], messages, k))
        pushed = cpu_seconds(herald)
        recorded_at, recorded = poll_until(
            lambda: uvloop.run(hard_bounces(herald, user_id, campaign_id)), count, timeout=120, interval=0.05
        )
        applied_at, (hard, suppressed) = poll_until(
            lambda: uvloop.run(audience_counts(herald, user_id, list_id)), count, timeout=600, interval=0.5
        )
        after = cpu_seconds(herald)
    return HeraldFigures(
        push=result,
        recorded_seconds=recorded_at - started,
        recorded=recorded,
        applied_seconds=applied_at - started,
        hard=hard,
        suppressed=suppressed,
        cpu_ingest={role: (pushed[role] - before[role]) / count * 1000 for role in CPU_ROLES},
        cpu_after={role: (after[role] - pushed[role]) / count * 1000 for role in CPU_ROLES},
        peaks=dict(memory.peaks),
    )


def measure_bare(messages: Sequence[tuple[str, bytes]], k: int) -> tuple[Push, float, float, int]:
    """(the push, the server's CPU ms per message, the client's CPU ms per message, the server's peak RSS)."""
    with BareServer() as bare:
        memory = PeakMemory()
        with memory:
            server = psutil.Process(bare.process.pid)
            memory.watch("bare aiosmtpd", server)
            client = psutil.Process()
            server_before, client_before = sum(server.cpu_times()[:2]), sum(client.cpu_times()[:2])
            result = uvloop.run(push(bare.port, messages, k))
            server_cpu = sum(server.cpu_times()[:2]) - server_before
            client_cpu = sum(client.cpu_times()[:2]) - client_before
    count = len(messages)
    return result, server_cpu / count * 1000, client_cpu / count * 1000, memory.peaks.get("bare aiosmtpd", 0)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--messages", type=int, default=20_000, help="DSNs to push (and subscribers; default 20,000)"
    )
    parser.add_argument("--connections", type=int, default=400, help="concurrent SMTP connections (default 400)")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        uvloop.run(serve_bare(args.bare_server))
        return
    count, k = args.messages, args.connections
    print(f"$ {shlex.join([os.path.relpath(sys.executable), *sys.argv])}", flush=True)
    print(
        f"{count:,} DSNs over {k} SMTP connections, {os.cpu_count()} CPUs, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load_average()}",
        flush=True,
    )
    env = {"HERALD_TOKEN_SECRET": secrets.token_urlsafe(32), "HERALD_BOUNCE_DOMAIN": BOUNCE_DOMAIN}
    with tempfile.TemporaryDirectory(prefix="herald-bounces-bench-") as tmp, running_herald(env) as herald:
        csv = Path(tmp) / "subscribers.csv"
        write_csv(csv, count)
        user_id, list_id, campaign_id, rows = prepare(herald, csv, count)
        paths = ReturnPaths(BOUNCE_DOMAIN, herald.env["HERALD_TOKEN_SECRET"])
        messages = []
        for n, row in enumerate(rows):
            token = paths.token(row.campaign_id, row.recipient_id)
            return_path = f"b-{token}@{paths.domain}"
            messages.append((return_path, dsn(row, return_path, token, n)))
        size = sum(len(raw) for _, raw in messages) / count
        print(f"  built {count:,} DSNs of {size:,.0f} bytes on average", flush=True)

        print("(a) bare aiosmtpd server...", flush=True)
        bare_before = measure_bare(messages, k)
        print(f"    {bare_before[0].per_second:,.0f} messages/s", flush=True)
        print(f"(b) Herald's bounce receiver (load average {load_average()})...", flush=True)
        figures = measure_herald(herald, user_id, list_id, campaign_id, messages, k)
        print(f"    {figures.push.per_second:,.0f} DSNs/s", flush=True)
        print("(a) bare aiosmtpd server again...", flush=True)
        bare_after = measure_bare(messages, k)
        print(f"    {bare_after[0].per_second:,.0f} messages/s", flush=True)

    bare = max(bare_before, bare_after, key=lambda b: b[0].per_second)
    result = figures.push
    print()
    print(f"load average at the end: {load_average()}")
    for name, run in (("(a) bare aiosmtpd, before", bare_before[0]), ("(a) bare aiosmtpd, after", bare_after[0])):
        print(f"{name:<34} {run.per_second:9,.0f} messages/s   {run.seconds:6.2f} s   refused {run.refused}")
    print(
        f"{'(b) Herald bounce receiver':<34} {result.per_second:9,.0f} DSNs/s       {result.seconds:6.2f} s   "
        f"refused {result.refused}{f' (first: {result.first_refusal})' if result.refused else ''}"
    )
    print(f"    ratio to the bare server (the faster of its runs): {result.per_second / bare[0].per_second:.0%}")
    print(
        f"    recorded (statistics count {figures.recorded:,} hard bounces) after {figures.recorded_seconds:6.2f} s"
    )
    print(
        f"    applied by audience ({figures.hard:,} Hard, {figures.suppressed:,} suppressed) after "
        f"{figures.applied_seconds:6.2f} s ({figures.hard / figures.applied_seconds:,.0f}/s)"
    )
    verdict = "met" if result.per_second >= 1000 and result.refused == 0 else "NOT met"
    print(f"    target >= 1,000 DSNs/s end to end: {verdict}")
    print()
    print("CPU ms per DSN (user + system), from the first connection until the last 250, and after it until")
    print("audience applied them all (the benchmark client's polling included):")
    for name, cpu in (("ingest", figures.cpu_ingest), ("after", figures.cpu_after)):
        parts = "   ".join(f"{role} {ms:.3f}" for role, ms in cpu.items())
        print(f"    {name:<7} {parts}   sum {sum(cpu.values()):.3f}")
    print(f"    bare aiosmtpd server {bare[1]:.3f}   benchmark client (bare run) {bare[2]:.3f}")
    receiver_ms, ingest_ms = figures.cpu_ingest["bounce-receiver"], sum(figures.cpu_ingest.values())
    print(
        f"    so the receiver alone, with a CPU of its own, would take at most {1000 / receiver_ms:,.0f} DSNs/s; "
        f"all of it on this machine's {os.cpu_count()} CPUs at most {1000 * (os.cpu_count() or 1) / ingest_ms:,.0f}/s"
    )
    print()
    print("peak RSS (MB):")
    for role in ("bounce-receiver", "delivery", "audience", "postgres", "postgres backend", "nats-server"):
        if role in figures.peaks:
            print(f"    {role:<20} {figures.peaks[role] / 1e6:7.1f}")
    print(f"    {'bare aiosmtpd':<20} {max(bare_before[3], bare_after[3]) / 1e6:7.1f}")


if __name__ == "__main__":
    main()
