"""SMTP ceilings of this machine: Postfix's smtp-source, a bare aiosmtplib loop and Herald's pool, each into smtp-sink.

    .venv/bin/python bench/smtp_ceiling.py [--messages 100000] [--connections 4] [--size 4096]

(a) smtp-source pushing the messages to smtp-sink over N reused sessions: the most this machine
    does over SMTP (C, event-driven, PIPELINING);
(b) a bare aiosmtplib loop over the same N connections: the most any Python sender does here;
(c) Herald's SmtpConnectionPool (services/delivery/smtp.py) with N connections: what the pool's
    bookkeeping and classification cost on top of (b).

Each run gets its own smtp-sink, whose counter confirms every message arrived. The Python
senders run on uvloop, as Herald's processes do. Each line also shows the CPU that the sender and
the sink spent per message: what sending and receiving alone cost on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.postfix import PostfixTools, SmtpSink, postfix_tools, run_source
from services.delivery.smtp import SmtpConnectionPool, SmtpTarget

SENDER = "bench@herald.test"
RECIPIENT = "sink@herald.test"


def message_of(size: int) -> bytes:
    """A plain message whose body is `size` bytes in 78-character lines (smtp-source's -l payload)."""
    line = b"X" * 76 + b"\r\n"
    body = (line * (size // len(line) + 1))[:size]
    headers = (
        f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: ceiling\r\nDate: {formatdate()}\r\n"
        f"Message-ID: {make_msgid(domain='herald.test')}\r\n\r\n"
    ).encode()
    return headers + body


async def bare_loop(port: int, messages: int, connections: int, content: bytes) -> None:
    """N aiosmtplib clients, each sending its share back to back over one session."""

    async def session(count: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench.test")
        await client.connect()
        for _ in range(count):
            await client.sendmail(SENDER, [RECIPIENT], content)
        await client.quit()

    shares = [messages // connections + (1 if i < messages % connections else 0) for i in range(connections)]
    await asyncio.gather(*(session(share) for share in shares))


async def through_pool(port: int, messages: int, connections: int, content: bytes) -> None:
    """Herald's pool with N connections; 2N tasks keep every connection busy."""
    remaining = messages
    target = SmtpTarget("127.0.0.1", port)
    async with SmtpConnectionPool(
        target, size=connections, max_messages_per_connection=10**9, local_hostname="bench.test"
    ) as pool:

        async def sender() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await pool.send(SENDER, RECIPIENT, content)

        await asyncio.gather(*(sender() for _ in range(2 * connections)))


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def timed_python(
    tools: PostfixTools, run: Callable[[int, int, int, bytes], Coroutine[Any, Any, None]], args: argparse.Namespace
) -> tuple[float, float, float]:
    """Runs a Python sender into a fresh smtp-sink: (seconds until the sink counted every message, the sender's
    CPU seconds, the sink's)."""
    content = message_of(args.size)
    with SmtpSink(tools) as sink:
        receiver = psutil.Process(sink.pid)
        sink_before, started, cpu_before = cpu_seconds(receiver), time.perf_counter(), time.process_time()
        uvloop.run(run(sink.port, args.messages, args.connections, content))
        if not sink.wait_for(args.messages, timeout=30):
            raise RuntimeError(f"smtp-sink counted {sink.messages} of {args.messages} messages")
        return (
            time.perf_counter() - started,
            time.process_time() - cpu_before,
            cpu_seconds(receiver) - sink_before,
        )


def per_message(cpu: float, sink_cpu: float, messages: int) -> str:
    return f"CPU per message: sender {cpu * 1e6 / messages:.0f} us, sink {sink_cpu * 1e6 / messages:.0f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size", type=int, default=4096, help="message body bytes (default 4096)")
    args = parser.parse_args()

    tools = postfix_tools()
    print(
        f"{args.messages} messages of {args.size} body bytes over {args.connections} connections, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    with SmtpSink(tools) as sink:
        receiver = psutil.Process(sink.pid)
        sink_before = cpu_seconds(receiver)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        source = run_source(tools, sink.port, messages=args.messages, connections=args.connections, size=args.size)
        if not sink.wait_for(args.messages, timeout=30):
            raise RuntimeError(f"smtp-sink counted {sink.messages} of {args.messages} messages")
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        source_cpu = children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
        source_sink_cpu = cpu_seconds(receiver) - sink_before
    print(
        f"(a) smtp-source -> smtp-sink:      {source.per_second:9.0f} msg/s  ({source.seconds:.2f} s; "
        f"{per_message(source_cpu, source_sink_cpu, args.messages)})",
        flush=True,
    )
    print(f"    {source.command}", flush=True)

    bare_seconds, bare_cpu, bare_sink_cpu = timed_python(tools, bare_loop, args)
    bare = args.messages / bare_seconds
    print(
        f"(b) bare aiosmtplib loop -> sink:   {bare:9.0f} msg/s  ({bare_seconds:.2f} s, "
        f"{bare / source.per_second:.0%} of smtp-source; {per_message(bare_cpu, bare_sink_cpu, args.messages)})",
        flush=True,
    )

    pool_seconds, pool_cpu, pool_sink_cpu = timed_python(tools, through_pool, args)
    pool = args.messages / pool_seconds
    print(
        f"(c) Herald SmtpConnectionPool:      {pool:9.0f} msg/s  ({pool_seconds:.2f} s, "
        f"{pool / bare:.0%} of the bare loop, {pool / source.per_second:.0%} of smtp-source; "
        f"{per_message(pool_cpu, pool_sink_cpu, args.messages)})",
        flush=True,
    )


if __name__ == "__main__":
    main()
