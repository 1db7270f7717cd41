"""Schedules: validating a requested schedule, and when a Future or Recursive one is due."""

from __future__ import annotations

import calendar
import functools
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from services.campaign.domain.model import FutureSchedule, RecursiveSchedule, Schedule, ScheduleType
from services.common.errors import FieldViolation

# Entries of the host's zone database that are not IANA zones of their own.
_NOT_TIME_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_RECURSIVE_RANGES: dict[str, tuple[int, int]] = {
    "days_of_week": (0, 6),
    "days_of_month": (1, 31),
    "months": (1, 12),
    "hours": (0, 23),
    "minutes": (0, 59),
}
_RECURSIVE_REQUIRED: dict[str, str] = {
    "months": "RECURSIVE_MONTHS_REQUIRED",
    "hours": "RECURSIVE_HOURS_REQUIRED",
    "minutes": "RECURSIVE_MINUTES_REQUIRED",
}
# The longest each month gets (29 February included): a day of month beyond it never occurs.
_LONGEST_MONTH = {month: calendar.monthrange(2024, month)[1] for month in range(1, 13)}
# Long enough to reach a 29 February from any day (2096 to 2104 skips 2100).
_RECURRENCE_HORIZON_DAYS = 9 * 366


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_TIME_ZONES


def is_time_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone this host knows (e.g. "America/New_York", "UTC")."""
    return name in _time_zones()


@dataclass(frozen=True)
class ScheduleRequest:
    """A schedule as a caller sent it, before validation; `detail` names the oneof member that was set, and
    `type` is None when the caller named no schedule type this version knows."""

    type: ScheduleType | None = None
    detail: Literal["", "future", "recursive"] = ""
    send_time: datetime | None = None
    time_zone: str = ""
    recursive: RecursiveSchedule = field(default_factory=RecursiveSchedule)


def validate_schedule(request: ScheduleRequest, now: datetime) -> tuple[Schedule | None, list[FieldViolation]]:
    """The schedule to store and every problem with it; the schedule is None when there is any problem."""
    schedule_type = request.type
    if schedule_type is None:
        return None, [FieldViolation("schedule.type", "SCHEDULE_TYPE_INVALID", "schedule.type is required")]
    expected = {ScheduleType.FUTURE: "future", ScheduleType.RECURSIVE: "recursive"}.get(schedule_type, "")
    if request.detail and request.detail != expected:
        message = f"a {schedule_type.value} schedule takes no {request.detail} detail"
        return None, [FieldViolation("schedule.type", "SCHEDULE_TYPE_INVALID", message)]
    if schedule_type is ScheduleType.FUTURE:
        return _validate_future(request, now)
    if schedule_type is ScheduleType.RECURSIVE:
        rule, violations = validate_recurrence(request.recursive)
        return (None if violations else Schedule(schedule_type, recursive=rule)), violations
    return Schedule(schedule_type), []


def _validate_future(request: ScheduleRequest, now: datetime) -> tuple[Schedule | None, list[FieldViolation]]:
    violations: list[FieldViolation] = []
    if request.time_zone and not is_time_zone(request.time_zone):
        violations.append(
            FieldViolation(
                "schedule.future.time_zone",
                "TIME_ZONE_INVALID",
                f"{request.time_zone!r} is not an IANA time zone",
            )
        )
    if request.send_time is None:
        violations.append(
            FieldViolation(
                "schedule.future.send_time", "SEND_TIME_REQUIRED", "a Future schedule needs a send_time"
            )
        )
    elif request.send_time <= now:
        violations.append(
            FieldViolation("schedule.future.send_time", "SEND_TIME_IN_PAST", "send_time must lie in the future")
        )
    if violations or request.send_time is None:
        return None, violations
    return Schedule(ScheduleType.FUTURE, future=FutureSchedule(request.send_time, request.time_zone)), []


def validate_recurrence(rule: RecursiveSchedule) -> tuple[RecursiveSchedule, list[FieldViolation]]:
    """The rule with each list sorted and without duplicates, and every problem with it."""
    prefix = "schedule.recursive."
    violations: list[FieldViolation] = []
    if not rule.days_of_week and not rule.days_of_month:
        violations.append(
            FieldViolation(
                prefix + "days_of_week",
                "RECURSIVE_DAYS_REQUIRED",
                "a Recursive schedule needs days_of_week or days_of_month",
            )
        )
    for name, (low, high) in _RECURSIVE_RANGES.items():
        values: tuple[int, ...] = getattr(rule, name)
        if name in _RECURSIVE_REQUIRED and not values:
            violations.append(
                FieldViolation(prefix + name, _RECURSIVE_REQUIRED[name], f"a Recursive schedule needs {name}")
            )
        elif any(not low <= value <= high for value in values):
            violations.append(
                FieldViolation(
                    prefix + name, "RECURSIVE_VALUE_INVALID", f"{name} must lie between {low} and {high}"
                )
            )
    if rule.max_instances < 1:
        violations.append(
            FieldViolation(
                prefix + "max_instances", "RECURSIVE_MAX_INSTANCES_REQUIRED", "max_instances must be at least 1"
            )
        )
    if rule.time_zone and not is_time_zone(rule.time_zone):
        violations.append(
            FieldViolation(
                prefix + "time_zone", "TIME_ZONE_INVALID", f"{rule.time_zone!r} is not an IANA time zone"
            )
        )

    def distinct(values: Iterable[int]) -> tuple[int, ...]:
        return tuple(sorted(set(values)))

    normalized = RecursiveSchedule(
        days_of_week=distinct(rule.days_of_week),
        days_of_month=distinct(rule.days_of_month),
        months=distinct(rule.months),
        hours=distinct(rule.hours),
        minutes=distinct(rule.minutes),
        max_instances=rule.max_instances,
        time_zone=rule.time_zone,
    )
    if not violations and not _can_occur(normalized):
        violations.append(
            FieldViolation(
                prefix + "days_of_month",
                "RECURSIVE_VALUE_INVALID",
                "none of days_of_month occurs in any of the months",
            )
        )
    return normalized, violations


def _can_occur(rule: RecursiveSchedule) -> bool:
    if rule.days_of_week:
        return True
    return any(day <= _LONGEST_MONTH[month] for day in rule.days_of_month for month in rule.months)


def _day_matches(rule: RecursiveSchedule, day: date) -> bool:
    weekday = (day.weekday() + 1) % 7  # 0 is Sunday, as in the proto and cron
    by_week = weekday in rule.days_of_week
    by_month = day.day in rule.days_of_month
    if rule.days_of_week and rule.days_of_month:
        return by_week or by_month
    return by_week if rule.days_of_week else by_month


def next_occurrence(rule: RecursiveSchedule, after: datetime) -> datetime | None:
    """The first instant strictly after `after` (UTC) at which the rule fires; None if it never does."""
    zone = zoneinfo.ZoneInfo(rule.time_zone or "UTC")
    first_day = after.astimezone(zone).date()
    times = sorted((hour, minute) for hour in set(rule.hours) for minute in set(rule.minutes))
    for offset in range(_RECURRENCE_HORIZON_DAYS):
        day = first_day + timedelta(days=offset)
        if day.month not in rule.months or not _day_matches(rule, day):
            continue
        for hour, minute in times:
            instant = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
            if instant > after:
                return instant
    return None


def due_at(schedule: Schedule, now: datetime) -> datetime | None:
    """When a campaign armed at `now` with this schedule is due; None when it is not scheduled."""
    if schedule.future is not None:
        return schedule.future.send_time
    if schedule.recursive is not None:
        return next_occurrence(schedule.recursive, now)
    if schedule.type is ScheduleType.IMMEDIATE:
        return now
    return None
