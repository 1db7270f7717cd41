"""Group commit: items handed in by many concurrent SMTP sessions are written together, as few writes as the load allows.

The mail capture writes captured messages with it (one INSERT per group), the bounce receiver its
reports (one RecordBounces call per group). Whoever hands an item in waits until the write that
carried it succeeded, or gets the write's exception: a session answers 250 only for what was written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Collects items from every session; while one write runs, the next group gathers (at most `max_items`)."""

    def __init__(
        self, write: Callable[[Sequence[T]], Awaitable[object]], max_items: int = 500, linger: float = 0.0
    ) -> None:
        self._write = write
        self._max_items = max_items
        # Before each write, wait up to this many seconds for more items (unless `max_items` are waiting):
        # fewer, larger writes when each write costs much more than an item in it.
        self._linger = linger
        self._full: asyncio.Event | None = None
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def store(self, item: T) -> None:
        """Returns once the item is written; raises what the write raised."""
        await self.store_all([item])

    async def store_all(self, items: Sequence[T]) -> None:
        """Returns once every item is written; raises what a failed write raised (after all were settled)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for item in items:
            done: asyncio.Future[None] = loop.create_future()
            self._waiting.append((item, done))
            futures.append(done)
        if not futures:
            return
        if self._full is not None and len(self._waiting) >= self._max_items:
            self._full.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting())
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _write_waiting(self) -> None:
        while self._waiting:
            if self._linger and len(self._waiting) < self._max_items:
                self._full = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._linger)
                self._full = None
            batch, self._waiting = self._waiting[: self._max_items], self._waiting[self._max_items :]
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:
                # Every session waiting on this write answers 451 and its client tries again.
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def drain(self) -> None:
        """Waits until every item handed in so far is written (or has failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
