"""Chaos run: a 100,000-recipient campaign while a random delivery worker is killed with SIGKILL every 2 s.

    .venv/bin/python bench/chaos.py [--recipients 100000] [--workers 2] [--every 2] [--greylisted-percent 30]

With `--greylisted-percent P` the recorder greylists P% of the addresses ("450 4.2.0 … Greylisted" to their first
RCPT TO, as Postfix with postgrey answers) and workers keep being killed while their retries run, until the
campaign is Sent and no recipient is Deferred any more (the first retry comes after 5 s: `--env
HERALD_DELIVERY_RETRY_INTERVALS=…` changes it).

Herald sends to a small SMTP recorder of this script's own, in its own process, that writes the
recipient of every message it accepted (answered 250, on a connection still open) to a file.
After the campaign is Sent the script prints:

- lost: subscribers who received nothing and whose queue row does not say so (must be 0);
- duplicated: subscribers who received more than one message (must be 0);
- ambiguous: rows a killed worker had claimed but not confirmed, which Herald marks Failed with an
  "ambiguous" reason instead of resending (must be at most the rows the killed workers had claimed: a window
  per batch lane and one of due retries each),
  and how many of them did reach the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import psutil
from harness import ROOT, Herald, free_port, running_herald
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from bench.deferred import greylisted
from bench.delivery import immediate_campaign, legacy, write_csv
from services.common.config import Settings

# --- the recorder (runs as `chaos.py --serve-recorder PORT FILE`) -------------------------------------------


def serve_recorder(port: int, path: Path, greylisted_percent: float) -> None:
    """An SMTP server that appends the recipients of every accepted message to `path`, until SIGTERM; it refuses
    the first RCPT TO of `greylisted_percent` of the addresses with a 450."""
    import uvloop
    from aiosmtpd.smtp import SMTP, Envelope, Session

    async def serve() -> None:
        out = path.open("a", buffering=1 << 16)
        stop = asyncio.Event()
        tried: set[str] = set()

        class Handler:
            async def handle_RCPT(
                self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
            ) -> str:
                address = address.lower()
                if address not in tried:
                    tried.add(address)
                    if greylisted(address, greylisted_percent):
                        return (
                            "450 4.2.0 <" + address + ">: Recipient address rejected: Greylisted, try again later"
                        )
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"

            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                if server.transport is None or server.transport.is_closing():
                    return "451 4.4.2 Connection lost before the message was accepted"
                out.write("".join(f"{address.lower()}\n" for address in envelope.rcpt_tos))
                return "250 2.0.0 OK"

        handler = Handler()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="chaos-recorder", ident="chaos recorder"),
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

    logging_off()
    uvloop.run(serve())


def logging_off() -> None:
    import logging

    # aiosmtpd logs every command at INFO.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


class Recorder:
    """The recorder process: start, stop (which flushes), and count what it accepted per address."""

    def __init__(self, directory: Path, greylisted_percent: float) -> None:
        self.port = free_port()
        self.path = directory / "accepted.txt"
        self.path.touch()
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-recorder",
                str(self.port),
                str(self.path),
                str(greylisted_percent),
            ],
            cwd=ROOT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the recorder did not start") from None
                time.sleep(0.05)

    def stop(self) -> Counter[str]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        with self.path.open() as lines:
            return Counter(line.strip() for line in lines if line.strip())


# --- the run -------------------------------------------------------------------------------------------------


def workers_of(herald: Herald) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(herald.process.pid).children(recursive=True):
        try:
            if " ".join(child.cmdline()).endswith("serve delivery-worker"):
                found.append(child)
        except psutil.Error:
            continue
    return found


async def failed_rows(herald: Herald, user_id: int, campaign_id: int) -> list[delivery_pb2.QueuedRecipient]:
    # ListQueuedRecipients is internal to Herald's services and admins.
    admin = json.loads(herald.cli("admin", "create", "--username", "chaos-admin", "--password", "chaos-password"))
    token = herald.cli("token", "mint", "--admin", str(admin["AdminID"]))
    rows: list[delivery_pb2.QueuedRecipient] = []
    after = 0
    async with grpc.aio.insecure_channel(herald.target("delivery")) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        while True:
            page = await stub.ListQueuedRecipients(
                delivery_pb2.ListQueuedRecipientsRequest(
                    campaign_id=campaign_id,
                    state=delivery_pb2.RECIPIENT_STATE_FAILED,
                    page_size=500,
                    after_recipient_id=after,
                ),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            if not page.recipients:
                return rows
            rows.extend(page.recipients)
            after = page.recipients[-1].recipient_id


def run(args: argparse.Namespace) -> int:
    extra_env = dict(item.split("=", 1) for item in args.env)
    settings = Settings()
    concurrency = int(extra_env.get("HERALD_DELIVERY_CONCURRENCY") or settings.delivery_concurrency)
    lanes = max(int(extra_env.get("HERALD_DELIVERY_PARALLEL_BATCHES") or settings.delivery_parallel_batches), 1)
    # A worker claims a window per batch lane and one for due retries: that many rows may be unconfirmed.
    in_flight_per_worker = concurrency + -(-concurrency // lanes)
    with tempfile.TemporaryDirectory(prefix="herald-chaos-") as tmp:
        recorder = Recorder(Path(tmp), args.greylisted_percent)
        env = {
            "SMTP_URL": f"smtp://127.0.0.1:{recorder.port}",
            "HERALD_DELIVERY_WORKERS": str(args.workers),
            "HERALD_DELIVERY_RETRY_INTERVALS": "5",
            **extra_env,
        }
        try:
            with running_herald(env) as herald:
                csv = Path(tmp) / "subscribers.csv"
                write_csv(csv, args.recipients)
                user = json.loads(
                    herald.cli("user", "create", "--username", "chaos", "--password", "chaos-password")
                )
                key = user["APIKey"]
                list_id = legacy(herald, "list.create", APIKey=key, SubscriberListName="Chaos")["ListID"]
                report = json.loads(herald.cli("subscribers", "import", "--list", str(list_id), str(csv)))
                assert report["Imported"] == args.recipients, report
                campaign_id = immediate_campaign(herald, key, list_id, "Chaos")
                started = time.perf_counter()
                legacy(herald, "campaign.update", APIKey=key, CampaignID=campaign_id, CampaignStatus="Ready")
                kills: list[int] = []
                next_kill = time.monotonic() + args.every
                status, deferred = "Ready", 0
                sent_after: float | None = None
                while True:
                    body = legacy(
                        herald, "campaign.get", APIKey=key, CampaignID=campaign_id, RetrieveStatistics=True
                    )
                    status, deferred = body["Campaign"]["CampaignStatus"], int(body["Campaign"]["TotalDeferred"])
                    if status in ("Sent", "Failed", "Cancelled") and sent_after is None:
                        sent_after = time.perf_counter() - started
                    if status in ("Sent", "Failed", "Cancelled") and not deferred:
                        break
                    if time.perf_counter() - started > args.timeout:
                        raise RuntimeError(
                            f"the campaign is still {status} with {deferred} deferred after {args.timeout} s"
                        )
                    if (status == "Sending" or deferred) and time.monotonic() >= next_kill:
                        alive = workers_of(herald)
                        if alive:
                            victim = random.choice(alive)
                            os.kill(victim.pid, signal.SIGKILL)
                            kills.append(victim.pid)
                        next_kill = time.monotonic() + args.every
                    time.sleep(0.1)
                seconds = time.perf_counter() - started
                statistics = legacy(
                    herald, "campaign.get", APIKey=key, CampaignID=campaign_id, RetrieveStatistics=True
                )["Campaign"]
                failed = asyncio.run(failed_rows(herald, user["UserID"], campaign_id))
        finally:
            received = recorder.stop()

    addresses = [f"reader{i}@example{i % 97}.com" for i in range(args.recipients)]
    ambiguous = {row.email_address.lower() for row in failed if "ambiguous" in row.last_error}
    other_failed = {
        row.email_address.lower(): row.last_error for row in failed if "ambiguous" not in row.last_error
    }
    lost = [a for a in addresses if received[a] == 0 and a not in ambiguous and a not in other_failed]
    duplicated = [a for a in addresses if received[a] > 1]
    delivered_ambiguous = sum(1 for a in ambiguous if received[a] == 1)
    bound = len(kills) * in_flight_per_worker

    print(
        f"campaign {status} after {sent_after or seconds:.1f} s, nothing deferred after {seconds:.1f} s; "
        f"{len(kills)} workers killed (one every {args.every} s)"
    )
    print(
        "statistics: "
        + ", ".join(
            f"{k} {statistics[k]:,}" for k in ("TotalRecipients", "TotalSent", "TotalFailed", "TotalDeferred")
        )
    )
    if args.greylisted_percent:
        grey = sum(1 for a in addresses if greylisted(a, args.greylisted_percent))
        print(f"greylisted once: {grey:,} addresses ({args.greylisted_percent:g}%)")
    print(f"messages accepted by the recorder: {sum(received.values()):,} to {len(received):,} addresses")
    print(f"lost:       {len(lost):>7,}   (must be 0){'   e.g. ' + ', '.join(lost[:5]) if lost else ''}")
    print(
        f"duplicated: {len(duplicated):>7,}   (must be 0){'   e.g. ' + ', '.join(duplicated[:5]) if duplicated else ''}"
    )
    print(
        f"ambiguous:  {len(ambiguous):>7,}   (at most {bound:,} = {len(kills)} kills x {in_flight_per_worker} "
        f"claimed rows per worker); {delivered_ambiguous:,} of them had reached the server, "
        "every one is Failed with an 'ambiguous' reason in ListQueuedRecipients"
    )
    if other_failed:
        print(f"other failures: {len(other_failed):,}, e.g. {next(iter(other_failed.items()))}")
    ok = not lost and not duplicated and len(ambiguous) <= bound and status == "Sent" and not deferred
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-recorder":
        serve_recorder(int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between kills (default 2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument(
        "--greylisted-percent", type=float, default=0.0, help="share of addresses greylisted once (default 0)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for Herald; repeatable"
    )
    raise SystemExit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
