"""Legacy clients that call from an address of their own, and a second translator with settings of its own.

Per-address limits count the client's address; every test otherwise calls from 127.0.0.1, so a test
that spends an address's allowance calls from another loopback address (Linux routes all of
127.0.0.0/8 to the loopback interface) and leaves everyone else's alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from tests.conftest import ROOT, Api, System, free_port, stop_process, wait_healthy


@asynccontextmanager
async def api_from(base_url: str, address: str) -> AsyncIterator[Api]:
    """An Api whose connections come from `address` (a 127.x.y.z address)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Api(session, base_url)


@asynccontextmanager
async def own_translator(system: System, settings: dict[str, str]) -> AsyncIterator[str]:
    """`herald serve translator` on the test system's services and database, with extra settings;
    yields its base URL. Its in-memory counts (rate limits, login failures, metrics) are its own."""
    port = free_port()
    env = {**system.env, "HERALD_HTTP_PORT": str(port), **settings}
    process = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-m", "services.cli", "serve", "translator"], env=env, cwd=ROOT
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_healthy, base_url, process)
        yield base_url
    finally:
        await asyncio.to_thread(stop_process, process)
