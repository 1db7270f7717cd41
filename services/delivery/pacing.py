"""One pace for the whole fleet of delivery workers: shared token buckets in PostgreSQL, leased a slice at a time.

Every limit is a token bucket, one row of `delivery.pacing_buckets` (migration 0018):

- `all`: HERALD_DELIVERY_RATE_PER_SECOND, every message;
- `campaign:<id>`: HERALD_DELIVERY_CAMPAIGN_RATE_PER_SECOND, each campaign's messages;
- `relay:<name>`: a relay's rate (the `rate=` of its SMTP_URL entry), the messages sent through it;
- `domain:<domain>[+<domain>...]`: HERALD_DELIVERY_DOMAIN_RATES, the messages to a recipient domain or group;
- `warmup:<domain>:<day>`: HERALD_DELIVERY_WARMUP, the day's volume of a sending (From) domain (no refill).

A worker never makes a round trip per message. It asks for tokens only when it has none of that bucket, for
as many as the sends waiting for one right now (at most SLICE_SECONDS of the rate): the sends that one window
of a batch starts together share one statement, which refills every bucket they need from the database's
clock and takes the tokens (FOR UPDATE in key order: two workers never deadlock). Tokens a worker holds expire
after LEASE_SECONDS, and a bucket holds at most BURST_SECONDS of its rate, so that the fleet's pace over any
window exceeds the rate by at most about (BURST_SECONDS + LEASE_SECONDS) of it. With no limit configured and no
domain that asked to slow down, `admit` returns at once and nothing is read or written.

What a send without a token does depends on the limit:

- overall, campaign and relay limits hold every send alike: the send waits for its token;
- a domain's limit (or a warm-up's) must not hold back the other domains: the send does not happen, and
  `admit` says how long until that bucket expects a token. The worker sets the recipient aside (back to
  Pending, no attempt counted) and goes on with the batch's other recipients; when only set-aside ones are
  left, the batch message comes back (a nak with a delay) when their turn is expected (`come_back_after`,
  which books the set-aside recipients on the bucket's `reserved_until`).

Adaptation: a reply that means "slow down" (`slows_down`) halves the domain's rate (at most once per
CUT_COOLDOWN_SECONDS across the fleet, down to HERALD_DELIVERY_PACING_MIN_RATE); a domain without a
configured rate gets a bucket then, whose ceiling is the pace this worker saw for it. After each
HERALD_DELIVERY_PACING_RECOVERY_SECONDS with deliveries and no slow-down, the rate grows by RECOVERY_STEP of
its ceiling, at least the floor (a configured domain's rate, or that observed pace, at least
UNCONFIGURED_MIN_CEILING times the floor; an unconfigured domain back at its ceiling
loses its bucket and is unlimited again). Each change is made by one statement of one worker, which logs it
and counts it (herald_delivery_pacing_rate_changes_total). The per-batch deferral of the rest of a throttling
domain's recipients (retries.DomainDeferrals) still applies on top: those recipients are deferred untried.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
import structlog
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import db
from services.common.config import Settings
from services.common.pacing_config import DomainRate, Warmup, parse_domain_rates, parse_warmup

log = structlog.get_logger()
P = ParamSpec("P")
T = TypeVar("T")

# A lease takes at most this many seconds of a bucket's rate; a bucket holds at most BURST_SECONDS of it.
SLICE_SECONDS = 0.2
BURST_SECONDS = 0.2
# Leased tokens not used within this long are dropped (never a burst later).
LEASE_SECONDS = 0.25
# A "slow down" cuts the rate by this factor, at most once per cooldown across the fleet (the replies to one
# burst of sends arrive together); recovery adds this share of the ceiling per step.
CUT_FACTOR = 0.5
CUT_COOLDOWN_SECONDS = 2.0
RECOVERY_STEP = 0.1
# An unconfigured domain's ceiling is the pace this worker saw it at, but at least this many times the floor: a
# domain seen only a few times (the rest of its batch deferred untried) is not left crawling at the floor.
UNCONFIGURED_MIN_CEILING = 10.0
# How often a worker reads which unconfigured domains are paced, and writes recoveries.
REFRESH_SECONDS = 1.0
# The pace seen per domain is counted over windows of this many seconds.
PACE_WINDOW_SECONDS = 5.0
# A batch message whose recipients were set aside comes back after at least this long, and at most this long (a
# warm-up's recipients over the day's volume: after the next UTC midnight).
MIN_COME_BACK_SECONDS = 0.05
MAX_COME_BACK_SECONDS = 90_000.0
# Buckets untouched for this long are deleted (yesterday's warm-up, a finished campaign's), every CLEANUP_SECONDS.
STALE_BUCKET_SECONDS = 2 * 86_400
CLEANUP_SECONDS = 600.0
# A recipient set aside for at least this long (a warm-up's day used up) holds its whole batch.
LONG_WAIT_SECONDS = 60.0
# After a database error, buckets count as empty for this long.
ERROR_BACKOFF_SECONDS = 1.0

RATE_CHANGES_TOTAL = Counter(
    "herald_delivery_pacing_rate_changes_total",
    "Changes of a domain's shared rate made by this worker: down after a slow-down reply, up while it recovers",
    ["direction"],
)
SLOW_DOWN_REPLIES_TOTAL = Counter(
    "herald_delivery_pacing_slow_down_replies_total", "SMTP replies read as 'slow down' (421, 4.7.x, rate texts)"
)
SET_ASIDE_TOTAL = Counter(
    "herald_delivery_pacing_set_aside_total",
    "Recipients set aside (back to the queue, no attempt counted) for want of a domain's or a warm-up's token",
    ["limit"],
)
LEASES_TOTAL = Counter(
    "herald_delivery_pacing_leases_total", "Statements that leased tokens from the shared buckets"
)

# --- what a reply means -------------------------------------------------------------------------------------

_ENHANCED_47 = re.compile(r"\b4\.7\.\d{1,3}\b")
_RATE_TEXT = re.compile(
    r"\brate\b|rate.?limit|too many|try (?:again )?later|throttl|slow down|exceeded", re.IGNORECASE
)


def slows_down(code: int | None, text: str) -> bool:
    """Whether a reply asks the sender to slow down: 421 (service closing), an enhanced code 4.7.x, a 450/451
    whose text speaks of rates or of too many, or any 4xx saying "try again later". Greylisting (450 4.2.0) and a
    full mailbox (452 4.2.2) are about one recipient and do not."""
    if code is None or not 400 <= code < 500:
        return False
    if code == 421 or _ENHANCED_47.search(text):
        return True
    if code in (450, 451) and _RATE_TEXT.search(text):
        return True
    return "try again later" in text.lower()


# --- configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacingConfig:
    """The fleet's limits (messages per second; 0: none)."""

    overall: float = 0.0
    per_campaign: float = 0.0
    domains: Mapping[str, DomainRate] = field(default_factory=dict)
    relays: Mapping[str, float] = field(default_factory=dict)
    warmups: Mapping[str, Warmup] = field(default_factory=dict)
    min_rate: float = 1.0
    recovery_seconds: float = 10.0

    @classmethod
    def of(cls, settings: Settings, relays: Mapping[str, float] | None = None) -> PacingConfig:
        """The settings' limits; `relays` maps each relay's name to its rate (0 or absent: none)."""
        return cls(
            overall=settings.delivery_rate_per_second,
            per_campaign=settings.delivery_campaign_rate_per_second,
            domains=parse_domain_rates(settings.delivery_domain_rates),
            relays={name: rate for name, rate in (relays or {}).items() if rate > 0},
            warmups=parse_warmup(settings.delivery_warmup),
            min_rate=settings.delivery_pacing_min_rate,
            recovery_seconds=settings.delivery_pacing_recovery_seconds,
        )

    @property
    def limited(self) -> bool:
        return bool(self.overall or self.per_campaign or self.domains or self.relays or self.warmups)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def warmup_key(domain: str, day: date) -> str:
    return f"warmup:{domain}:{day.isoformat()}"


