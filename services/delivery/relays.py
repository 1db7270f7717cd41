"""Several SMTP relays behind one send: SMTP_URL's list of relays, routing per campaign and per From domain, failover.

SMTP_URL holds one relay URL or several, separated by commas or whitespace; each may carry `name=`
(default host:port), `weight=` (share of the mail that no route sends elsewhere, default 1; 0: only
routed mail) and `rate=` (messages per second through this relay, for the whole fleet; parsed here
and exposed as `Relay.rate_per_second`). HERALD_SMTP_ROUTES sends each listed From domain through one
relay; a campaign may name its relay (Campaign.relay), which wins over the From domain's.

Failover: a send that fails because the relay could not be reached (connection refused, dropped or
timed out before the message content went out, or a 4xx answer to the session itself) was never
accepted, so it is tried again at once through another relay that is up; the failing relay is marked
down and gets no more mail until a background health check (connect, EHLO, QUIT) succeeds. A failure
after the content went out is ambiguous and is never sent again, through any relay (services/delivery/smtp.py).
Routed mail (a campaign's relay, a From domain's relay) waits for its relay: it goes through no other
(when its relay is down it is deferred, and retried on the deferred-mail schedule).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiosmtplib
import structlog
from prometheus_client import Counter, Gauge

from services.common.relay_names import relay_name_problem
from services.delivery.smtp import (
    SmtpConnectionPool,
    SmtpReply,
    SmtpSendError,
    SmtpTarget,
    SmtpUrlError,
    parse_smtp_url,
)

log = structlog.get_logger()

RELAY_UP = Gauge("herald_delivery_relay_up", "1 while an SMTP relay is taking mail, 0 while it is down", ["relay"])
RELAY_STATE_CHANGES_TOTAL = Counter(
    "herald_delivery_relay_state_changes_total", "SMTP relays marked down or back up", ["relay", "state"]
)
RELAY_FAILOVERS_TOTAL = Counter(
    "herald_delivery_relay_failovers_total",
    "Messages sent again through another relay because this one could not be reached (never accepted here)",
    ["relay"],
)

# Where one relay's URL ends and the next begins: commas or whitespace before the next scheme.
_SEPARATOR = re.compile(r"[\s,]+(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_RELAY_PARAMETERS = ("name", "weight", "rate")
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass(frozen=True)
class Relay:
    """One relay of SMTP_URL: where it is, its name, its share of unrouted mail and its rate (0: no limit)."""

    name: str
    target: SmtpTarget
    weight: int = 1
    rate_per_second: float = 0.0


def _default_name(target: SmtpTarget) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


def _parse_relay(url: str) -> Relay:
    """One relay URL: the SMTP URL with its relay parameters taken out."""
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise SmtpUrlError(f"SMTP_URL is not a valid URL: {exc}") from None
    own = {key.lower(): value for key, value in pairs if key.lower() in _RELAY_PARAMETERS}
    if len(own) != sum(1 for key, _ in pairs if key.lower() in _RELAY_PARAMETERS):
        raise SmtpUrlError("SMTP_URL gives a relay parameter twice")
    rest = [(key, value) for key, value in pairs if key.lower() not in _RELAY_PARAMETERS]
    target = parse_smtp_url(urlunsplit(parts._replace(query=urlencode(rest))))
    name = own.get("name", "").strip() or _default_name(target)
    problem = relay_name_problem(name)
    if problem:
        raise SmtpUrlError(f"SMTP_URL relay name {name!r} is invalid: {problem}")
    weight = 1
    if "weight" in own:
        try:
            weight = int(own["weight"].strip())
        except ValueError:
            weight = -1
        if not 0 <= weight <= 1_000_000:
            raise SmtpUrlError(f"SMTP_URL relay {name}: weight must be a whole number from 0 to 1000000")
    rate = 0.0
    if "rate" in own:
        try:
            rate = float(own["rate"].strip())
        except ValueError:
            rate = math.nan
        if not (math.isfinite(rate) and rate > 0):
            raise SmtpUrlError(
                f"SMTP_URL relay {name}: rate must be a number of messages per second above 0 (leave it out for no limit)"
            )
    return Relay(name, target, weight, rate)


def parse_relays(text: str) -> tuple[Relay, ...]:
    """SMTP_URL as its relays, in the order given; SmtpUrlError names the relay and the problem (never a password).

    One URL without relay parameters is the single relay it always was.
    """
    urls = [url for url in _SEPARATOR.split(text.strip()) if url.strip(" \t\r\n,")]
    if not urls:
        urls = [""]
    relays: list[Relay] = []
    for position, url in enumerate(urls, start=1):
        try:
            relays.append(_parse_relay(url.strip().rstrip(",")))
        except SmtpUrlError as exc:
            if len(urls) == 1:
                if any(c.isspace() or c == "," for c in url.strip()):
                    raise SmtpUrlError(
                        f"{exc}; separate several relays with commas or spaces, each starting with smtp:// or smtps://"
                    ) from None
                raise
            raise SmtpUrlError(f"relay {position} of SMTP_URL: {exc}") from None
    names = [relay.name for relay in relays]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SmtpUrlError(f"SMTP_URL names several relays {', '.join(twice)}: give each its own name=")
    if not any(relay.weight for relay in relays):
        raise SmtpUrlError("SMTP_URL: every relay has weight 0, so mail that no route sends has no relay")
    return tuple(relays)


def relay_names(smtp_url: str) -> tuple[str, ...]:
    """The names of SMTP_URL's relays (checked at start, so it parses); none when SMTP_URL is unset."""
    return tuple(relay.name for relay in parse_relays(smtp_url)) if smtp_url.strip() else ()


