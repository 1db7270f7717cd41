"""The pacing settings' small languages (docs/operations.md, "Pacing"), parsed at start-up with a clear error.

HERALD_DELIVERY_DOMAIN_RATES: comma-separated `domains=rate` entries, `domains` one recipient domain or several
joined with `+` (a group: they share one rate), `rate` messages per second for the whole fleet, e.g.
`gmail.com+googlemail.com=100, yahoo.com=20`. A domain may appear in one entry only.

HERALD_DELIVERY_WARMUP: comma-separated `domain:start:first*growth` entries, one per sending (From) domain: from
the UTC day `start` (YYYY-MM-DD) the domain may send `first` messages on its first day, then `growth` times the
day before's (rounded down), e.g. `news.example.com:2026-12-01:500*1.5` (500, 750, 1125, ...). Instead of
`first*growth`, a list of daily caps separated by `/` (`news.example.com:2026-12-01:500/1000/2000`): after the
last one the domain is no longer capped. Before `start` the domain sends nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
# A warm-up stops growing at this daily volume (the cap is then meaningless anyway).
WARMUP_CEILING = 10**9


@dataclass(frozen=True)
class DomainRate:
    """One entry of HERALD_DELIVERY_DOMAIN_RATES: its domains (the pacing key names them all) and its rate."""

    domains: tuple[str, ...]
    rate: float

    @property
    def key(self) -> str:
        return "domain:" + "+".join(self.domains)


def parse_domain_rates(text: str) -> dict[str, DomainRate]:
    """Recipient domain (lower case) to its entry; ValueError with a message an operator can act on."""
    found: dict[str, DomainRate] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        names, equals, rate_text = entry.rpartition("=")
        if not equals or not names.strip():
            raise ValueError(f"{entry!r} is not domain=rate (e.g. gmail.com+googlemail.com=100, yahoo.com=20)")
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(
                f"{entry!r}: the rate {rate_text.strip()!r} is not a number of messages per second"
            ) from None
        if not rate > 0 or rate == float("inf"):
            raise ValueError(f"{entry!r}: the rate must be more than 0 messages per second")
        domains = tuple(name.strip().lower().rstrip(".") for name in names.split("+"))
        for domain in domains:
            if not _DOMAIN.match(domain):
                raise ValueError(f"{entry!r}: {domain!r} is not a domain name")
            if domain in found or domains.count(domain) > 1:
                raise ValueError(f"{domain} is named twice: a domain has one rate (put it in one group)")
        group = DomainRate(domains, rate)
        for domain in domains:
            found[domain] = group
    return found


@dataclass(frozen=True)
class Warmup:
    """The daily volume of one sending domain."""

    domain: str
    start: date
    first: int = 0
    growth: float = 1.0
    # A list of daily caps instead of first*growth (after the last: no cap).
    steps: tuple[int, ...] = ()

    def cap(self, day: date) -> int | None:
        """The day's volume (0 before the start), or None when the domain is no longer capped."""
        index = (day - self.start).days
        if index < 0:
            return 0
        if self.steps:
            return self.steps[index] if index < len(self.steps) else None
        volume = float(self.first)
        for _ in range(index):
            volume *= self.growth
            if volume >= WARMUP_CEILING:
                return None
        return int(volume)


def parse_warmup(text: str) -> dict[str, Warmup]:
    """Sending domain (lower case) to its warm-up; ValueError with a message an operator can act on."""
    found: dict[str, Warmup] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(
                f"{entry!r} is not domain:YYYY-MM-DD:first*growth or domain:YYYY-MM-DD:cap/cap/... "
                "(e.g. news.example.com:2026-12-01:500*1.5)"
            )
        domain, start_text, volume = (part.strip() for part in parts)
        domain = domain.lower().rstrip(".")
        if not _DOMAIN.match(domain):
            raise ValueError(f"{entry!r}: {domain!r} is not a domain name")
        if domain in found:
            raise ValueError(f"{domain} has two warm-up schedules")
        try:
            start = date.fromisoformat(start_text)
        except ValueError:
            raise ValueError(f"{entry!r}: {start_text!r} is not a day (YYYY-MM-DD)") from None
        if "*" in volume:
            first_text, _, growth_text = volume.partition("*")
            try:
                first, growth = int(first_text), float(growth_text)
            except ValueError:
                raise ValueError(f"{entry!r}: {volume!r} is not first*growth (e.g. 500*1.5)") from None
            if first < 1 or not 1 <= growth <= 100:
                raise ValueError(f"{entry!r}: the first day's volume must be at least 1 and growth 1 to 100")
            found[domain] = Warmup(domain, start, first, growth)
        else:
            try:
                steps = tuple(int(part) for part in volume.split("/"))
            except ValueError:
                raise ValueError(
                    f"{entry!r}: {volume!r} is not a list of daily caps (e.g. 500/1000/2000)"
                ) from None
            if any(step < 0 for step in steps):
                raise ValueError(f"{entry!r}: a daily cap cannot be negative")
            found[domain] = Warmup(domain, start, steps=steps)
    return found
