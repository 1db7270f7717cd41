"""Guards for server-side fetches of user-given URLs: only public addresses, checked by the resolver itself.

A name is checked by the resolver the connection uses, so it cannot pass a check and then connect to
another (private) address. HERALD_ALLOW_PRIVATE_URLS lets operators fetch from their own network.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(OSError):
    """A host resolved to an address the operator does not allow server-side fetches from."""


def address_allowed(address: IPAddress, *, allow_private: bool) -> bool:
    """Whether a server-side fetch may reach this address: public unicast only, unless private ones are allowed."""
    if allow_private:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, refusing any name with an address a fetch may not reach."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                address = ipaddress.ip_address(result["host"])
            except ValueError as exc:
                raise AddressRefused(f"{host} resolves to an unreadable address {result['host']!r}") from exc
            if not address_allowed(address, allow_private=self._allow_private):
                raise AddressRefused(f"{host} resolves to the non-public address {address}")
        return results

    async def close(self) -> None:
        await self._inner.close()