def parse_routes(text: str, relays: Sequence[Relay]) -> dict[str, str]:
    """HERALD_SMTP_ROUTES (`domain=relay, domain=relay`) as From domain → relay name; ValueError when malformed
    or when it names a relay that SMTP_URL does not have."""
    known = {relay.name for relay in relays}
    routes: dict[str, str] = {}
    for entry in re.split(r"[\s,]+", text.strip()):
        if not entry:
            continue
        domain, equals, name = entry.partition("=")
        domain = domain.strip().lower().rstrip(".")
        name = name.strip()
        if not equals or not domain or not name:
            raise ValueError(f"{entry!r} is not domain=relay (e.g. news.example.com=relay-a)")
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(f"{domain!r} is not a domain name (the From domain, e.g. news.example.com)")
        if domain in routes:
            raise ValueError(f"{domain} is routed twice")
        if name not in known:
            raise ValueError(
                f"{domain} is routed to relay {name!r}, which SMTP_URL does not name ({', '.join(sorted(known))})"
            )
        routes[domain] = name
    return routes


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".>")


def is_relay_failure(error: SmtpSendError) -> bool:
    """The relay could not be reached or refused the session for now: the message was not accepted there."""
    if error.maybe_delivered:
        return False
    if error.reply is None:
        return True
    return error.stage == "session" and 400 <= error.reply.code < 500


@dataclass(frozen=True)
class RelayReply(SmtpReply):
    """The relay's 2xx reply to a message, and the relay that gave it."""

    relay: str = ""


class UnknownRelay(SmtpSendError):
    """The send names a relay SMTP_URL does not have (a campaign's relay not configured on this worker)."""


class _RelayState:
    """One relay, its pool of sessions, whether it takes mail, and the weight it has in the smooth round robin."""

    def __init__(self, relay: Relay, pool: SmtpConnectionPool) -> None:
        self.relay = relay
        self.pool = pool
        self.up = True
        self.down_since = 0.0
        self.current = 0
        self.health: asyncio.Task[None] | None = None


