"""The fleet's shared token buckets on a real PostgreSQL (services/delivery/pacing.py): several pacers (as several
workers) share one bucket per limit, a domain without a token sets its recipients aside while the overall limit
makes a send wait, slow-down replies cut a domain's rate for every pacer and successes bring it back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.pacing_config import Warmup, parse_domain_rates
from services.delivery import pacing
from services.delivery.pacing import FleetPacer, PacingConfig

SERVICES = ("delivery",)

pytestmark = pytest.mark.asyncio(loop_scope="session")


def domain() -> str:
    return f"d{uuid.uuid4().hex[:10]}.example"


@pytest_asyncio.fixture(loop_scope="session")
async def pacers(engine: AsyncEngine) -> AsyncIterator[list[FleetPacer]]:
    made: list[FleetPacer] = []
    yield made
    for pacer in made:
        await pacer.close()


def new_pacer(engine: AsyncEngine, made: list[FleetPacer], **config: object) -> FleetPacer:
    pacer = FleetPacer(engine, PacingConfig(**config), background=False)  # type: ignore[arg-type]
    made.append(pacer)
    return pacer


async def bucket(engine: AsyncEngine, key: str) -> sa.Row[tuple[float, float, bool]] | None:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                sa.text("SELECT rate, ceiling, configured FROM delivery.pacing_buckets WHERE key = :k"), {"k": key}
            )
        ).one_or_none()


async def test_no_limit_admits_without_touching_the_database(
    engine: AsyncEngine, pacers: list[FleetPacer]
) -> None:
    pacer = new_pacer(engine, pacers)
    assert [await pacer.admit(f"a{i}@{domain()}", 1) for i in range(50)] == [None] * 50
    assert pacer._conn is None


async def test_two_workers_share_one_bucket_per_domain_group(
    engine: AsyncEngine, pacers: list[FleetPacer]
) -> None:
    gmail, googlemail, other = domain(), domain(), domain()
    # One token per 100 s: no refill during the test, however slow the machine.
    rates = parse_domain_rates(f"{gmail}+{googlemail}=0.01")
    first, second = new_pacer(engine, pacers, domains=rates), new_pacer(engine, pacers, domains=rates)
    # The bucket holds one token: the first worker takes it, and neither worker gets another now, whichever domain
    # of the group.
    assert await first.admit(f"a@{gmail}", 1) is None
    wait = await second.admit(f"b@{googlemail}", 1)
    assert wait is not None and 0 < wait <= 100
    assert await first.admit(f"c@{gmail}", 1) is not None
    # Another domain is not limited at all.
    assert await second.admit(f"d@{other}", 1) is None
    assert pacing.SET_ASIDE_TOTAL.labels("domain")._value.get() >= 2


async def test_the_overall_limit_makes_sends_wait_instead_of_setting_them_aside(
    engine: AsyncEngine, pacers: list[FleetPacer]
) -> None:
    pacer = new_pacer(engine, pacers, overall=20.0)
    # Eight sends for a bucket of four tokens: none is set aside, the last wait for the refill.
    assert [await pacer.admit(f"a{i}@{domain()}", 1) for i in range(8)] == [None] * 8


async def test_a_relays_rate_is_one_bucket_for_every_worker_and_other_relays_are_not_held(
    engine: AsyncEngine, pacers: list[FleetPacer]
) -> None:
    relay = f"r{uuid.uuid4().hex[:8]}"
    first = new_pacer(engine, pacers, relays={relay: 0.01, "other": 0.01})
    second = new_pacer(engine, pacers, relays={relay: 0.01, "other": 0.01})
    # One token per 100 s: the first worker takes the relay's only token; the second waits for the refill.
    await first.admit_relay(relay)
    row = await bucket(engine, f"relay:{relay}")
    assert row is not None and row.rate == 0.01
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await second.admit_relay(relay)
    # A relay without a rate is not paced at all.
    async with asyncio.timeout(5):
        await second.admit_relay("unpaced")
    assert await bucket(engine, "relay:unpaced") is None


async def test_a_slow_down_reply_halves_the_domain_for_every_worker_and_successes_restore_it(
    engine: AsyncEngine, pacers: list[FleetPacer]
) -> None:
    name = domain()
    rates = parse_domain_rates(f"{name}=40")
    key = f"domain:{name}"
    first = new_pacer(engine, pacers, domains=rates, recovery_seconds=0.001)
    second = new_pacer(engine, pacers, domains=rates, recovery_seconds=0.001)
    assert await first.admit(f"a@{name}", 1) is None
    first.answered(f"a@{name}", 421, "421 4.7.0 Too many messages, slow down")
    # A second slow-down right after the first is the same burst's: no second cut.
    first.answered(f"b@{name}", 451, "451 4.7.1 Rate limit exceeded")
    await first.sync()
    row = await bucket(engine, key)
    assert row is not None and (row.rate, row.ceiling, row.configured) == (20.0, 40.0, True)
    # The other worker's next lease sees the halved rate.
    await second.admit(f"c@{name}", 1)
    assert second._buckets[key].rate == 20.0
    # Deliveries after the cooldown: the rate grows back by a tenth of the ceiling per step.
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE delivery.pacing_buckets SET changed_at = now() - interval '1 minute' WHERE key = :k"),
            {"k": key},
        )
    second.answered(f"c@{name}", 250)
    await second.sync()
    row = await bucket(engine, key)
    assert row is not None and row.rate == pytest.approx(24.0)


async def test_an_unconfigured_domain_is_paced_after_a_slow_down_and_freed_once_recovered(
    engine: AsyncEngine, pacers: list[FleetPacer]
) -> None:
    name = domain()
    key = f"domain:{name}"
    first = new_pacer(engine, pacers, min_rate=2.0, recovery_seconds=0.001)
    second = new_pacer(engine, pacers, min_rate=2.0, recovery_seconds=0.001)
    for i in range(3):
        assert await first.admit(f"a{i}@{name}", 1) is None
        first.answered(f"a{i}@{name}", 250)
    first.answered(f"x@{name}", 450, "450 4.2.0 Greylisted")  # about one recipient: no cut
    await first.sync()
    assert await bucket(engine, key) is None
    first.answered(f"y@{name}", 421, "421 Service not available, try again later")
    await first.sync()
    row = await bucket(engine, key)
    # The ceiling is the pace this worker saw (at least the floor), the rate half of it.
    assert row is not None and not row.configured and row.rate == pytest.approx(max(row.ceiling / 2, 2.0))
    await second.sync()
    # The other worker paces the domain now.
    assert [limit.key for limit in second._limits(f"b@{name}", 1, "")] == [key]
    assert second._adapted[key] == (row.rate, row.ceiling)
    # Recovery up to the ceiling frees the domain again.
    for _ in range(12):
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE delivery.pacing_buckets SET changed_at = now() - interval '1 minute' WHERE key = :k"
                ),
                {"k": key},
            )
        second.answered(f"b@{name}", 250)
        await second.sync()
    assert await bucket(engine, key) is None
    await first.sync()
    assert await first.admit(f"d@{name}", 1) is None and key not in first._adapted


async def test_set_aside_batches_are_booked_one_after_another(
    engine: AsyncEngine, pacers: list[FleetPacer]
) -> None:
    name = domain()
    pacer = new_pacer(engine, pacers, domains=parse_domain_rates(f"{name}=0.01"))
    assert await pacer.admit(f"a@{name}", 1) is None
    addresses = [f"r{i}@{name}" for i in range(20)]
    first = await pacer.come_back_after(addresses)
    second = await pacer.come_back_after(addresses)
    # A visit sends at most a full bucket (one token here, 100 s of the rate): the second batch's turn is 100 s
    # after the first's, not the 2,000 s of its twenty recipients.
    assert first < 1 and 50 < second <= 100 + 0.05


async def test_a_warm_up_caps_the_sending_domains_day_for_every_worker(
    engine: AsyncEngine, pacers: list[FleetPacer]
) -> None:
    sender = domain()
    today = datetime.now(UTC).date()
    warmups = {
        sender: Warmup(sender, today, steps=(3,)),
        "later.example": Warmup("later.example", today + timedelta(days=1), steps=(9,)),
    }
    first, second = new_pacer(engine, pacers, warmups=warmups), new_pacer(engine, pacers, warmups=warmups)
    taken = [await first.admit(f"a{i}@{domain()}", 1, sender=f"news@{sender}") for i in range(2)]
    taken.append(await second.admit(f"b@{domain()}", 1, sender=f"news@{sender}"))
    assert taken == [None] * 3
    # The day's volume is used up, for both workers: the next recipients wait for the next UTC day.
    for pacer in (first, second):
        wait = await pacer.admit(f"c@{domain()}", 1, sender=f"news@{sender}")
        assert wait is not None and abs(wait - pacing.seconds_to_next_day()) < 5
    # Another sender is not capped; a warm-up that starts tomorrow sends nothing today.
    assert await first.admit(f"d@{domain()}", 1, sender="news@other.example") is None
    assert await first.admit(f"e@{domain()}", 1, sender="news@later.example") is not None
