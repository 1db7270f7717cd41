"""Fetches an import's CSV from the URL its caller gave: http(s) only, bounded in time and size, public addresses only.

The URL is the caller's choice and the fetched text shows up in the import report (rejected rows
quote it), so the fetch must not reach internal hosts: every address a name resolves to is checked
by the resolver the connection uses, as is every redirect's target. Operators who import from
their own network allow private addresses with HERALD_ALLOW_PRIVATE_URLS (the one switch for
server-side fetches of user-given URLs).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import IO

import aiohttp
from aiohttp import hdrs
from yarl import URL

from services.common.urlguard import GuardedResolver, address_allowed

FETCH_TIMEOUT_SECONDS = 30.0
MAX_SOURCE_BYTES = 200 * 1024 * 1024
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchFailed(Exception):
    """The source could not be fetched; the message says why (it is shown to the caller)."""


def check_target(url: URL, *, allow_private: bool) -> None:
    """Refuses a URL that is not absolute http(s), or that names a refused address literally."""
    if url.scheme not in ("http", "https") or not url.host:
        raise FetchFailed(f"not an absolute http or https URL: {url}")
    try:
        address = ipaddress.ip_address(url.host)
    except ValueError:
        return
    if not address_allowed(address, allow_private=allow_private):
        raise FetchFailed(f"the non-public address {address} is not allowed")


async def fetch_source(url: str, sink: IO[bytes], *, allow_private: bool) -> int:
    """Writes the body at `url` into `sink` and returns its size; FetchFailed when that is not possible."""
    try:
        target = URL(url)
    except ValueError as exc:
        raise FetchFailed(f"not a URL: {exc}") from exc
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=allow_private), limit=4)
    try:
        async with (
            asyncio.timeout(FETCH_TIMEOUT_SECONDS),
            aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={hdrs.USER_AGENT: "Herald-Import/1"},
            ) as session,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                check_target(target, allow_private=allow_private)
                async with session.get(target, allow_redirects=False) as response:
                    if response.status in _REDIRECTS:
                        location = response.headers.get(hdrs.LOCATION)
                        if not location:
                            raise FetchFailed(f"redirect without a Location from {target}")
                        target = target.join(URL(location))
                        continue
                    if response.status != 200:
                        raise FetchFailed(f"HTTP status {response.status} from {target}")
                    if response.content_length is not None and response.content_length > MAX_SOURCE_BYTES:
                        raise FetchFailed(f"{response.content_length} bytes is more than {MAX_SOURCE_BYTES}")
                    size = 0
                    # Counted after decompression, so a small compressed body cannot grow past the cap.
                    async for piece in response.content.iter_chunked(256 * 1024):
                        size += len(piece)
                        if size > MAX_SOURCE_BYTES:
                            raise FetchFailed(f"more than {MAX_SOURCE_BYTES} bytes")
                        sink.write(piece)
                    return size
            raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError as exc:
        raise FetchFailed(f"no complete answer within {FETCH_TIMEOUT_SECONDS:.0f} s") from exc
    except (aiohttp.ClientError, ValueError, UnicodeError, OSError) as exc:
        raise FetchFailed(f"{type(exc).__name__}: {exc}") from exc
