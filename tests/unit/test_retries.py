"""The schedule of deferred recipients' retries, and when a domain's recipients are deferred together (services/delivery/retries.py)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from herald.delivery.v1 import delivery_pb2

from services.common import events
from services.common.config import Settings
from services.common.natsutil import Subjects
from services.delivery import retries
from services.delivery.retries import DomainDeferrals, RetrySchedule

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_the_default_schedule_is_a_mail_servers() -> None:
    schedule = RetrySchedule.of(Settings())
    no_jitter = RetrySchedule(schedule.delays, schedule.later_min, schedule.later_max, 0.0, schedule.max_defer)
    minutes = [no_jitter.delay(n) / 60 for n in range(1, 10)]
    assert minutes == [1, 5, 15, 30, 60, 120, 240, 240, 240]
    assert schedule.max_defer == timedelta(hours=48)


def test_every_delay_is_jittered_within_its_share() -> None:
    schedule = RetrySchedule((60.0, 300.0), 3600.0, 14400.0, 0.2, timedelta(hours=48))
    rng = random.Random(7)
    for deferrals, base in ((1, 60.0), (2, 300.0), (3, 3600.0), (4, 7200.0), (9, 14400.0)):
        delays = [schedule.delay(deferrals, rng) for _ in range(200)]
        assert all(base * 0.8 <= delay <= base * 1.2 for delay in delays)
        assert len(set(delays)) > 100  # spread, not one value


def test_the_last_attempt_is_at_the_deadline_and_then_the_recipient_is_given_up() -> None:
    schedule = RetrySchedule((60.0,), 3600.0, 14400.0, 0.0, timedelta(hours=2))
    assert schedule.next_attempt(1, T0, T0) == T0 + timedelta(minutes=1)
    # 1 h 50 min in, the next delay (2 h) would pass the deadline: the last attempt is at the deadline.
    assert schedule.next_attempt(3, T0, T0 + timedelta(minutes=110)) == T0 + timedelta(hours=2)
    assert schedule.next_attempt(4, T0, T0 + timedelta(hours=2)) is None


def test_retry_intervals_are_validated() -> None:
    assert Settings(delivery_retry_intervals="1, 2.5,3").delivery_retry_delays() == (1.0, 2.5, 3.0)
    for bad in ("1,x", "0", "-5"):
        with pytest.raises(ValueError, match="HERALD_DELIVERY_RETRY_INTERVALS"):
            Settings(delivery_retry_intervals=bad)


def test_removed_retry_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_DELIVERY_MAX_ATTEMPTS", "3")
    with pytest.raises(ValueError, match="HERALD_DELIVERY_MAX_ATTEMPTS is no longer a setting"):
        Settings()


def test_a_421_defers_the_domains_other_recipients() -> None:
    domains = DomainDeferrals(3)
    domains.temporary("a@slow.example", 421, "421 4.7.0 too many connections, try later")
    assert domains.deferral("b@SLOW.example") == retries.DomainDeferral(
        "421 4.7.0 too many connections, try later"
    )
    assert domains.deferral("c@other.example") is None


def test_the_same_4_7_code_in_a_row_defers_the_domain_but_per_address_replies_do_not() -> None:
    domains = DomainDeferrals(3)
    for n in range(5):
        domains.temporary(f"{n}@grey.example", 450, "450 4.2.0 Recipient address rejected: Greylisted")
        domains.temporary(f"{n}@full.example", 452, "452 4.2.2 Mailbox full")
    assert domains.deferral("x@grey.example") is None and domains.deferral("x@full.example") is None

    domains.temporary("1@limit.example", 451, "451 4.7.1 try again in 5 minutes")
    domains.temporary("2@limit.example", 451, "451 4.7.1 try again in 5 minutes")
    domains.delivered("3@limit.example")  # a delivery in between starts the count again
    domains.temporary("4@limit.example", 451, "451 4.7.1 try again in 5 minutes")
    domains.temporary("5@limit.example", 451, "451 4.7.1 try again in 5 minutes")
    assert domains.deferral("x@limit.example") is None
    domains.temporary("6@limit.example", 451, "451 4.7.1 try again in 5 minutes")
    assert domains.deferral("x@limit.example") is not None


def test_no_connection_at_all_defers_every_domain() -> None:
    domains = DomainDeferrals(2)
    domains.temporary("a@one.example", None, "connection refused")
    assert domains.deferral("b@two.example") is None
    domains.temporary("c@two.example", None, "connection refused")
    assert domains.deferral("d@three.example") == retries.DomainDeferral("connection refused")


def test_a_schedule_time_is_never_early() -> None:
    assert retries._at(T0 + timedelta(seconds=1, microseconds=1)) == "2026-12-06T12:00:02Z"
    assert retries._at(T0) == "2026-12-06T12:00:00Z"


def test_one_windows_deferrals_travel_in_one_retry_message_per_attempt() -> None:
    subjects = Subjects("herald", 1)
    due = retries.together(
        [
            retries.DueRetry(7, 11, 1, T0 + timedelta(seconds=70)),
            retries.DueRetry(7, 12, 1, T0 + timedelta(seconds=52)),
            retries.DueRetry(7, 13, 1, T0 + timedelta(seconds=66)),
            retries.DueRetry(7, 14, 2, T0 + timedelta(seconds=300)),
        ]
    )
    # The earliest of a group's due times: never later than any of them (nor after a deadline).
    assert [r.due for r in due] == [T0 + timedelta(seconds=52)] * 3 + [T0 + timedelta(seconds=300)]
    rows = retries.outbox_rows(subjects, due)
    assert len(rows) == 2
    first = events.DELIVERY_RETRY.decode(bytes(rows[0]["p"]))  # type: ignore[arg-type]
    assert retries.recipients_of(first) == [11, 12, 13] and first.attempt == 1
    assert rows[0]["s"] == "herald.delivery.retries.at.7.11"
    assert rows[0]["m"] == "delivery.retries:7:11:1"
    assert json.loads(str(rows[0]["h"])) == {
        "Nats-Schedule": "@at 2026-12-06T12:00:52Z",
        "Nats-Schedule-Target": "herald.delivery.retries",
    }
    second = events.DELIVERY_RETRY.decode(bytes(rows[1]["p"]))  # type: ignore[arg-type]
    assert retries.recipients_of(second) == [14] and second.attempt == 2
    assert rows[1]["s"].startswith(retries.schedules_prefix(subjects))  # type: ignore[union-attr]


def test_a_retry_message_names_at_most_a_group_of_recipients() -> None:
    many = [retries.DueRetry(7, recipient_id, 1, T0) for recipient_id in range(1, 2 * retries.GROUP_LIMIT + 2)]
    rows = retries.outbox_rows(Subjects("herald", 1), many)
    named = [retries.recipients_of(events.DELIVERY_RETRY.decode(bytes(row["p"]))) for row in rows]  # type: ignore[arg-type]
    assert [len(ids) for ids in named] == [retries.GROUP_LIMIT, retries.GROUP_LIMIT, 1]
    assert [i for ids in named for i in ids] == list(range(1, 2 * retries.GROUP_LIMIT + 2))
    assert len({row["m"] for row in rows}) == 3


def test_a_retry_message_from_before_grouping_names_its_one_recipient() -> None:
    old = delivery_pb2.DeliveryRetry(campaign_id=7, recipient_id=11, attempt=1)
    assert retries.recipients_of(events.DELIVERY_RETRY.decode(events.DELIVERY_RETRY.encode(old, None))) == [11]
    bad = delivery_pb2.DeliveryRetry(campaign_id=7, recipient_id=11, attempt=1, also_recipient_ids=[0])
    with pytest.raises(events.UndecodableEvent):
        events.DELIVERY_RETRY.decode(events.DELIVERY_RETRY.encode(bad, None))