def seconds_to_next_day(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (tomorrow - now).total_seconds()


# --- the store ----------------------------------------------------------------------------------------------

# Tokens in bucket b now: a daily bucket (burst 0) is not refilled but follows a changed day's volume
# (w.ceiling); any other is refilled at its rate since refilled_at, up to BURST of it (at least one token).
_AVAILABLE = """CASE WHEN b.burst = 0 THEN b.tokens + CASE WHEN w.ceiling > 0 THEN w.ceiling - b.ceiling ELSE 0 END
     ELSE least(greatest(1, b.rate * b.burst),
                b.tokens + b.rate * greatest(0, extract(epoch FROM clock_timestamp() - b.refilled_at))) END"""
_GRANT = f"greatest(0, least(w.want, floor({_AVAILABLE})))"

_LEASE = f"""
    WITH w AS (
        SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:ceilings AS float8[]), CAST(:wants AS float8[]))
            AS w(key, ceiling, want)
    ),
    locked AS (
        SELECT key FROM delivery.pacing_buckets WHERE key = ANY(CAST(:keys AS text[])) ORDER BY key FOR UPDATE
    )
    UPDATE delivery.pacing_buckets AS b
    SET tokens = {_AVAILABLE} - {_GRANT},
        granted = {_GRANT},
        refilled_at = clock_timestamp(),
        -- A configured rate that changed (a restart with new settings): the ceiling follows it, and so does the
        -- rate unless adaptation holds it lower.
        rate = CASE WHEN b.burst = 0 OR w.ceiling <= 0 THEN b.rate
                    WHEN b.rate >= b.ceiling THEN w.ceiling ELSE least(b.rate, w.ceiling) END,
        ceiling = CASE WHEN w.ceiling > 0 THEN w.ceiling ELSE b.ceiling END
    FROM w, locked
    WHERE b.key = w.key AND locked.key = w.key
    RETURNING b.key, b.granted, b.tokens, b.rate, b.ceiling, b.burst
"""

_CREATE = """
    INSERT INTO delivery.pacing_buckets (key, rate, ceiling, configured, burst, tokens)
    SELECT key, rate, ceiling, true, burst, CASE WHEN burst = 0 THEN ceiling ELSE greatest(1, rate * burst) END
    FROM unnest(CAST(:keys AS text[]), CAST(:rates AS float8[]), CAST(:ceilings AS float8[]),
                CAST(:bursts AS float8[])) AS n(key, rate, ceiling, burst)
    ORDER BY key
    ON CONFLICT (key) DO NOTHING
"""

# The refill up to now at the old rate, written before the rate changes.
_REFILLED = """tokens = least(greatest(1, b.rate * b.burst),
                        b.tokens + b.rate * greatest(0, extract(epoch FROM clock_timestamp() - b.refilled_at))),
        refilled_at = clock_timestamp()"""

_CUT = f"""
    WITH before AS (SELECT rate FROM delivery.pacing_buckets WHERE key = :key)
    INSERT INTO delivery.pacing_buckets AS b (key, rate, ceiling, configured, burst, tokens, changed_at)
    VALUES (:key, greatest(:floor, :ceiling * {CUT_FACTOR}), greatest(:ceiling, :floor), :configured, :burst, 0,
            clock_timestamp())
    ON CONFLICT (key) DO UPDATE
    SET rate = greatest(:floor, least(b.rate, b.ceiling) * {CUT_FACTOR}), changed_at = clock_timestamp(), {_REFILLED}
    WHERE b.burst > 0 AND b.rate > :floor AND b.changed_at < clock_timestamp() - make_interval(secs => {CUT_COOLDOWN_SECONDS})
    RETURNING b.rate, b.ceiling, (SELECT rate FROM before) AS before
"""

_RECOVER = f"""
    UPDATE delivery.pacing_buckets AS b
    SET rate = least(b.ceiling, b.rate + greatest(b.ceiling * {RECOVERY_STEP}, :floor)), changed_at = clock_timestamp(),
        {_REFILLED}
    WHERE b.key = ANY(CAST(:keys AS text[])) AND b.burst > 0 AND b.rate < b.ceiling
      AND b.changed_at <= clock_timestamp() - make_interval(secs => :recovery)
    RETURNING b.key, b.rate, b.ceiling, b.configured
"""

_RECOVERED = "DELETE FROM delivery.pacing_buckets WHERE key = ANY(CAST(:keys AS text[])) AND NOT configured AND rate >= ceiling"

_ADAPTED = "SELECT key, rate, ceiling FROM delivery.pacing_buckets WHERE NOT configured"

_STALE = f"""
    DELETE FROM delivery.pacing_buckets
    WHERE refilled_at < now() - interval '{STALE_BUCKET_SECONDS} seconds'
      AND changed_at < now() - interval '{STALE_BUCKET_SECONDS} seconds'
"""

_RESERVE = """
    WITH w AS (SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:counts AS float8[])) AS w(key, n)),
    locked AS (
        SELECT key FROM delivery.pacing_buckets WHERE key = ANY(CAST(:keys AS text[])) ORDER BY key FOR UPDATE
    )
    UPDATE delivery.pacing_buckets AS b
    SET reserved_until = greatest(b.reserved_until, clock_timestamp())
                         + make_interval(secs => least(w.n, greatest(1, b.rate * b.burst)) / greatest(b.rate, 0.001))
    FROM w, locked
    WHERE b.key = w.key AND locked.key = w.key AND b.burst > 0
    RETURNING extract(epoch FROM b.reserved_until - clock_timestamp())
              - least(w.n, greatest(1, b.rate * b.burst)) / greatest(b.rate, 0.001)
"""


# --- the pacer ----------------------------------------------------------------------------------------------


@dataclass
class _Bucket:
    """What this worker knows of one shared bucket."""

    tokens: int = 0
    expires: float = 0.0
    # The store said no token before this (monotonic time).
    empty_until: float = 0.0
    rate: float = 0.0
    ceiling: float = 0.0
    # Sends waiting for the lease under way.
    demand: int = 0


@dataclass(frozen=True)
class Limit:
    """One bucket a send needs: its key, its configured rate (0: the store's), whether a send without a token waits
    for it (else it is set aside), and, for a warm-up, the day's volume."""

    key: str
    rate: float
    waits: bool
    daily: int = 0


class FleetPacer:
    """The pacing of one worker process; see the module docstring."""

    def __init__(self, engine: AsyncEngine, config: PacingConfig, *, background: bool = True) -> None:
        """`background`: keep the shared adaptive state in step by itself (else the caller calls `sync`)."""
        self._engine = db.autocommit(engine)
        self._background = background
        self._config = config
        self._buckets: dict[str, _Bucket] = {}
        self._created: set[str] = set()
        # Unconfigured domains that asked to slow down somewhere in the fleet: key to (rate, ceiling).
        self._adapted: dict[str, tuple[float, float]] = {}
        self._pending: dict[str, Limit] = {}
        self._flush: asyncio.Future[None] | None = None
        self._lease_lock = asyncio.Lock()
        self._conn: AsyncConnection | None = None
        self._conn_lock = asyncio.Lock()
        # Replies per domain in the current and the last pace window; deliveries per key since the last refresh.
        self._pace_now: dict[str, int] = {}
        self._pace_last: dict[str, int] = {}
        self._pace_started = time.monotonic()
        self._delivered: dict[str, int] = {}
        self._cuts: dict[str, tuple[Limit, float]] = {}
        self._cut_asked: dict[str, float] = {}
        self._loop: asyncio.Task[None] | None = None
        self._error_logged = 0.0

    @property
    def config(self) -> PacingConfig:
        return self._config

    # --- before a send -----------------------------------------------------------------------------------------

    async def admit(self, address: str, campaign_id: int, sender: str = "") -> float | None:
        """Takes a token of every limit the send is under. None: send now. A number: a domain or warm-up limit has no
        token for about that many seconds; the send must not happen now (set the recipient aside)."""
        if self._loop is None and self._background:
            # Learns which domains the fleet paces after slow-down replies: one small read a second.
            self._start()
        if not self._config.limited and not self._adapted:
            return None
        waits: list[Limit] = []
        for limit in self._limits(address, campaign_id, sender):
            if limit.waits:
                waits.append(limit)
                continue
            wait = await self._take(limit)
            if wait is not None:
                SET_ASIDE_TOTAL.labels("warmup" if limit.daily else "domain").inc()
                return wait
        for limit in waits:
            await self._token_of(limit)
        return None

    def _limits(self, address: str, campaign_id: int, sender: str) -> list[Limit]:
        config = self._config
        if len(self._buckets) > 10_000:
            # Many campaigns' buckets: forget them all (leases create missing rows again).
            self._buckets.clear()
            self._created.clear()
        limits = []
        domain = domain_of(address)
        group = config.domains.get(domain)
        if group is not None:
            limits.append(Limit(group.key, group.rate, waits=False))
        elif "domain:" + domain in self._adapted:
            limits.append(Limit("domain:" + domain, 0.0, waits=False))
        if sender and config.warmups and (warmup := config.warmups.get(domain_of(sender))) is not None:
            today = datetime.now(UTC).date()
            cap = warmup.cap(today)
            if cap is not None:
                if cap <= 0:
                    return [Limit(warmup_key(warmup.domain, today), 0.0, waits=False, daily=-1)]
                limits.append(Limit(warmup_key(warmup.domain, today), 0.0, waits=False, daily=cap))
        if config.overall:
            limits.append(Limit("all", config.overall, waits=True))
        if config.per_campaign:
            limits.append(Limit(f"campaign:{campaign_id}", config.per_campaign, waits=True))
        return limits

    async def admit_relay(self, relay: str) -> None:
        """Waits for a token of the relay's rate (the `rate=` of its SMTP_URL entry); at once when it has none. Called
        as the relay pool picks the relay for an attempt (RelayPool.send's `before_attempt`), since a message that
        fails over is paced by the relay it goes to next."""
        rate = self._config.relays.get(relay)
        if rate is None:
            return
        await self._token_of(Limit(f"relay:{relay}", rate, waits=True))

    async def _token_of(self, limit: Limit) -> None:
        """Waits until a token of `limit` is taken (a limit that holds its sends rather than setting them aside)."""
        while True:
            wait = await self._take(limit)
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def _take(self, limit: Limit) -> float | None:
        """Takes one token of the bucket; None when taken, else the seconds until it expects one."""
        if limit.daily < 0:
            # A warm-up that has not started: nothing before the next day.
            return seconds_to_next_day()
        while True:
            bucket = self._buckets.get(limit.key)
            if bucket is None:
                rate, ceiling = self._adapted.get(limit.key, (limit.rate, limit.rate))
                bucket = self._buckets[limit.key] = _Bucket(rate=rate, ceiling=ceiling)
            now = time.monotonic()
            if bucket.tokens > 0 and bucket.expires > now:
                bucket.tokens -= 1
                return None
            if bucket.empty_until > now:
                return bucket.empty_until - now
            bucket.demand += 1
            self._pending[limit.key] = limit
            await self._leased()

    async def _leased(self) -> None:
        """Waits for the next lease statement, which serves every send that asked before it started."""
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._lease())
        await asyncio.shield(self._flush)

    async def _lease(self) -> None:
        async with self._lease_lock:
            # Sends that ask from now on wait for the next statement.
            self._flush = None
            pending, self._pending = self._pending, {}
            wanted: dict[str, tuple[Limit, int]] = {}
            for key, limit in pending.items():
                bucket = self._buckets.setdefault(key, _Bucket(rate=limit.rate, ceiling=limit.rate))
                slice_ = max(1, math.ceil((bucket.rate or limit.rate) * SLICE_SECONDS))
                want = bucket.demand if limit.daily else min(bucket.demand, slice_)
                bucket.demand = 0
                wanted[key] = (limit, want)
            if not wanted:
                return
            try:
                rows = await self._statement(self._lease_rows, wanted)
            except (DBAPIError, OSError) as exc:
                self._failed(exc)
                for key in wanted:
                    self._buckets.setdefault(key, _Bucket()).empty_until = time.monotonic() + ERROR_BACKOFF_SECONDS
                return
            LEASES_TOTAL.inc()
            now = time.monotonic()
            for key, granted, tokens, rate, ceiling, burst in rows:
                bucket = self._buckets.setdefault(key, _Bucket())
                limit, want = wanted.pop(key)
                bucket.rate, bucket.ceiling = float(rate), float(ceiling)
                bucket.tokens, bucket.expires = int(granted), now + (math.inf if burst == 0 else LEASE_SECONDS)
                if granted < want:
                    if burst == 0:
                        bucket.empty_until = now + seconds_to_next_day()
                    else:
                        bucket.empty_until = now + max(0.0, 1.0 - float(tokens)) / max(float(rate), 1e-3)
            for key, (limit, _) in wanted.items():
                bucket = self._buckets.setdefault(key, _Bucket())
                if limit.rate or limit.daily:
                    # The row is gone (deleted by hand): it is created again by the next lease.
                    self._created.discard(key)
                    bucket.empty_until = now + MIN_COME_BACK_SECONDS
                else:
                    # An unconfigured domain that has recovered meanwhile: unlimited again.
                    self._adapted.pop(key, None)
                    bucket.tokens, bucket.expires = 1 << 30, now + REFRESH_SECONDS

    async def _lease_rows(
        self, conn: AsyncConnection, wanted: Mapping[str, tuple[Limit, int]]
    ) -> list[tuple[str, float, float, float, float, float]]:
        new = [
            limit for key, (limit, _) in wanted.items() if key not in self._created and (limit.rate or limit.daily)
        ]
        if new:
            await conn.execute(
                sa.text(_CREATE),
                {
                    "keys": [limit.key for limit in new],
                    "rates": [limit.rate for limit in new],
                    "ceilings": [float(limit.daily) if limit.daily else limit.rate for limit in new],
                    "bursts": [0.0 if limit.daily else BURST_SECONDS for limit in new],
                },
            )
            self._created.update(limit.key for limit in new)
        keys = sorted(wanted)
        result = await conn.execute(
            sa.text(_LEASE),
            {
                "keys": keys,
                "ceilings": [float(wanted[k][0].daily) if wanted[k][0].daily else wanted[k][0].rate for k in keys],
                "wants": [float(wanted[k][1]) for k in keys],
            },
        )
        return [tuple(row) for row in result]

    # --- after a send ------------------------------------------------------------------------------------------

    def answered(self, address: str, code: int | None, text: str = "") -> None:
        """Feedback: the reply to a send to `address` (a 2xx, a refusal; None: no reply at all)."""
        if code is None:
            return
        domain = domain_of(address)
        self._count_pace(domain)
        if 200 <= code < 300:
            key = self._domain_key(domain)
            if key is not None:
                self._delivered[key] = self._delivered.get(key, 0) + 1
            return
        if not slows_down(code, text):
            return
        SLOW_DOWN_REPLIES_TOTAL.inc()
        group = self._config.domains.get(domain)
        key = group.key if group is not None else "domain:" + domain
        now = time.monotonic()
        if now - self._cut_asked.get(key, 0.0) < CUT_COOLDOWN_SECONDS:
            return
        self._cut_asked[key] = now
        limit = Limit(key, group.rate if group is not None else 0.0, waits=False)
        self._cuts[key] = (limit, self._pace(domain))
        self._start()

    def paced_domains(self, address: str) -> tuple[str, ...]:
        """The recipient domains that share the domain limit of `address` (its group's, or its own)."""
        domain = domain_of(address)
        group = self._config.domains.get(domain)
        return group.domains if group is not None else (domain,)

    def _domain_key(self, domain: str) -> str | None:
        group = self._config.domains.get(domain)
        if group is not None:
            return group.key
        key = "domain:" + domain
        return key if key in self._adapted else None

    def _count_pace(self, domain: str) -> None:
        now = time.monotonic()
        if now - self._pace_started >= PACE_WINDOW_SECONDS:
            self._pace_last, self._pace_now, self._pace_started = self._pace_now, {}, now
        self._pace_now[domain] = self._pace_now.get(domain, 0) + 1

    def _pace(self, domain: str) -> float:
        """Replies per second from `domain` this worker saw lately."""
        elapsed = time.monotonic() - self._pace_started + (PACE_WINDOW_SECONDS if self._pace_last else 0.0)
        count = self._pace_now.get(domain, 0) + self._pace_last.get(domain, 0)
        return count / max(elapsed, 1.0)

    # --- the shared adaptive state ---------------------------------------------------------------------------

    def _start(self) -> None:
        if self._loop is None and self._background:
            self._loop = asyncio.create_task(self._maintain())

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            try:
                await self._loop
            except asyncio.CancelledError:
                pass
            self._loop = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _maintain(self) -> None:
        last_refresh = 0.0
        last_cleanup = time.monotonic()
        while True:
            refresh = time.monotonic() - last_refresh >= REFRESH_SECONDS
            if refresh:
                last_refresh = time.monotonic()
            try:
                await self.sync(refresh=refresh)
                if time.monotonic() - last_cleanup >= CLEANUP_SECONDS:
                    last_cleanup = time.monotonic()
                    await self._statement(lambda conn: conn.execute(sa.text(_STALE)))
            except (DBAPIError, OSError) as exc:
                self._failed(exc)
            await asyncio.sleep(0.2)

    async def sync(self, *, refresh: bool = True) -> None:
        """Writes the cuts asked for; with `refresh`, the recoveries earned, and reads which unconfigured domains are
        paced (the worker does this in the background: every 0.2 s, and every REFRESH_SECONDS)."""
        for key, (limit, pace) in list(self._cuts.items()):
            del self._cuts[key]
            await self._statement(self._cut, limit, pace)
        if refresh:
            delivered, self._delivered = self._delivered, {}
            recovering = [key for key in delivered if self._recovering(key)]
            if recovering:
                await self._statement(self._recover, recovering)
            await self._statement(self._refresh)

    def _recovering(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if key in self._adapted:
            rate, ceiling = self._adapted[key]
            return rate < ceiling
        return bucket is not None and bucket.rate < bucket.ceiling

    async def _cut(self, conn: AsyncConnection, limit: Limit, pace: float) -> None:
        floor = self._config.min_rate
        row = (
            await conn.execute(
                sa.text(_CUT),
                {
                    "key": limit.key,
                    "floor": floor,
                    "ceiling": limit.rate or max(pace, floor * UNCONFIGURED_MIN_CEILING),
                    "configured": bool(limit.rate),
                    "burst": BURST_SECONDS,
                },
            )
        ).one_or_none()
        if row is None:
            return
        RATE_CHANGES_TOTAL.labels("down").inc()
        log.warning(
            "pacing: a domain asked to slow down; its rate is cut",
            key=limit.key,
            rate=round(row.rate, 3),
            before=round(row.before, 3) if row.before is not None else None,
            ceiling=round(row.ceiling, 3),
            configured=bool(limit.rate),
        )
        self._note(limit.key, row.rate, row.ceiling, configured=bool(limit.rate))

    async def _recover(self, conn: AsyncConnection, keys: Sequence[str]) -> None:
        rows = list(
            await conn.execute(
                sa.text(_RECOVER),
                {"keys": list(keys), "recovery": self._config.recovery_seconds, "floor": self._config.min_rate},
            )
        )
        for row in rows:
            RATE_CHANGES_TOTAL.labels("up").inc()
            log.info(
                "pacing: a domain's rate recovers",
                key=row.key,
                rate=round(row.rate, 3),
                ceiling=round(row.ceiling, 3),
                configured=row.configured,
            )
            self._note(row.key, row.rate, row.ceiling, configured=row.configured)
        done = [row.key for row in rows if not row.configured and row.rate >= row.ceiling]
        if done:
            await conn.execute(sa.text(_RECOVERED), {"keys": done})
            for key in done:
                self._adapted.pop(key, None)
                log.info("pacing: an unconfigured domain has recovered and is no longer paced", key=key)

    def _note(self, key: str, rate: float, ceiling: float, *, configured: bool) -> None:
        bucket = self._buckets.setdefault(key, _Bucket())
        bucket.rate, bucket.ceiling = rate, ceiling
        # Tokens leased at the old rate are dropped: the new one applies at once.
        bucket.tokens = 0
        if not configured:
            self._adapted[key] = (rate, ceiling)

    async def _refresh(self, conn: AsyncConnection) -> None:
        rows = await conn.execute(sa.text(_ADAPTED))
        adapted = {row.key: (float(row.rate), float(row.ceiling)) for row in rows}
        for key in set(self._adapted) - set(adapted):
            self._buckets.pop(key, None)
        self._adapted = adapted

    # --- a batch whose recipients were set aside -----------------------------------------------------------

    async def come_back_after(self, addresses: Sequence[str], waits: Sequence[float] = ()) -> float:
        """Seconds until the batch whose recipients `addresses` were set aside should be tried again: its turn, booked
        on each bucket's queue (`reserved_until`) for what its next visit can send (at most a full bucket: a visit
        never gets more, so booking all its recipients would space visits too far apart), at least the longest
        `waits` `admit` gave them."""
        delay = max(waits, default=0.0)
        counts: dict[str, int] = {}
        for address in addresses:
            for limit in self._limits(address, 0, ""):
                if not limit.waits and limit.daily == 0:
                    counts[limit.key] = counts.get(limit.key, 0) + 1
        if counts:
            try:
                turns = await self._statement(self._reserve, counts)
                delay = max([delay, *turns])
            except (DBAPIError, OSError) as exc:
                self._failed(exc)
                delay = max(delay, ERROR_BACKOFF_SECONDS)
        return min(max(delay, MIN_COME_BACK_SECONDS), MAX_COME_BACK_SECONDS)

    async def _reserve(self, conn: AsyncConnection, counts: Mapping[str, int]) -> list[float]:
        keys = sorted(counts)
        rows = await conn.execute(sa.text(_RESERVE), {"keys": keys, "counts": [float(counts[k]) for k in keys]})
        return [float(row[0]) for row in rows]

    # --- the connection ----------------------------------------------------------------------------------------

    async def _statement(
        self, work: Callable[Concatenate[AsyncConnection, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Runs `work(conn, *args)` on the pacer's own autocommit connection (no pool check-out per lease)."""
        async with self._conn_lock:
            try:
                if self._conn is None:
                    self._conn = await self._engine.connect()
                return await work(self._conn, *args, **kwargs)
            except (DBAPIError, OSError):
                if self._conn is not None:
                    try:
                        await self._conn.invalidate()
                        await self._conn.close()
                    except Exception:
                        pass
                    self._conn = None
                raise

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._error_logged >= 10.0:
            self._error_logged = now
            log.warning(
                "pacing: the shared buckets cannot be read; sends wait",
                error=f"{type(getattr(exc, 'orig', None) or exc).__name__}: {getattr(exc, 'orig', None) or exc}",
            )
