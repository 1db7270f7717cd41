"""Per-credential request limits of legacy commands (100 requests per 60 s), kept in this process's memory.

With several translator replicas each counts on its own, so a client spreading its calls over N
replicas gets up to N times the limit; the legacy API documents the limit per server too.
"""

from __future__ import annotations

import math
import time
from collections import deque

# Above this many tracked credentials, those idle for longer than their window are forgotten.
_PRUNE_ABOVE = 50_000


class RateLimited(Exception):
    """The caller exceeded a command's limit; `retry_after` is the whole seconds until a slot frees up."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after} s")
        self.retry_after = retry_after


class RateLimiter:
    """A sliding window per key: the times of the calls admitted within the last window."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], tuple[float, deque[float]]] = {}

    def admit(self, key: tuple[str, str], limit: int, window: float, now: float | None = None) -> None:
        """Records a call, or raises RateLimited (without recording it) when the window is full."""
        moment = time.monotonic() if now is None else now
        entry = self._hits.get(key)
        if entry is None:
            if len(self._hits) > _PRUNE_ABOVE:
                self._prune(moment)
            entry = (window, deque())
            self._hits[key] = entry
        hits = entry[1]
        while hits and hits[0] <= moment - window:
            hits.popleft()
        if len(hits) >= limit:
            raise RateLimited(max(1, math.ceil(hits[0] + window - moment)))
        hits.append(moment)

    def _prune(self, moment: float) -> None:
        idle = [key for key, (window, hits) in self._hits.items() if not hits or hits[-1] <= moment - window]
        for key in idle:
            del self._hits[key]
