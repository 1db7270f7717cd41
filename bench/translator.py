"""Translator benchmark: campaign.get and campaigns.get through the legacy HTTP translator vs the same calls
straight to the campaign service over gRPC, 64 concurrent clients, 10,000 campaigns in the account.

Run: `make bench` (or `.venv/bin/python bench/translator.py --seconds 10 --concurrency 64 --campaigns 10000`).
Prints requests/s, p50 and p99 for each, the translator/gRPC ratios, each process's memory, and the
CPU time each process spent per request in each phase (user + system, from psutil): a figure that
other load on the machine disturbs far less than requests/s, for comparing two versions of Herald.
Both sides are first driven by Python clients (aiohttp and grpc.aio) in this process, which is the
like-for-like comparison for the ratios; the translator is then driven by wrk (bench/wrk.py), whose
load costs the 2-core machine far less CPU, for what the translator itself sustains.
"""

from __future__ import annotations

import os

# The benchmark's own gRPC clients use the setting every Herald process runs with (services/cli.py),
# so that the direct calls get the same gRPC as the translator's. gRPC reads it when it loads.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

import argparse
import asyncio
import json
import random
import subprocess
from typing import Any

import aiohttp
import grpc
import psutil
from harness import Result, drive, postgres_processes, running_herald
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc

from bench.wrk import run_wrk, wrk_tool

CPU_ROLES = ("translator", "campaign", "postgres")


def cpu_seconds(herald: Any) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) used so far by each translator, campaign and PostgreSQL process, by pid."""
    processes = [(role, process) for role, process in herald.processes().items() if role in CPU_ROLES]
    processes += [("postgres", process) for process in postgres_processes(herald)]
    used: dict[int, tuple[str, float]] = {}
    for role, process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        used[process.pid] = (role, times.user + times.system)
    return used


def cpu_line(
    name: str, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], requests: int
) -> str:
    """CPU ms per request of each role in a phase: processes that ended during it (a PostgreSQL backend
    closed by a pool) are left out, so the figures are lower bounds."""
    spent = dict.fromkeys(CPU_ROLES, 0.0)
    for pid, (role, seconds) in after.items():
        spent[role] += seconds - before.get(pid, (role, 0.0))[1]
    per = {role: spent[role] / max(requests, 1) * 1000 for role in CPU_ROLES}
    parts = "   ".join(f"{role} {per[role]:.3f}" for role in CPU_ROLES)
    return f"{name:<40} CPU ms/request   {parts}   sum {sum(per.values()):.3f}"


async def seed_campaigns(target: str, metadata: tuple[tuple[str, str], ...], count: int) -> list[int]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        ids: list[int] = []
        semaphore = asyncio.Semaphore(64)

        async def create(i: int) -> None:
            async with semaphore:
                campaign = await stub.CreateCampaign(
                    campaign_pb2.CreateCampaignRequest(name=f"Benchmark campaign {i:05d}"), metadata=metadata
                )
                ids.append(campaign.campaign_id)

        await asyncio.gather(*(create(i) for i in range(count)))
        return sorted(ids)


async def run(args: argparse.Namespace) -> None:
    with running_herald() as herald:
        user = json.loads(herald.cli("user", "create", "--username", "bench", "--password", "bench"))
        token = herald.cli("token", "mint", "--user", str(user["UserID"]), "--ttl", "7200")
        metadata = (("authorization", f"Bearer {token}"),)
        ids = await seed_campaigns(herald.target("campaign"), metadata, args.campaigns)
        print(f"seeded {len(ids)} campaigns", flush=True)
        rng = random.Random(7)
        pages = max(1, len(ids) // 50)
        url = herald.base_url + "/api.php"
        results: list[Result] = []
        cpu_lines: list[str] = []

        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            grpc.aio.insecure_channel(herald.target("campaign")) as channel,
        ):
            stub = campaign_pb2_grpc.CampaignServiceStub(channel)

            async def legacy(body: dict[str, Any]) -> bool:
                async with http.post(url, json=body) as response:
                    answer = await response.json()
                    return response.status == 200 and answer["Success"] is True

            async def legacy_get(i: int) -> bool:
                return await legacy(
                    {"Command": "campaign.get", "APIKey": user["APIKey"], "CampaignID": rng.choice(ids)}
                )

            async def grpc_get(i: int) -> bool:
                await stub.GetCampaign(
                    campaign_pb2.GetCampaignRequest(campaign_id=rng.choice(ids)), metadata=metadata
                )
                return True

            async def legacy_list(i: int) -> bool:
                return await legacy(
                    {
                        "Command": "campaigns.get",
                        "APIKey": user["APIKey"],
                        "RecordsPerRequest": 50,
                        "RecordsFrom": rng.randrange(pages) * 50,
                        "RetrieveStatistics": False,
                    }
                )

            async def grpc_list(i: int) -> bool:
                await stub.ListCampaigns(
                    campaign_pb2.ListCampaignsRequest(page_size=50, skip=rng.randrange(pages) * 50),
                    metadata=metadata,
                )
                return True

            for name, call in (
                ("campaign.get  via translator", legacy_get),
                ("GetCampaign   direct gRPC", grpc_get),
                ("campaigns.get via translator (50)", legacy_list),
                ("ListCampaigns direct gRPC (50)", grpc_list),
            ):
                cpu_before = cpu_seconds(herald)
                result = await drive(name, call, concurrency=args.concurrency, seconds=args.seconds)
                cpu_lines.append(cpu_line(name, cpu_before, cpu_seconds(herald), len(result.latencies)))
                results.append(result)
                print(result.line(), flush=True)

        print()
        print("the same through the translator, driven by wrk (C) instead of a Python client:", flush=True)
        try:
            tool = wrk_tool()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            print(f"    wrk is not available here ({exc}); skipped")
        else:
            gets = [
                json.dumps({"Command": "campaign.get", "APIKey": user["APIKey"], "CampaignID": campaign_id})
                for campaign_id in ids
            ]
            lists = [
                json.dumps(
                    {
                        "Command": "campaigns.get",
                        "APIKey": user["APIKey"],
                        "RecordsPerRequest": 50,
                        "RecordsFrom": page * 50,
                        "RetrieveStatistics": False,
                    }
                )
                for page in range(pages)
            ]
            for name, bodies in (
                ("campaign.get  via translator, wrk", gets),
                ("campaigns.get via translator, wrk (50)", lists),
            ):
                cpu_before = cpu_seconds(herald)
                measured = run_wrk(tool, name, url, bodies, connections=args.concurrency, seconds=args.seconds)
                requests = round(measured.rps * args.seconds)
                cpu_lines.append(cpu_line(name, cpu_before, cpu_seconds(herald), requests))
                print(measured.line(), flush=True)

        print()
        for translator, direct in ((results[0], results[1]), (results[2], results[3])):
            print(
                f"{translator.name.split()[0]:<14} translator/gRPC: throughput x{translator.rps / direct.rps:.2f}, "
                f"p50 x{translator.percentile(50) / direct.percentile(50):.2f}, "
                f"p99 x{translator.percentile(99) / direct.percentile(99):.2f}"
            )
        print()
        for line in cpu_lines:
            print(line)
        print()
        for role, process in sorted(herald.processes().items()):
            print(f"{role:<12} RSS {process.memory_info().rss / 2**20:7.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--campaigns", type=int, default=10_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
