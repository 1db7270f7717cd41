"""Streaming RPCs benchmark: StreamDeliveryEvents beside a bare JetStream consumer of the same subject, and WatchCampaign, during and after a send.

    .venv/bin/python bench/streams.py [--recipients 20000]

One run: a fresh `herald run` sending into Postfix's smtp-sink (bench/postfix.py), a user, a list of N
subscribers (`herald subscribers import`), an Immediate campaign set Ready. Every client is a process
of its own (this script with --role), started before the campaign is set Ready:

(a) live, during the send: StreamDeliveryEvents of the campaign (gRPC, a user's token) and a bare nats-py
    JetStream consumer (an ephemeral pull consumer, no acks) of the same subject
    `<ns>.events.delivery.recipients.<owner>.<campaign>`, each until it has the campaign's 2N events
    (queued and sent). Reported: events/s from Ready, and the delay from each event's occur_time to its
    arrival (p50, p95, max): the send's own pace bounds both.
(b) replay, after the send, one client at a time: the same 2N events read again from the stream's start
    (StreamDeliveryEvents with start_time; the bare consumer from the same time): events/s, the most each
    path delivers.
(c) WatchCampaign during the send: updates received, updates/s, the delay from the Ready call's answer
    to the first update that shows the campaign past Draft, and from the last send (the largest occur_time
    of a sent event) to the message with Sent.
"""

from __future__ import annotations

import os

# The benchmark's gRPC clients use the setting every Herald process runs with (services/cli.py).
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import nats
import nats.errors
from harness import ROOT, Herald, running_herald
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bench.delivery import immediate_campaign, legacy, write_csv
from bench.postfix import SmtpSink, postfix_tools
from services.common import events
from services.common.natsutil import Subjects

SENT = delivery_pb2.DELIVERY_EVENT_KIND_SENT


# --- the clients (each runs as `bench/streams.py --role ...` in a process of its own) ---------------------------


def _delay(occur_time: datetime, arrived: float) -> float:
    return arrived - occur_time.timestamp()


async def grpc_events(target: str, token: str, campaign_id: int, wanted: int, since: datetime) -> dict[str, Any]:
    """Streams the campaign's events until `wanted` arrived; reports times and delays."""
    request = delivery_pb2.StreamDeliveryEventsRequest(campaign_id=campaign_id)
    request.start_time.FromDatetime(since)
    delays: list[float] = []
    first = 0.0
    last_sent_at = 0.0
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        # Ready before the call: it starts at `since`, so it misses nothing that happens meanwhile.
        say_ready()
        called = time.time()
        call = delivery_pb2_grpc.DeliveryServiceStub(channel).StreamDeliveryEvents(
            request, metadata=(("authorization", f"Bearer {token}"),)
        )
        async for response in call:
            now = time.time()
            first = first or now
            occur = response.event.occur_time.ToDatetime(tzinfo=UTC)
            delays.append(_delay(occur, now))
            if response.event.kind == SENT:
                last_sent_at = max(last_sent_at, occur.timestamp())
            if len(delays) == wanted:
                call.cancel()
                break
    return {
        "events": len(delays),
        "called": called,
        "first": first,
        "last": time.time(),
        "delays": delays,
        "last_sent": last_sent_at,
    }


