"""Audience benchmark: CountRecipients and StreamRecipients over a 1,000,000-subscriber list with a 100,000-address
exclusion list, each beside the same work done directly in PostgreSQL (`SELECT count(*)`, `COPY ... TO STDOUT`).

Run: `.venv/bin/python bench/audience.py` (options: --subscribers, --excluded, --repeat).
Prints each figure, the service/PostgreSQL ratio, and every process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import grpc
import psutil
import psycopg
from harness import postgres_processes, running_herald
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

# The same selection the service makes, written by hand: Subscribed rows of the included list whose
# address is neither in the excluded list nor suppressed, in subscriber id order.
DIRECT_WHERE = """
    FROM audience.subscribers t
    WHERE t.list_id = %(included)s AND t.status = 'Subscribed'
      AND NOT EXISTS (SELECT 1 FROM audience.subscribers x WHERE x.list_id = ANY(%(excluded)s) AND x.email_key = t.email_key)
      AND NOT EXISTS (SELECT 1 FROM audience.suppressions s
                      WHERE s.owner_user_id = t.owner_user_id AND s.email_key = t.email_key)
"""
DIRECT_COLUMNS = "t.subscriber_id, t.list_id, t.email_address, t.first_name, t.last_name, t.custom_fields"


def load_subscribers(conninfo: str, owner: int, list_id: int, start: int, count: int) -> None:
    """Benchmark fixture: rows are COPYed straight into audience.subscribers (the import path has its own
    benchmark); the service then reads them like any others."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        columns = (
            "list_id, owner_user_id, email_address, email_key, first_name, last_name, subscription_date, source"
        )
        with cursor.copy(f"COPY audience.subscribers ({columns}) FROM STDIN") as copy:
            for i in range(start, start + count):
                address = f"subscriber{i:07d}@example.com"
                copy.write_row(
                    (list_id, owner, address, address, f"First{i % 1000}", f"Last{i % 997}", now, "CSVImport")
                )
        conn.commit()
        conn.execute("ANALYZE audience.subscribers")
        conn.commit()


