"""Request limits of legacy commands (100 requests per 60 s) and failed-login throttling, kept in this process's memory.

With several translator replicas each counts on its own, so a client spreading its calls over N
replicas gets up to N times the limit; the legacy API documents the limit per server too.
"""

from __future__ import annotations

import math
import time
from collections import deque

# Above this many tracked keys, those idle for longer than their window are forgotten.
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
        self.check(key, limit, window, moment)
        self.record(key, window, moment)

    def check(self, key: tuple[str, str], limit: int, window: float, now: float | None = None) -> None:
        """Raises RateLimited when the key's window already holds `limit` calls; records nothing."""
        moment = time.monotonic() if now is None else now
        entry = self._hits.get(key)
        if entry is None:
            return
        hits = entry[1]
        while hits and hits[0] <= moment - window:
            hits.popleft()
        if len(hits) >= limit:
            raise RateLimited(max(1, math.ceil(hits[0] + window - moment)))

    def record(self, key: tuple[str, str], window: float, now: float | None = None) -> None:
        """Counts one call (or failure) against the key."""
        moment = time.monotonic() if now is None else now
        entry = self._hits.get(key)
        if entry is None:
            if len(self._hits) > _PRUNE_ABOVE:
                self._prune(moment)
            entry = (window, deque())
            self._hits[key] = entry
        entry[1].append(moment)

    def forget(self, key: tuple[str, str]) -> None:
        self._hits.pop(key, None)

    def discard(self, key: tuple[str, str], moment: float) -> None:
        """Takes back one call recorded at `moment`."""
        entry = self._hits.get(key)
        if entry is not None and moment in entry[1]:
            entry[1].remove(moment)

    def _prune(self, moment: float) -> None:
        idle = [key for key, (window, hits) in self._hits.items() if not hits or hits[-1] <= moment - window]
        for key in idle:
            del self._hits[key]


class LoginThrottle:
    """Failed logins within a sliding window, counted per username and per client address.

    A username or address with too many recent failures is refused (RateLimited) before its
    password is looked at, whether the username exists or not and whether the password is right,
    so the refusal tells a guesser nothing. Refused attempts are not counted: waiting out the
    window always lets the right password in. `account` ("user" or "admin") keeps a user and an
    admin of the same name apart; the address count is shared by both logins.
    """

    def __init__(self, *, per_username: int, per_address: int, window: float) -> None:
        self._failures = RateLimiter()
        self._per_username = per_username
        self._per_address = per_address
        self._window = window

    def _keys(self, account: str, username: str, address: str) -> list[tuple[tuple[str, str], int]]:
        keys = [(("login address", address), self._per_address)]
        if username.strip():
            # Usernames are matched case-insensitively after trimming, so they are counted that way.
            keys.append(((f"{account} login", username.strip().lower()), self._per_username))
        return keys

    def attempt(self, account: str, username: str, address: str, now: float | None = None) -> float:
        """Counts an attempt as a failure until `succeeded` takes it back, and returns its moment.

        Counted before the password is checked, so concurrent guesses cannot all pass before the
        first failure is recorded. Raises RateLimited (counting nothing), with the longest wait of
        the full counts, when a count is already full.
        """
        moment = time.monotonic() if now is None else now
        keys = self._keys(account, username, address)
        waits = []
        for key, limit in keys:
            try:
                self._failures.check(key, limit, self._window, moment)
            except RateLimited as exc:
                waits.append(exc.retry_after)
        if waits:
            raise RateLimited(max(waits))
        for key, _ in keys:
            self._failures.record(key, self._window, moment)
        return moment

    def withdraw(self, account: str, username: str, address: str, moment: float) -> None:
        """Takes back the attempt made at `moment` (it succeeded, or could not be checked at all)."""
        for key, _ in self._keys(account, username, address):
            self._failures.discard(key, moment)

    def succeeded(self, account: str, username: str, address: str, moment: float) -> None:
        """Takes back the attempt made at `moment` and clears the username's earlier failures (not the
        address's: a guesser who owns one account must not reset an address's count by logging in)."""
        self.withdraw(account, username, address, moment)
        if username.strip():
            self._failures.forget((f"{account} login", username.strip().lower()))