async def bare_events(nats_url: str, subject: str, stream: str, wanted: int, since: datetime) -> dict[str, Any]:
    """The same with nats-py alone: an ephemeral pull consumer without acks, each message's JSON decoded."""
    called = time.time()
    client = await nats.connect(nats_url)
    delays: list[float] = []
    first = 0.0
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe(
            subject,
            stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=since,
                mem_storage=True,
                inactive_threshold=30,
            ),
        )
        say_ready()
        while len(delays) < wanted:
            try:
                messages = await subscription.fetch(batch=256, timeout=5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            now = time.time()
            first = first or now
            for message in messages:
                for event in events.DELIVERY_EVENTS.decode(message.data).events:
                    delays.append(_delay(event.occur_time.ToDatetime(tzinfo=UTC), now))
        await subscription.unsubscribe()
    finally:
        await client.close()
    return {"events": len(delays), "called": called, "first": first, "last": time.time(), "delays": delays}


async def watch(target: str, token: str, campaign_id: int) -> dict[str, Any]:
    """WatchCampaign until it ends: the arrival time, status and sent count of each message."""
    received: list[tuple[float, int, int, bool]] = []
    async with grpc.aio.insecure_channel(target) as channel:
        call = campaign_pb2_grpc.CampaignServiceStub(channel).WatchCampaign(
            campaign_pb2.WatchCampaignRequest(campaign_id=campaign_id),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        async for progress in call:
            received.append((time.time(), progress.status, progress.statistics.total_sent, progress.heartbeat))
            if len(received) == 1:
                say_ready()
    return {"messages": received}


def say_ready() -> None:
    """Tells the run this client is connected and waiting (a line before the report)."""
    print("ready", flush=True)


def client_main(args: argparse.Namespace) -> None:
    since = datetime.fromtimestamp(args.since, UTC)
    if args.role == "grpc-events":
        result = asyncio.run(grpc_events(args.target, args.token, args.campaign, args.wanted, since))
    elif args.role == "bare-events":
        result = asyncio.run(bare_events(args.nats, args.subject, args.stream, args.wanted, since))
    else:
        result = asyncio.run(watch(args.target, args.token, args.campaign))
    print(json.dumps(result))


# --- the run -----------------------------------------------------------------------------------------------------


@dataclass
class Client:
    """A client process started by the run; its JSON report once it ended."""

    name: str
    process: subprocess.Popen[str]

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{self.name} client did not start: {line!r}")

    def report(self, timeout: float = 600) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=timeout)
        out = out.removeprefix("ready\n")
        if self.process.returncode != 0:
            raise RuntimeError(f"{self.name} client failed ({self.process.returncode})")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def start_client(name: str, *arguments: str) -> Client:
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    return Client(name, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True))


def delay_line(delays: list[float]) -> str:
    ordered = sorted(delays)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"delay p50 {statistics.median(ordered) * 1000:7.0f} ms  p95 {p95 * 1000:7.0f} ms  max {ordered[-1] * 1000:7.0f} ms"


def rate(result: dict[str, Any], since: float) -> float:
    return float(result["events"]) / (result["last"] - since)


