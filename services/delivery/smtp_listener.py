"""The mail capture's aiosmtpd listener, whose close waits until what its sessions handed in is written, and
the listen backlog of Herald's SMTP servers (the bounce receiver has its own server, smtp_server.py)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from aiosmtpd.smtp import SMTP

# Connections the kernel holds for the listener before it accepts them. asyncio's default, 100, drops the
# connection attempts of a burst beyond it, and their senders try again only seconds later (bench/bounces.py
# with 300 connections at once: greeting timeouts); bounces arrive in bursts after a campaign.
LISTEN_BACKLOG = 1024
# aiosmtpd's own default: an idle session is closed after five minutes.
SESSION_TIMEOUT_SECONDS = 300.0


def smtp_session(
    handler: object,
    *,
    hostname: str,
    ident: str,
    max_message_bytes: int,
) -> SMTP:
    """One connection's SMTP session as the capture speaks it: SMTPUTF8 offered, messages kept as bytes
    (bigger than `max_message_bytes`: 552)."""
    return SMTP(
        handler,
        hostname=hostname,
        ident=ident,
        data_size_limit=max_message_bytes,
        enable_SMTPUTF8=True,
        decode_data=False,
        timeout=SESSION_TIMEOUT_SECONDS,
        loop=asyncio.get_running_loop(),
    )


class SmtpListener(ABC):
    """Listens on host:port with a new session per connection. A server says how a session is made
    (`_session`) and what close waits for once it stopped accepting (`_drain`)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @abstractmethod
    def _session(self) -> SMTP:
        """A new SMTP session for one connection."""

    @abstractmethod
    async def _drain(self) -> None:
        """Waits until what the sessions handed in is written."""

    async def start(self) -> int:
        """Starts listening; returns the port (the one chosen by the system when `port` was 0)."""
        self._server = await asyncio.get_running_loop().create_server(
            self._session, self.host, self.port, backlog=LISTEN_BACKLOG
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stops accepting connections and waits for what the sessions already handed in to be written."""
        if self._server is not None:
            self._server.close()
        await self._drain()
