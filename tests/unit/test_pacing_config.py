"""The pacing settings (services/common/pacing_config.py): domain rates and warm-up schedules are parsed at start-up,
and a bad one stops Herald with a message naming the setting; which SMTP replies mean "slow down"."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from services.common.config import Settings
from services.common.pacing_config import parse_domain_rates, parse_warmup
from services.delivery import pacing


def test_domain_rates_with_groups() -> None:
    rates = parse_domain_rates(" Gmail.com+googlemail.com=100, yahoo.com=20.5 ,")
    assert rates["gmail.com"] is rates["googlemail.com"]
    assert rates["gmail.com"].rate == 100 and rates["gmail.com"].key == "domain:gmail.com+googlemail.com"
    assert rates["yahoo.com"].rate == 20.5 and rates["yahoo.com"].key == "domain:yahoo.com"
    assert parse_domain_rates("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gmail.com", "not domain=rate"),
        ("gmail.com=fast", "not a number"),
        ("gmail.com=0", "more than 0"),
        ("gmail.com=-3", "more than 0"),
        ("gmail.com=10, gmail.com=20", "named twice"),
        ("gmail.com+gmail.com=10", "named twice"),
        ("gm ail.com=10", "not a domain name"),
        ("=10", "not domain=rate"),
    ],
)
def test_bad_domain_rates_are_refused_at_start(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(delivery_domain_rates=text)


def test_warmup_grows_by_a_factor_or_follows_a_list() -> None:
    warmups = parse_warmup("news.example.com:2026-12-01:500*1.5, promo.example.com:2026-12-01:10/20/40")
    grow = warmups["news.example.com"]
    assert [grow.cap(date(2026, 12, d)) for d in (1, 2, 3, 4)] == [500, 750, 1125, 1687]
    assert grow.cap(date(2026, 11, 30)) == 0
    steps = warmups["promo.example.com"]
    assert [steps.cap(date(2026, 12, d)) for d in (1, 2, 3, 4)] == [10, 20, 40, None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("news.example.com", "not domain:YYYY-MM-DD"),
        ("news.example.com:2026-13-01:500*1.5", "not a day"),
        ("news.example.com:2026-12-01:500*x", "not first\\*growth"),
        ("news.example.com:2026-12-01:0*1.5", "at least 1"),
        ("news.example.com:2026-12-01:ten/20", "not a list"),
        ("news.example.com:2026-12-01:10, news.example.com:2026-12-02:10", "two warm-up schedules"),
    ],
)
def test_bad_warmups_are_refused_at_start(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(delivery_warmup=text)


def test_slow_down_replies() -> None:
    assert pacing.slows_down(421, "421 4.3.2 Service shutting down")
    assert pacing.slows_down(451, "451 4.7.1 Please try later")
    assert pacing.slows_down(450, "450 Too many connections from your IP")
    assert pacing.slows_down(451, "451 Rate limited")
    assert pacing.slows_down(452, "452 try again later")
    assert not pacing.slows_down(450, "450 4.2.0 Recipient address rejected: Greylisted")
    assert not pacing.slows_down(452, "452 4.2.2 Mailbox full")
    assert not pacing.slows_down(550, "550 5.7.1 Rate limit")
    assert not pacing.slows_down(None, "connection refused, try again later")
