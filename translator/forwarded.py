"""The address of the client behind a request: the peer, or what trusted proxies say in X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies (HERALD_TRUSTED_PROXIES: addresses or CIDR blocks, comma-separated) whose
    X-Forwarded-For is believed; nobody's is by default, so a client cannot pick its own address."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self._networks = tuple(networks)

    @classmethod
    def parse(cls, setting: str) -> TrustedProxies:
        """Raises ValueError naming an entry that is no address or CIDR block."""
        networks = []
        for entry in (part.strip() for part in setting.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(f"HERALD_TRUSTED_PROXIES: {entry!r} is no IP address or CIDR block") from exc
        return cls(networks)

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The peer when it is not a trusted proxy; otherwise the nearest X-Forwarded-For hop (read
        from the right, as each proxy appends the address it saw) that is not a trusted proxy.

        A hop that is no IP address ends the walk at the last trusted one: what lies to its left
        was written by someone no trusted proxy vouches for.
        """
        client = peer
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        while self.trusts(client) and hops:
            hop = hops.pop()
            try:
                client = str(ipaddress.ip_address(hop))
            except ValueError:
                break
        return client