class RelayPool:
    """Sends each message through one relay of several, as SmtpConnectionPool.send does through one.

    Which relay: the campaign's (`relay=`), else the From domain's route, else a smooth weighted round robin
    among the relays that are up (all of them, when none is). A relay that cannot be reached is marked down
    and the message tried through the next one; see the module docstring.
    """

    def __init__(
        self,
        relays: Sequence[Relay],
        routes: Mapping[str, str] | None = None,
        *,
        pool: Callable[[Relay], SmtpConnectionPool],
        health_check_seconds: float = 5.0,
        health_check_timeout: float = 10.0,
    ) -> None:
        if not relays:
            raise ValueError("a relay pool needs at least one relay")
        self._states = {relay.name: _RelayState(relay, pool(relay)) for relay in relays}
        self._routes = dict(routes or {})
        unknown = set(self._routes.values()) - set(self._states)
        if unknown:
            raise ValueError(f"routes to unknown relays {sorted(unknown)}")
        self._weighted = [state for state in self._states.values() if state.relay.weight > 0]
        self._health_check_seconds = health_check_seconds
        self._health_check_timeout = health_check_timeout
        self._closed = False
        for name in self._states:
            RELAY_UP.labels(name).set(1)

    @property
    def relays(self) -> tuple[Relay, ...]:
        return tuple(state.relay for state in self._states.values())

    def is_up(self, name: str) -> bool:
        return self._states[name].up

    def route(self, *, relay: str = "", from_address: str = "") -> str:
        """The relay a message must go through ("" when any may take it): the campaign's, else its From domain's."""
        if relay:
            return relay
        return self._routes.get(_domain_of(from_address), "") if from_address else ""

    async def __aenter__(self) -> RelayPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def rates(self) -> dict[str, float]:
        """Each relay's name to its `rate=` (relays without one left out): the fleet's pacer enforces them."""
        return {
            state.relay.name: state.relay.rate_per_second
            for state in self._states.values()
            if state.relay.rate_per_second
        }

    async def send(
        self,
        sender: str,
        recipient: str,
        message: bytes | Callable[[], bytes],
        *,
        relay: str = "",
        from_address: str = "",
        before_attempt: Callable[[Relay], Awaitable[None]] | None = None,
    ) -> RelayReply:
        """Sends as SmtpConnectionPool.send does, through the relay that the campaign (`relay`), the From address's
        domain or the round robin chooses. `before_attempt` is awaited with each relay just before a message goes
        to it (a per-relay pace). An SmtpSendError says through which relay it came (`relay` attribute)."""
        routed = self.route(relay=relay, from_address=from_address)
        if routed:
            state = self._states.get(routed)
            if state is None:
                # A refusal of Herald's own, as for an unusable address: the recipient fails with it, never retried.
                why = f"relay {routed!r} is not one of SMTP_URL's relays ({', '.join(self._states)})"
                raise UnknownRelay(why, reply=SmtpReply(550, why))
            candidates = [state]
        else:
            candidates = self._weighted
        if callable(message):
            # Made at most once, even when the message goes to a second relay after the first failed.
            made = message
            kept: list[bytes] = []

            def content() -> bytes:
                if not kept:
                    kept.append(made())
                return kept[0]

            message = content
        tried: set[str] = set()
        failure: SmtpSendError | None = None
        while True:
            untried = [s for s in candidates if s.relay.name not in tried]
            if not untried:
                assert failure is not None
                raise failure
            # The relays that are up first; when none is, the others are tried anyway (the send is a health
            # check too), as the one relay of SMTP_URL always was.
            up = [s for s in untried if s.up]
            state = self._next(up or untried)
            if before_attempt is not None:
                await before_attempt(state.relay)
            try:
                reply = await state.pool.send(sender, recipient, message)
            except SmtpSendError as exc:
                exc.relay = state.relay.name
                if not is_relay_failure(exc):
                    raise
                self._mark_down(state, str(exc))
                tried.add(state.relay.name)
                failure = exc
                if any(s.relay.name not in tried for s in candidates):
                    RELAY_FAILOVERS_TOTAL.labels(state.relay.name).inc()
                continue
            self._mark_up(state, "a message went through")
            return RelayReply(reply.code, reply.message, state.relay.name)

    def _next(self, states: Sequence[_RelayState]) -> _RelayState:
        """Smooth weighted round robin (each relay gets its weight's share, evenly spread); weight 0 counts as 1 here,
        for routed or last-resort sends."""
        total = 0
        best: _RelayState | None = None
        for state in states:
            weight = max(state.relay.weight, 1)
            state.current += weight
            total += weight
            if best is None or state.current > best.current:
                best = state
        assert best is not None
        best.current -= total
        return best

    def _mark_down(self, state: _RelayState, reason: str) -> None:
        if state.up:
            state.up = False
            state.down_since = time.monotonic()
            RELAY_UP.labels(state.relay.name).set(0)
            RELAY_STATE_CHANGES_TOTAL.labels(state.relay.name, "down").inc()
            log.warning(
                "SMTP relay down",
                relay=state.relay.name,
                reason=reason,
                # Where its unrouted share goes until a health check brings it back.
                up=[s.relay.name for s in self._weighted if s.up],
            )
        if (state.health is None or state.health.done()) and not self._closed:
            # A context of its own: the send that found the relay down bound its campaign and batch to the logs.
            state.health = asyncio.create_task(self._check_until_up(state), context=contextvars.Context())

    def _mark_up(self, state: _RelayState, how: str) -> None:
        if state.up:
            return
        state.up = True
        state.current = 0
        RELAY_UP.labels(state.relay.name).set(1)
        RELAY_STATE_CHANGES_TOTAL.labels(state.relay.name, "up").inc()
        log.warning(
            "SMTP relay back up",
            relay=state.relay.name,
            how=how,
            down_seconds=round(time.monotonic() - state.down_since, 3),
        )

    async def _check_until_up(self, state: _RelayState) -> None:
        """Every health_check_seconds: connect, EHLO, QUIT; the relay is up again after the first that succeeds."""
        while not state.up and not self._closed:
            await asyncio.sleep(self._health_check_seconds)
            if state.up or self._closed:
                return
            problem = await self._health_check(state.pool)
            if problem is None:
                self._mark_up(state, "health check")
            else:
                log.info("SMTP relay still down", relay=state.relay.name, error=problem)

    async def _health_check(self, pool: SmtpConnectionPool) -> str | None:
        """None when the relay greets, answers EHLO (after TLS, as a send would) and QUIT; else what failed."""
        target = pool.target
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            use_tls=target.tls == "implicit",
            start_tls=target.tls == "starttls",
            timeout=min(self._health_check_timeout, pool.timeout),
            local_hostname=pool.local_hostname,
            tls_context=pool.tls_context,
        )
        try:
            await client.connect()
            await client.ehlo()
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            return str(exc) or type(exc).__name__
        return None

    async def close(self) -> None:
        """Stops the health checks and closes every relay's pool."""
        self._closed = True
        for state in self._states.values():
            if state.health is not None:
                state.health.cancel()
        for state in self._states.values():
            await state.pool.close()