def run(herald: Herald, recipients: int, csv: Path) -> None:
    user = json.loads(herald.cli("user", "create", "--username", "bench", "--password", "bench-password"))
    key, user_id = user["APIKey"], int(user["UserID"])
    token = herald.cli("token", "mint", "--user", str(user_id), "--ttl", "3600")
    list_id = legacy(herald, "list.create", APIKey=key, SubscriberListName="Benchmark")["ListID"]
    report = json.loads(herald.cli("subscribers", "import", "--list", str(list_id), str(csv)))
    if report["Imported"] != recipients:
        raise RuntimeError(f"expected {recipients} imported subscribers: {report}")
    campaign_id = immediate_campaign(herald, key, list_id, "Streams")
    subjects = Subjects(herald.env.get("HERALD_NATS_NAMESPACE", "herald"))
    subject = events.delivery_events_subject(subjects, user_id, campaign_id)
    nats_url = nats_url_of(herald)
    wanted = 2 * recipients  # queued and sent
    since = time.time()
    common = ["--campaign", str(campaign_id), "--token", token, "--since", str(since), "--wanted", str(wanted)]
    grpc_args = ["--role", "grpc-events", "--target", herald.target("delivery"), *common]
    bare_args = [
        "--role",
        "bare-events",
        "--nats",
        nats_url,
        "--subject",
        subject,
        "--stream",
        subjects.events_stream,
    ]
    bare_args += common
    live = [
        start_client("StreamDeliveryEvents", *grpc_args),
        start_client("bare JetStream consumer", *bare_args),
        start_client("WatchCampaign", "--role", "watch", "--target", herald.target("campaign"), *common),
    ]
    for client in live:
        client.wait_ready()  # connected and waiting: a Python process takes seconds to start on a busy machine
    ready_sent = time.time()
    legacy(herald, "campaign.update", APIKey=key, CampaignID=campaign_id, CampaignStatus="Ready")
    ready_answered = time.time()
    grpc_live, bare_live, watched = (client.report() for client in live)
    status = legacy(herald, "campaign.get", APIKey=key, CampaignID=campaign_id)["Campaign"]["CampaignStatus"]
    if status != "Sent":
        raise RuntimeError(f"the campaign is {status}")

    print(f"(a) live, during the send of {recipients:,} recipients ({wanted:,} events: queued and sent)")
    for name, result in (("StreamDeliveryEvents", grpc_live), ("bare JetStream consumer", bare_live)):
        print(
            f"    {name:<24} {result['events']:>7,} events  {rate(result, ready_sent):8,.0f} events/s from Ready  "
            + delay_line(result["delays"])
        )

    replay: dict[str, dict[str, Any]] = {}
    for name, arguments in (("StreamDeliveryEvents", grpc_args), ("bare JetStream consumer", bare_args)):
        replay[name] = start_client(name, *arguments).report()
    print("(b) replay of the stored events, one client at a time")
    for name, result in replay.items():
        print(
            f"    {name:<24} {result['events']:>7,} events  {rate(result, result['called']):8,.0f} events/s "
            f"(from the call; {result['events'] / (result['last'] - result['first']):,.0f} from the first event)"
        )
    ratio = rate(replay["StreamDeliveryEvents"], replay["StreamDeliveryEvents"]["called"]) / rate(
        replay["bare JetStream consumer"], replay["bare JetStream consumer"]["called"]
    )
    print(f"    StreamDeliveryEvents / bare consumer: {ratio:.0%}")

    messages = watched["messages"]
    changes = [m for m in messages if not m[3]]
    past_draft = next(m for m in changes if m[1] != campaign_pb2.CAMPAIGN_STATUS_DRAFT)
    sent = next(m for m in changes if m[1] == campaign_pb2.CAMPAIGN_STATUS_SENT)
    span = sent[0] - ready_sent
    print("(c) WatchCampaign during the send")
    print(
        f"    {len(messages)} messages ({len(changes)} changes, {len(messages) - len(changes)} heartbeats) "
        f"in {span:.1f} s from Ready to Sent: {len(changes) / span:.1f} updates/s"
    )
    print(
        f"    Ready answered -> first update past Draft: {(past_draft[0] - ready_answered) * 1000:.0f} ms; "
        f"last send -> Sent message: {(sent[0] - grpc_live['last_sent']) * 1000:.0f} ms"
    )
    sent_counts = [m[2] for m in changes]
    print(
        f"    total_sent as seen: {', '.join(f'{n:,}' for n in sent_counts[:12])}{' …' if len(sent_counts) > 12 else ''}"
    )


def nats_url_of(herald: Herald) -> str:
    """The embedded NATS's URL with its credentials (`herald run` keeps the password in the data folder)."""
    password = (herald.data_dir / "nats" / "password").read_text().strip()
    return f"nats://herald:{password}@127.0.0.1:{herald.env['HERALD_EMBEDDED_NATS_PORT']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20_000)
    # A client's arguments (the run starts its clients with them).
    parser.add_argument("--role", choices=("grpc-events", "bare-events", "watch"), help=argparse.SUPPRESS)
    for name in ("target", "token", "nats", "subject", "stream"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    for name in ("campaign", "wanted"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--since", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        client_main(args)
        return
    tools = postfix_tools()
    with tempfile.TemporaryDirectory(prefix="herald-streams-bench-") as tmp, SmtpSink(tools) as sink:
        csv = Path(tmp) / "subscribers.csv"
        write_csv(csv, args.recipients)
        print(f"{args.recipients:,} recipients, {os.cpu_count()} CPUs, sending into smtp-sink", flush=True)
        with running_herald({"SMTP_URL": f"smtp://127.0.0.1:{sink.port}"}) as herald:
            run(herald, args.recipients, csv)


if __name__ == "__main__":
    main()