def peak_rss_mb(process: psutil.Process) -> float:
    """VmHWM: the most resident memory the process ever had."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return process.memory_info().rss / 2**20


async def timed(call: Callable[[], Awaitable[int]], repeat: int) -> tuple[list[float], int]:
    times: list[float] = []
    result = 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = await call()
        times.append(time.perf_counter() - started)
    return times, result


def describe(times: list[float]) -> str:
    return f"best {min(times) * 1000:8.1f} ms   median {statistics.median(times) * 1000:8.1f} ms"


async def run(args: argparse.Namespace) -> None:
    with running_herald() as herald:
        user = json.loads(herald.cli("user", "create", "--username", "bench", "--password", "bench-password"))
        token = herald.cli("token", "mint", "--user", str(user["UserID"]), "--ttl", "7200")
        metadata = (("authorization", f"Bearer {token}"),)
        conninfo = herald.processes()["audience"].environ()["DATABASE_URL"]
        options = [("grpc.max_receive_message_length", 64 * 2**20)]
        async with grpc.aio.insecure_channel(herald.target("audience"), options=options) as channel:
            stub = audience_pb2_grpc.AudienceServiceStub(channel)
            included = (
                await stub.CreateList(audience_pb2.CreateListRequest(name="Everyone"), metadata=metadata)
            ).list_id
            excluded = (
                await stub.CreateList(audience_pb2.CreateListRequest(name="Exclusions"), metadata=metadata)
            ).list_id
            started = time.perf_counter()
            load_subscribers(conninfo, user["UserID"], included, 0, args.subscribers)
            # The exclusion list: addresses spread over the included list.
            step = max(1, args.subscribers // args.excluded)
            with psycopg.connect(conninfo) as conn:
                conn.execute(
                    """INSERT INTO audience.subscribers (list_id, owner_user_id, email_address, email_key, source)
                       SELECT %s, owner_user_id, email_address, email_key, 'CSVImport' FROM audience.subscribers
                       WHERE list_id = %s AND subscriber_id %% %s = 0 LIMIT %s""",
                    (excluded, included, step, args.excluded),
                )
                conn.commit()
                conn.execute("ANALYZE audience.subscribers")
                conn.commit()
            print(
                f"fixture: {args.subscribers:,} subscribers + {args.excluded:,} exclusions in {time.perf_counter() - started:.1f} s"
            )

            count_request = audience_pb2.CountRecipientsRequest(
                included=[audience_pb2.ListSegment(list_id=included)],
                excluded=[audience_pb2.ListSegment(list_id=excluded)],
            )
            params = {"included": included, "excluded": [excluded]}

            async def grpc_count() -> int:
                return (await stub.CountRecipients(count_request, metadata=metadata)).total

            async def direct_count() -> int:
                async with await psycopg.AsyncConnection.connect(conninfo) as conn:
                    row = await (await conn.execute("SELECT count(*) " + DIRECT_WHERE, params)).fetchone()
                    assert row is not None
                    return int(row[0])

            service_times, service_total = await timed(grpc_count, args.repeat)
            direct_times, direct_total = await timed(direct_count, args.repeat)
            assert service_total == direct_total, (service_total, direct_total)
            print()
            print(f"CountRecipients ({args.subscribers:,} minus {args.excluded:,} = {service_total:,})")
            print(f"  gRPC CountRecipients      {describe(service_times)}")
            print(f"  PostgreSQL SELECT count(*) {describe(direct_times)}")
            print(f"  ratio service/PostgreSQL  x{min(service_times) / min(direct_times):.2f}")

            for label, excluded_lists in (("whole list", []), ("minus exclusions", [excluded])):
                targeting = audience_pb2.TargetingSpec(
                    included=[audience_pb2.ListSegment(list_id=included)],
                    excluded=[audience_pb2.ListSegment(list_id=e) for e in excluded_lists],
                )

                async def grpc_stream(targeting: audience_pb2.TargetingSpec = targeting) -> int:
                    received = 0
                    call = stub.StreamRecipients(
                        audience_pb2.StreamRecipientsRequest(targeting=targeting), metadata=metadata
                    )
                    async for chunk in call:
                        received += len(chunk.recipients)
                    return received

                async def direct_copy(excluded_lists: list[int] = excluded_lists) -> int:
                    sink = io.BytesIO()
                    query = f"COPY (SELECT {DIRECT_COLUMNS} {DIRECT_WHERE} ORDER BY t.subscriber_id) TO STDOUT"
                    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
                        cursor = conn.cursor()
                        async with cursor.copy(
                            query.replace("%(included)s", str(included)).replace(
                                "%(excluded)s", "ARRAY[" + ",".join(map(str, excluded_lists)) + "]::bigint[]"
                            )
                        ) as copy:
                            async for data in copy:
                                sink.write(data)
                    return sink.getvalue().count(b"\n")

                stream_times, streamed = await timed(grpc_stream, args.repeat)
                copy_times, copied = await timed(direct_copy, args.repeat)
                assert streamed == copied, (streamed, copied)
                best, best_copy = min(stream_times), min(copy_times)
                print()
                print(f"StreamRecipients, {label} ({streamed:,} recipients)")
                print(
                    f"  gRPC StreamRecipients     {describe(stream_times)}   {streamed / best:>10,.0f} recipients/s"
                )
                print(f"  PostgreSQL COPY TO STDOUT {describe(copy_times)}   {copied / best_copy:>10,.0f} rows/s")
                print(f"  ratio service/PostgreSQL  x{best / best_copy:.2f} (time)")

        print()
        print("peak RSS")
        for role, process in sorted(herald.processes().items()):
            print(f"  {role:<12} {peak_rss_mb(process):8.1f} MB")
        postgres = postgres_processes(herald)
        if postgres:
            print(
                f"  {'postgres':<12} {max(peak_rss_mb(p) for p in postgres):8.1f} MB (largest of {len(postgres)} processes)"
            )
        print(f"  {'bench client':<12} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--excluded", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
