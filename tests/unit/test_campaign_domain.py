"""Pure tests of the campaign rules: statuses, names, search, list queries, page tokens, schedules, targeting,
auto-resend, A/B variations, UpdateCampaign, status changes and split tests."""

from __future__ import annotations

import base64
import calendar
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.campaign import domain
from services.campaign.domain import CampaignStatus, OrderField, ScheduleType
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind

USER = Principal(user_id=7)
ADMIN = Principal(user_id=0, is_admin=True)


def _error(call: Callable[[], object]) -> DomainError:
    with pytest.raises(DomainError) as info:
        call()
    return info.value


def _field_reasons(error: DomainError) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in error.violations]


def _query(principal: Principal = USER, **overrides: object) -> domain.ListQuery:
    request: dict[str, object] = {
        "statuses": [],
        "search": "",
        "campaign_ids": [],
        "include_auto_resend": False,
        "order_by": OrderField.CAMPAIGN_ID,
        "descending": False,
        "page_size": 0,
        "skip": 0,
        "page_token": "",
    }
    request.update(overrides)
    return domain.build_list_query(principal, **request)  # type: ignore[arg-type]


# --- statuses ------------------------------------------------------------------------------------------------


def test_stored_status_values_are_the_legacy_names() -> None:
    assert [s.value for s in CampaignStatus] == [
        "Draft",
        "Ready",
        "Sending",
        "Paused",
        "Pending Approval",
        "Sent",
        "Failed",
        "Cancelled",
    ]


# --- ownership -----------------------------------------------------------------------------------------------


def test_user_owns_the_campaigns_they_create() -> None:
    assert domain.owner_of_new_campaign(USER) == 7


def test_admin_cannot_create_a_campaign() -> None:
    error = _error(lambda: domain.owner_of_new_campaign(ADMIN))
    assert (error.kind, error.reason) == (ErrorKind.PERMISSION, "ADMIN_CANNOT_OWN_CAMPAIGNS")


def test_user_queries_are_scoped_to_the_user_and_admin_queries_to_nobody() -> None:
    assert domain.owner_scope(USER) == 7
    assert domain.owner_scope(ADMIN) is None


# --- names ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", " ", "\t\n  "])
def test_blank_name_is_required(name: str) -> None:
    error = _error(lambda: domain.validate_campaign_name(name))
    assert error.kind is ErrorKind.INVALID
    assert _field_reasons(error) == [("name", "CAMPAIGN_NAME_REQUIRED")]


def test_name_longer_than_255_characters_is_too_long() -> None:
    error = _error(lambda: domain.validate_campaign_name("x" * 256))
    assert _field_reasons(error) == [("name", "CAMPAIGN_NAME_TOO_LONG")]


def test_name_of_255_characters_is_accepted() -> None:
    assert domain.validate_campaign_name("é" * 255) == "é" * 255


def test_name_is_stored_without_surrounding_whitespace() -> None:
    assert domain.validate_campaign_name("  Summer Sale 2025 \n") == "Summer Sale 2025"


def test_name_length_is_judged_after_trimming() -> None:
    assert domain.validate_campaign_name(" " + "x" * 255 + " ") == "x" * 255


def test_name_with_nul_character_is_invalid() -> None:
    error = _error(lambda: domain.validate_campaign_name("a\x00b"))
    assert _field_reasons(error) == [("name", "CAMPAIGN_NAME_INVALID")]


def test_copy_name_appends_copy_suffix() -> None:
    assert domain.copy_name("Summer Sale") == "Summer Sale (Copy)"


def test_copy_of_a_long_name_is_shortened_to_fit_255_characters() -> None:
    copied = domain.copy_name("n" * 255)
    assert len(copied) == 255
    assert copied == "n" * 248 + " (Copy)"


@given(st.text(min_size=1, max_size=300))
def test_copy_name_always_fits_and_ends_with_the_suffix(name: str) -> None:
    copied = domain.copy_name(name)
    assert len(copied) <= domain.MAX_NAME_LENGTH
    assert copied.endswith(" (Copy)")


# --- ids -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("campaign_id", [0, -5])
def test_campaign_id_must_be_positive(campaign_id: int) -> None:
    error = _error(lambda: domain.validate_campaign_id(campaign_id))
    assert _field_reasons(error) == [("campaign_id", "CAMPAIGN_ID_REQUIRED")]


def test_empty_campaign_id_list_is_required() -> None:
    error = _error(lambda: domain.require_campaign_ids([]))
    assert _field_reasons(error) == [("campaign_ids", "CAMPAIGN_IDS_REQUIRED")]


def test_campaign_id_list_drops_duplicates_keeping_first_order() -> None:
    assert domain.require_campaign_ids([5, 3, 5, 1, 3]) == [5, 3, 1]


def test_campaign_not_found_names_the_campaign_id_field() -> None:
    error = domain.campaign_not_found(12)
    assert error.kind is ErrorKind.NOT_FOUND
    assert _field_reasons(error) == [("campaign_id", "CAMPAIGN_NOT_FOUND")]


def test_batch_get_with_every_campaign_found_passes() -> None:
    domain.check_all_found([1, 2, 3], [3, 2, 1])


def test_batch_get_reports_one_violation_per_missing_campaign() -> None:
    error = _error(lambda: domain.check_all_found([4, 1, 9, 4, 2], [1, 2]))
    assert error.kind is ErrorKind.NOT_FOUND
    assert error.reason == "CAMPAIGN_NOT_FOUND"
    assert [(v.field, v.reason, v.description) for v in error.violations] == [
        ("campaign_ids", "CAMPAIGN_NOT_FOUND", "campaign 4 not found"),
        ("campaign_ids", "CAMPAIGN_NOT_FOUND", "campaign 9 not found"),
    ]


# --- page tokens ---------------------------------------------------------------------------------------------


def test_page_token_round_trips_its_offset() -> None:
    token = domain.encode_page_token(150, "abcdef0123456789")
    assert domain.decode_page_token(token, "abcdef0123456789") == 150


def test_page_token_is_url_safe_without_padding() -> None:
    token = domain.encode_page_token(12345, "abcdef0123456789")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


def _forge(claims: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "%%%",
        "AAAA",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _forge([1, 2]),
        _forge({"o": 10}),
        _forge({"o": 10, "f": "0000000000000000"}),
        _forge({"o": -1, "f": "abcdef0123456789"}),
        _forge({"o": "10", "f": "abcdef0123456789"}),
        _forge({"o": True, "f": "abcdef0123456789"}),
        _forge({"o": 1.5, "f": "abcdef0123456789"}),
        _forge({"o": 2**40, "f": "abcdef0123456789"}),
        "A" * 1000,
    ],
)
def test_malformed_or_tampered_page_token_is_invalid(token: str) -> None:
    error = _error(lambda: domain.decode_page_token(token, "abcdef0123456789"))
    assert error.kind is ErrorKind.INVALID
    assert _field_reasons(error) == [("page_token", "PAGE_TOKEN_INVALID")]


def test_page_token_with_an_edited_offset_but_same_filters_is_honoured() -> None:
    # The offset is not secret: it only moves through the caller's own matches.
    assert domain.decode_page_token(_forge({"o": 3, "f": "abcdef0123456789"}), "abcdef0123456789") == 3


@given(st.binary(max_size=64))
def test_decoding_arbitrary_bytes_as_a_page_token_never_crashes(raw: bytes) -> None:
    token = base64.urlsafe_b64encode(raw).decode()
    try:
        domain.decode_page_token(token, "abcdef0123456789")
    except DomainError as error:
        assert error.reason == "PAGE_TOKEN_INVALID"


def test_page_token_of_one_listing_is_rejected_by_a_listing_with_other_filters() -> None:
    first = _query(page_size=10, search="sale")
    token = domain.next_page_token(first, 10, 25)
    assert _query(page_size=10, search="sale", page_token=token).offset == 10
    for changed in (
        {"search": "other"},
        {"statuses": [CampaignStatus.SENT]},
        {"campaign_ids": [1]},
        {"include_auto_resend": True},
        {"order_by": OrderField.NAME},
        {"descending": True},
    ):
        request = {"page_size": 10, "search": "sale", "page_token": token, **changed}
        error = _error(lambda request=request: _query(**request))
        assert _field_reasons(error) == [("page_token", "PAGE_TOKEN_INVALID")]


def test_page_token_of_one_user_is_rejected_for_another() -> None:
    token = domain.next_page_token(_query(page_size=10), 10, 25)
    error = _error(lambda: _query(Principal(user_id=8), page_size=10, page_token=token))
    assert _field_reasons(error) == [("page_token", "PAGE_TOKEN_INVALID")]


def test_page_token_survives_a_different_page_size() -> None:
    token = domain.next_page_token(_query(page_size=10), 10, 25)
    assert _query(page_size=5, page_token=token).offset == 10


def test_filter_fingerprint_ignores_the_order_of_statuses_and_ids() -> None:
    a = _query(statuses=[CampaignStatus.DRAFT, CampaignStatus.READY], campaign_ids=[3, 4]).filter.fingerprint()
    b = _query(statuses=[CampaignStatus.READY, CampaignStatus.DRAFT], campaign_ids=[4, 3]).filter.fingerprint()
    assert a == b


# --- list queries --------------------------------------------------------------------------------------------


def test_a_page_token_belongs_to_its_publish_on_rss_filter() -> None:
    token = domain.next_page_token(_query(page_size=10, publish_on_rss=True), 10, 25)
    assert _query(page_size=10, publish_on_rss=True, page_token=token).offset == 10
    for other in (None, False):
        with pytest.raises(DomainError):
            _query(page_size=10, publish_on_rss=other, page_token=token)


def test_default_list_returns_everything_ordered_by_campaign_id_without_auto_resends() -> None:
    query = _query()
    assert (query.offset, query.limit) == (0, None)
    assert query.filter.order_by is OrderField.CAMPAIGN_ID
    assert query.filter.include_auto_resend is False
    assert query.filter.owner_user_id == 7


def test_admin_list_is_not_scoped_to_an_owner() -> None:
    assert _query(ADMIN).filter.owner_user_id is None


def test_page_size_above_1000_is_capped() -> None:
    assert _query(page_size=5000).limit == 1000


def test_negative_page_size_and_skip_are_both_reported() -> None:
    error = _error(lambda: _query(page_size=-1, skip=-3))
    assert error.kind is ErrorKind.INVALID
    assert _field_reasons(error) == [("page_size", "PAGE_SIZE_INVALID"), ("skip", "SKIP_INVALID")]


def test_skip_is_the_offset_without_a_page_token() -> None:
    assert _query(skip=40, page_size=20).offset == 40


def test_page_token_takes_precedence_over_skip() -> None:
    token = domain.next_page_token(_query(page_size=10), 10, 100)
    assert _query(page_size=10, skip=70, page_token=token).offset == 10


def test_unspecified_or_unknown_status_filter_is_invalid() -> None:
    error = _error(
        lambda: _query(statuses=[CampaignStatus.DRAFT, domain.Unrecognized(0), domain.Unrecognized(77)])
    )
    assert _field_reasons(error) == [("statuses", "CAMPAIGN_STATUS_INVALID")] * 2


def test_status_filter_keeps_each_status_once() -> None:
    query = _query(statuses=[CampaignStatus.SENT, CampaignStatus.SENT])
    assert query.filter.statuses == (CampaignStatus.SENT,)


def test_unknown_order_field_is_invalid() -> None:
    error = _error(lambda: _query(order_by=domain.Unrecognized(99)))
    assert _field_reasons(error) == [("order_by", "ORDER_BY_INVALID")]


def test_search_with_nul_character_is_invalid() -> None:
    error = _error(lambda: _query(search="a\x00"))
    assert _field_reasons(error) == [("search", "SEARCH_INVALID")]


def test_next_page_token_is_empty_when_the_page_reaches_the_end() -> None:
    query = _query(page_size=10, skip=20)
    assert domain.next_page_token(query, 5, 25) == ""
    assert domain.next_page_token(query, 10, 30) == ""


def test_next_page_token_points_after_the_returned_page() -> None:
    query = _query(page_size=10, skip=20)
    token = domain.next_page_token(query, 10, 31)
    assert domain.decode_page_token(token, query.filter.fingerprint()) == 30


def test_listing_everything_has_no_next_page() -> None:
    assert domain.next_page_token(_query(), 50, 50) == ""


def test_empty_page_past_the_end_has_no_next_page() -> None:
    assert domain.next_page_token(_query(page_size=10, skip=500), 0, 25) == ""


# --- split test winners --------------------------------------------------------------------------------------


def test_stored_winner_values_are_the_legacy_names() -> None:
    assert [w.value for w in domain.Winner] == ["Highest Open Rate", "Most Unique Clicks"]


# --- schedules -----------------------------------------------------------------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
IN_A_DAY = NOW + timedelta(days=1)


def _future(send_time: datetime | None = IN_A_DAY, time_zone: str = "") -> domain.ScheduleRequest:
    return domain.ScheduleRequest(ScheduleType.FUTURE, "future", send_time=send_time, time_zone=time_zone)


def _recursive(**fields: object) -> domain.ScheduleRequest:
    rule: dict[str, object] = {
        "days_of_week": (1,),
        "months": (6,),
        "hours": (9,),
        "minutes": (0,),
        "max_instances": 1,
    }
    rule.update(fields)
    return domain.ScheduleRequest(
        ScheduleType.RECURSIVE,
        "recursive",
        recursive=domain.RecursiveSchedule(**rule),  # type: ignore[arg-type]
    )


def _schedule_problems(request: domain.ScheduleRequest) -> list[tuple[str, str]]:
    schedule, violations = domain.validate_schedule(request, NOW)
    assert (schedule is None) == bool(violations)
    return [(v.field, v.reason) for v in violations]


@pytest.mark.parametrize("name", ["America/New_York", "Europe/Paris", "UTC", "Asia/Kolkata", "Etc/GMT+5"])
def test_iana_time_zones_are_accepted(name: str) -> None:
    assert domain.is_time_zone(name)


@pytest.mark.parametrize(
    "name",
    ["", "Mars/Base", "america/new_york", "localtime", "posixrules", "../etc/passwd", "/etc/localtime", "a\x00"],
)
def test_unknown_or_host_specific_time_zones_are_refused(name: str) -> None:
    assert not domain.is_time_zone(name)


def test_a_schedule_without_a_known_type_is_invalid() -> None:
    assert _schedule_problems(domain.ScheduleRequest(None)) == [("schedule.type", "SCHEDULE_TYPE_INVALID")]


@pytest.mark.parametrize(
    ("schedule_type", "detail"),
    [
        (ScheduleType.IMMEDIATE, "future"),
        (ScheduleType.NOT_SCHEDULED, "recursive"),
        (ScheduleType.FUTURE, "recursive"),
        (ScheduleType.RECURSIVE, "future"),
    ],
)
def test_a_detail_that_does_not_match_the_type_is_a_schedule_type_error(
    schedule_type: ScheduleType, detail: str
) -> None:
    request = domain.ScheduleRequest(schedule_type, detail)  # type: ignore[arg-type]
    assert _schedule_problems(request) == [("schedule.type", "SCHEDULE_TYPE_INVALID")]


@pytest.mark.parametrize(
    "schedule_type",
    [
        ScheduleType.NOT_SCHEDULED,
        ScheduleType.IMMEDIATE,
    ],
)
def test_schedules_without_detail_need_nothing_else(schedule_type: ScheduleType) -> None:
    request = domain.ScheduleRequest(schedule_type)
    assert domain.validate_schedule(request, NOW) == (domain.Schedule(schedule_type), [])


def test_future_schedule_keeps_its_instant_and_time_zone() -> None:
    schedule, violations = domain.validate_schedule(_future(time_zone="America/New_York"), NOW)
    assert violations == []
    assert schedule == domain.Schedule(
        ScheduleType.FUTURE, future=domain.FutureSchedule(IN_A_DAY, "America/New_York")
    )


def test_future_schedule_without_send_time_needs_one() -> None:
    assert _schedule_problems(_future(send_time=None)) == [("schedule.future.send_time", "SEND_TIME_REQUIRED")]


def test_future_schedule_without_any_detail_needs_a_send_time() -> None:
    request = domain.ScheduleRequest(ScheduleType.FUTURE)
    assert _schedule_problems(request) == [("schedule.future.send_time", "SEND_TIME_REQUIRED")]


@pytest.mark.parametrize("send_time", [NOW, NOW - timedelta(seconds=1), datetime(2000, 1, 1, tzinfo=UTC)])
def test_future_schedule_in_the_past_or_now_is_refused(send_time: datetime) -> None:
    assert _schedule_problems(_future(send_time=send_time)) == [("schedule.future.send_time", "SEND_TIME_IN_PAST")]


def test_future_schedule_reports_a_bad_time_zone_and_a_missing_send_time_together() -> None:
    assert _schedule_problems(_future(send_time=None, time_zone="Nowhere/Land")) == [
        ("schedule.future.time_zone", "TIME_ZONE_INVALID"),
        ("schedule.future.send_time", "SEND_TIME_REQUIRED"),
    ]


def test_recursive_schedule_without_anything_names_every_missing_field() -> None:
    request = domain.ScheduleRequest(ScheduleType.RECURSIVE)
    assert _schedule_problems(request) == [
        ("schedule.recursive.days_of_week", "RECURSIVE_DAYS_REQUIRED"),
        ("schedule.recursive.months", "RECURSIVE_MONTHS_REQUIRED"),
        ("schedule.recursive.hours", "RECURSIVE_HOURS_REQUIRED"),
        ("schedule.recursive.minutes", "RECURSIVE_MINUTES_REQUIRED"),
        ("schedule.recursive.max_instances", "RECURSIVE_MAX_INSTANCES_REQUIRED"),
    ]


def test_recursive_days_of_month_alone_are_enough() -> None:
    assert _schedule_problems(_recursive(days_of_week=(), days_of_month=(15,))) == []


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("days_of_week", (7,)),
        ("days_of_week", (-1,)),
        ("days_of_month", (0,)),
        ("days_of_month", (32,)),
        ("months", (13,)),
        ("months", (0,)),
        ("hours", (24,)),
        ("minutes", (60,)),
    ],
)
def test_recursive_values_out_of_range_name_their_list(name: str, values: tuple[int, ...]) -> None:
    assert _schedule_problems(_recursive(**{name: values})) == [
        (f"schedule.recursive.{name}", "RECURSIVE_VALUE_INVALID")
    ]


@pytest.mark.parametrize("max_instances", [0, -3])
def test_recursive_max_instances_must_be_at_least_one(max_instances: int) -> None:
    problems = _schedule_problems(_recursive(max_instances=max_instances))
    assert problems == [("schedule.recursive.max_instances", "RECURSIVE_MAX_INSTANCES_REQUIRED")]


def test_recursive_time_zone_must_be_iana() -> None:
    problems = _schedule_problems(_recursive(time_zone="Europe/Atlantis"))
    assert problems == [("schedule.recursive.time_zone", "TIME_ZONE_INVALID")]


def test_recursive_days_that_never_occur_in_the_months_are_refused() -> None:
    problems = _schedule_problems(_recursive(days_of_week=(), days_of_month=(30, 31), months=(2,)))
    assert problems == [("schedule.recursive.days_of_month", "RECURSIVE_VALUE_INVALID")]


def test_recursive_29_february_is_a_day_that_occurs() -> None:
    assert _schedule_problems(_recursive(days_of_week=(), days_of_month=(29,), months=(2,))) == []


def test_recursive_lists_are_stored_sorted_without_duplicates() -> None:
    schedule, _ = domain.validate_schedule(
        _recursive(days_of_week=(5, 1, 5), hours=(23, 0, 23), minutes=(30, 0)), NOW
    )
    assert schedule is not None and schedule.recursive is not None
    assert schedule.recursive.days_of_week == (1, 5)
    assert schedule.recursive.hours == (0, 23)
    assert schedule.recursive.minutes == (0, 30)


def _rule(**fields: object) -> domain.RecursiveSchedule:
    base: dict[str, object] = {"months": tuple(range(1, 13)), "hours": (9,), "minutes": (0,), "max_instances": 1}
    base.update(fields)
    return domain.RecursiveSchedule(**base)  # type: ignore[arg-type]


def test_next_occurrence_counts_weekdays_from_sunday() -> None:
    # 1 June 2025 is a Sunday: weekday 0 at 09:00 is later that day, weekday 1 is Monday.
    assert domain.next_occurrence(_rule(days_of_week=(0,)), NOW - timedelta(hours=4)) == datetime(
        2025, 6, 1, 9, 0, tzinfo=UTC
    )
    assert domain.next_occurrence(_rule(days_of_week=(1,)), NOW) == datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


def test_next_occurrence_is_strictly_after_the_given_instant() -> None:
    at_nine = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
    assert domain.next_occurrence(_rule(days_of_week=(1,)), at_nine) == datetime(2025, 6, 9, 9, 0, tzinfo=UTC)


def test_next_occurrence_matches_weekday_or_day_of_month_when_both_are_given() -> None:
    # cron semantics: the 5th (a Thursday) or any Monday, whichever comes first.
    rule = _rule(days_of_week=(1,), days_of_month=(5,))
    assert domain.next_occurrence(rule, datetime(2025, 6, 3, tzinfo=UTC)) == datetime(2025, 6, 5, 9, tzinfo=UTC)
    assert domain.next_occurrence(rule, datetime(2025, 6, 6, tzinfo=UTC)) == datetime(2025, 6, 9, 9, tzinfo=UTC)


def test_next_occurrence_reads_hours_in_the_rule_time_zone() -> None:
    rule = _rule(days_of_month=(10,), time_zone="Europe/Paris")
    # 09:00 in Paris is 07:00 UTC in summer and 08:00 UTC in winter.
    assert domain.next_occurrence(rule, NOW) == datetime(2025, 6, 10, 7, 0, tzinfo=UTC)
    assert domain.next_occurrence(rule, datetime(2025, 12, 1, tzinfo=UTC)) == datetime(2025, 12, 10, 8, tzinfo=UTC)


def test_next_occurrence_of_29_february_waits_for_a_leap_year() -> None:
    rule = _rule(days_of_month=(29,), months=(2,))
    assert domain.next_occurrence(rule, NOW) == datetime(2028, 2, 29, 9, 0, tzinfo=UTC)


def test_next_occurrence_of_an_impossible_rule_is_none() -> None:
    assert domain.next_occurrence(_rule(days_of_month=(31,), months=(4,)), NOW) is None


@given(
    st.sets(st.integers(0, 6), max_size=3),
    st.sets(st.integers(1, 31), max_size=3),
    st.sets(st.integers(1, 12), min_size=1, max_size=3),
    st.sets(st.integers(0, 23), min_size=1, max_size=3),
    st.sets(st.integers(0, 59), min_size=1, max_size=3),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
)
def test_next_occurrence_is_a_matching_minute_after_the_instant(
    weekdays: set[int], month_days: set[int], months: set[int], hours: set[int], minutes: set[int], after: datetime
) -> None:
    rule = domain.RecursiveSchedule(
        days_of_week=tuple(weekdays),
        days_of_month=tuple(month_days),
        months=tuple(months),
        hours=tuple(hours),
        minutes=tuple(minutes),
        max_instances=1,
    )
    found = domain.next_occurrence(rule, after)
    # Without weekdays, the rule occurs only if some day of month exists in some month (29 February counts).
    possible = bool(weekdays) or any(
        day <= calendar.monthrange(2024, month)[1] for day in month_days for month in months
    )
    if not possible:
        assert found is None
        return
    assert found is not None and found > after
    assert (found.month in months, found.hour in hours, found.minute in minutes) == (True, True, True)
    weekday = (found.weekday() + 1) % 7
    assert weekday in weekdays or found.day in month_days
    # Nothing matches in the minutes between: stepping a minute at a time would find nothing earlier.
    if (found - after) < timedelta(hours=2):
        probe = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        while probe < found:
            matches_day = (probe.weekday() + 1) % 7 in weekdays or probe.day in month_days
            assert not (matches_day and probe.month in months and probe.hour in hours and probe.minute in minutes)
            probe += timedelta(minutes=1)


def test_due_instant_follows_the_schedule() -> None:
    assert domain.due_at(domain.NOT_SCHEDULED, NOW) is None
    assert domain.due_at(domain.Schedule(ScheduleType.IMMEDIATE), NOW) == NOW
    future = domain.Schedule(ScheduleType.FUTURE, future=domain.FutureSchedule(IN_A_DAY))
    assert domain.due_at(future, NOW) == IN_A_DAY
    recursive = domain.Schedule(ScheduleType.RECURSIVE, recursive=_rule(days_of_week=(1,)))
    assert domain.due_at(recursive, NOW) == datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


# --- auto-resend ---------------------------------------------------------------------------------------------


def _auto_resend_problems(**fields: object) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in domain.validate_auto_resend(domain.AutoResend(**fields))]  # type: ignore[arg-type]


def test_enabled_auto_resend_needs_wait_days_subject_and_preheader() -> None:
    assert _auto_resend_problems(enabled=True) == [
        ("auto_resend.wait_days", "AUTO_RESEND_WAIT_DAYS_INVALID"),
        ("auto_resend.subject", "AUTO_RESEND_SUBJECT_REQUIRED"),
        ("auto_resend.preheader_text", "AUTO_RESEND_PREHEADER_REQUIRED"),
    ]


@pytest.mark.parametrize("wait_days", [0, -1, 366])
def test_enabled_auto_resend_waits_between_1_and_365_days(wait_days: int) -> None:
    problems = _auto_resend_problems(enabled=True, wait_days=wait_days, subject="s", preheader_text="p")
    assert problems == [("auto_resend.wait_days", "AUTO_RESEND_WAIT_DAYS_INVALID")]


def test_complete_auto_resend_is_accepted() -> None:
    assert (
        _auto_resend_problems(enabled=True, wait_days=365, subject="Again", preheader_text="Did you miss it") == []
    )


def test_blank_subject_counts_as_missing() -> None:
    problems = _auto_resend_problems(enabled=True, wait_days=2, subject="  ", preheader_text="p")
    assert problems == [("auto_resend.subject", "AUTO_RESEND_SUBJECT_REQUIRED")]


def test_disabled_auto_resend_needs_nothing() -> None:
    assert _auto_resend_problems(enabled=False) == []


def test_nul_in_auto_resend_text_is_invalid() -> None:
    problems = _auto_resend_problems(enabled=True, wait_days=1, subject="a\x00", preheader_text="p")
    assert problems == [("auto_resend.subject", "TEXT_INVALID")]


# --- A/B variations ------------------------------------------------------------------------------------------


def _variation_reasons(*pairs: tuple[int, int]) -> list[str]:
    violations = domain.validate_variations([domain.Variation(email_id, weight) for email_id, weight in pairs])
    assert all(v.field == "variations" for v in violations)
    return [v.reason for v in violations]


def test_no_variations_means_no_ab_test() -> None:
    assert _variation_reasons() == []


def test_one_variation_is_too_few() -> None:
    assert _variation_reasons((1, 50)) == ["VARIATIONS_TOO_FEW"]


def test_six_variations_are_too_many() -> None:
    assert _variation_reasons(*((i, 10) for i in range(1, 7))) == ["VARIATIONS_TOO_MANY"]


def test_two_to_five_variations_are_accepted() -> None:
    assert _variation_reasons((1, 50), (2, 50)) == []
    assert _variation_reasons(*((i, 20) for i in range(1, 6))) == []


@pytest.mark.parametrize("pair", [(0, 50), (3, 0)])
def test_variation_without_email_or_weight_misses_fields(pair: tuple[int, int]) -> None:
    assert _variation_reasons((1, 50), pair) == ["VARIATION_FIELDS_REQUIRED"]


@pytest.mark.parametrize("pair", [(-3, 50), (3, -50)])
def test_negative_email_id_or_weight_is_invalid(pair: tuple[int, int]) -> None:
    assert _variation_reasons((1, 50), pair) == ["VARIATION_VALUE_INVALID"]


def test_two_variations_with_the_same_email_are_invalid() -> None:
    assert _variation_reasons((1, 50), (1, 50)) == ["VARIATION_VALUE_INVALID"]


def test_a_share_of_exactly_one_percent_is_enough() -> None:
    assert _variation_reasons((1, 99), (2, 1)) == []


def test_a_share_below_one_percent_is_too_small() -> None:
    assert _variation_reasons((1, 100), (2, 1)) == ["VARIATION_SHARE_TOO_SMALL"]


def test_every_variation_problem_is_named_at_once() -> None:
    reasons = _variation_reasons(*((i, 1000) for i in range(1, 6)), (0, 1), (-1, 5))
    assert reasons == [
        "VARIATIONS_TOO_MANY",
        "VARIATION_FIELDS_REQUIRED",
        "VARIATION_VALUE_INVALID",
        "VARIATION_SHARE_TOO_SMALL",
    ]


@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=5))
def test_share_rule_matches_the_percentages(weights: list[int]) -> None:
    reasons = _variation_reasons(*((i + 1, w) for i, w in enumerate(weights)))
    below = any(w * 100 / sum(weights) < 1 for w in weights)
    assert ("VARIATION_SHARE_TOO_SMALL" in reasons) == below


# --- targeting -----------------------------------------------------------------------------------------------

BUNDLE = {
    "operator": "and",
    "criteria": [{"list_id": 5.0, "operator": "or", "rules": [[{"field": "x", "value": 2.0}]]}],
}


def _targeting_problems(**fields: object) -> list[tuple[str, str]]:
    _, violations = domain.validate_targeting(domain.Targeting(**fields))  # type: ignore[arg-type]
    return [(v.field, v.reason) for v in violations]


def test_targeting_sources_need_positive_lists_and_non_negative_segments() -> None:
    assert _targeting_problems(
        included=(domain.RecipientSource(0),), excluded=(domain.RecipientSource(3, -1),)
    ) == [("targeting.included", "TARGETING_INVALID"), ("targeting.excluded", "TARGETING_INVALID")]


def test_targeting_drops_repeated_sources_keeping_order() -> None:
    a, b = domain.RecipientSource(2, 0), domain.RecipientSource(1, 7)
    targeting, violations = domain.validate_targeting(domain.Targeting(included=(a, b, a)))
    assert violations == []
    assert targeting.included == (a, b)


def test_rules_bundle_numbers_are_stored_as_integers_when_whole() -> None:
    targeting, violations = domain.validate_targeting(domain.Targeting(rules_bundle=BUNDLE))
    assert violations == []
    assert targeting.rules_bundle == {
        "operator": "and",
        "criteria": [{"list_id": 5, "operator": "or", "rules": [[{"field": "x", "value": 2}]]}],
    }


def test_empty_rules_bundle_means_no_rules() -> None:
    targeting, violations = domain.validate_targeting(domain.Targeting(rules_bundle={}))
    assert (targeting.rules_bundle, violations) == (None, [])


@pytest.mark.parametrize(
    "bundle",
    [
        {"criteria": []},
        {"operator": "xor", "criteria": []},
        {"operator": 1, "criteria": []},
        {"operator": "and"},
        {"operator": "and", "criteria": {"list_id": 1}},
        {"operator": "and", "criteria": ["x"]},
        {"operator": "and", "criteria": [{"operator": "and"}]},
        {"operator": "and", "criteria": [{"list_id": 0}]},
        {"operator": "and", "criteria": [{"list_id": 1.5}]},
        {"operator": "and", "criteria": [{"list_id": True}]},
        {"operator": "and", "criteria": [{"list_id": "5"}]},
        {"operator": "and", "criteria": [{"list_id": 1, "rules": ["a\x00"]}]},
        {"operator": "and", "criteria": [{"list_id": 1, "x": float("nan")}]},
    ],
)
def test_malformed_rules_bundle_envelope_is_invalid(bundle: dict[str, object]) -> None:
    assert _targeting_problems(rules_bundle=bundle) == [("targeting.rules_bundle", "RULES_BUNDLE_INVALID")]


@pytest.mark.parametrize("operator", ["and", "or", "AND", "Or"])
def test_rules_bundle_operator_is_and_or_or_in_any_case(operator: str) -> None:
    assert _targeting_problems(rules_bundle={"operator": operator, "criteria": []}) == []


# --- UpdateCampaign ------------------------------------------------------------------------------------------

USER_ID = 7
EMAIL, OTHER_EMAIL, VARIANT_A, VARIANT_B = 11, 12, 13, 14
LIVE = domain.References(live_email_ids=frozenset({EMAIL, OTHER_EMAIL, VARIANT_A, VARIANT_B}))
UNTRUSTED = Principal(user_id=USER_ID, untrusted=True)
FUTURE_SCHEDULE = domain.Schedule(ScheduleType.FUTURE, future=domain.FutureSchedule(IN_A_DAY, "UTC"))


def _campaign(status: CampaignStatus = CampaignStatus.DRAFT, **fields: object) -> domain.Campaign:
    values: dict[str, object] = {
        "campaign_id": 5,
        "owner_user_id": USER_ID,
        "name": "Summer",
        "status": status,
        "status_reason": "",
        "email_id": EMAIL,
        "original_campaign_id": None,
        "created_at": NOW,
        "updated_at": NOW,
        "send_started_at": None,
    }
    values.update(fields)
    return domain.Campaign(**values)  # type: ignore[arg-type]


def _patch(*paths: str, **fields: object) -> domain.CampaignPatch:
    return domain.CampaignPatch(5, paths, **fields)  # type: ignore[arg-type]


def _update(
    current: domain.Campaign,
    patch: domain.CampaignPatch,
    principal: Principal = USER,
    references: domain.References = LIVE,
) -> domain.Campaign:
    return domain.apply_update(current, patch, references, principal, NOW)


def _update_error(
    current: domain.Campaign,
    patch: domain.CampaignPatch,
    principal: Principal = USER,
    references: domain.References = LIVE,
) -> DomainError:
    return _error(lambda: _update(current, patch, principal, references))


READY = CampaignStatus.READY
DRAFT = CampaignStatus.DRAFT


def test_unknown_mask_path_is_invalid() -> None:
    error = _update_error(_campaign(), _patch("name", "statistics", "schedule.type"))
    assert _field_reasons(error)[0] == ("update_mask", "UPDATE_MASK_INVALID")


def test_empty_mask_changes_nothing() -> None:
    current = _campaign()
    assert _update(current, _patch()) == current


def test_only_the_masked_fields_change() -> None:
    updated = _update(_campaign(), _patch("name", name=" Winter ", status_reason="ignored"))
    assert (updated.name, updated.status_reason) == ("Winter", "")


@pytest.mark.parametrize(
    "status",
    [
        CampaignStatus.SENDING,
        CampaignStatus.SENT,
        CampaignStatus.FAILED,
        CampaignStatus.PAUSED,
        CampaignStatus.CANCELLED,
        CampaignStatus.PENDING_APPROVAL,
        domain.Unrecognized(0),
        domain.Unrecognized(99),
    ],
)
def test_statuses_a_client_may_not_set_are_refused(status: CampaignStatus | domain.Unrecognized) -> None:
    error = _update_error(_campaign(), _patch("status", status=status))
    assert _field_reasons(error) == [("status", "STATUS_INVALID")]


def test_draft_becomes_ready_with_an_email() -> None:
    assert _update(_campaign(), _patch("status", status=READY)).status is CampaignStatus.READY


def test_ready_without_an_email_needs_one() -> None:
    error = _update_error(_campaign(email_id=None), _patch("status", status=READY))
    assert error.kind is ErrorKind.PRECONDITION
    assert _field_reasons(error) == [("email_id", "EMAIL_REQUIRED")]


AB_VARIATIONS = (domain.Variation(VARIANT_A, 50), domain.Variation(VARIANT_B, 50))


def test_ready_with_variations_and_no_email_is_armed() -> None:
    # RULINGS 14: the variations are the content.
    updated = _update(_campaign(email_id=None, variations=AB_VARIATIONS), _patch("status", status=READY))
    assert (updated.status, updated.email_id) == (CampaignStatus.READY, None)


def test_variations_and_ready_in_one_update_need_no_email() -> None:
    patch = _patch("status", "variations", status=READY, variations=AB_VARIATIONS)
    updated = _update(_campaign(email_id=None), patch)
    assert (updated.status, updated.variations) == (CampaignStatus.READY, AB_VARIATIONS)


def test_clearing_the_variations_of_a_ready_campaign_without_email_is_refused() -> None:
    current = _campaign(CampaignStatus.READY, email_id=None, variations=AB_VARIATIONS)
    error = _update_error(current, _patch("variations", variations=()))
    assert _field_reasons(error) == [("email_id", "EMAIL_REQUIRED")]


def test_arming_a_campaign_whose_variation_email_was_deleted_meanwhile_is_refused() -> None:
    current = _campaign(email_id=None, variations=(domain.Variation(VARIANT_A, 50), domain.Variation(99, 50)))
    error = _update_error(current, _patch("status", status=READY))
    assert _field_reasons(error) == [("variations", "VARIATION_EMAIL_NOT_FOUND")]


def test_clearing_the_email_of_a_ready_campaign_is_refused() -> None:
    error = _update_error(_campaign(CampaignStatus.READY), _patch("email_id", email_id=0))
    assert _field_reasons(error) == [("email_id", "EMAIL_REQUIRED")]


def test_email_and_ready_in_one_update() -> None:
    updated = _update(_campaign(email_id=None), _patch("status", "email_id", status=READY, email_id=OTHER_EMAIL))
    assert (updated.status, updated.email_id) == (CampaignStatus.READY, OTHER_EMAIL)


@pytest.mark.parametrize("email_id", [99, -1])
def test_an_email_that_is_not_the_owners_is_not_found(email_id: int) -> None:
    error = _update_error(_campaign(), _patch("email_id", email_id=email_id))
    assert _field_reasons(error) == [("email_id", "EMAIL_NOT_FOUND")]


def test_untrusted_user_moving_to_ready_waits_for_approval() -> None:
    updated = _update(_campaign(), _patch("status", status=READY), UNTRUSTED)
    assert updated.status is CampaignStatus.PENDING_APPROVAL


def test_untrusted_user_changing_content_of_a_ready_campaign_needs_a_new_approval() -> None:
    updated = _update(_campaign(CampaignStatus.READY), _patch("email_id", email_id=OTHER_EMAIL), UNTRUSTED)
    assert updated.status is CampaignStatus.PENDING_APPROVAL


def test_untrusted_user_rescheduling_a_ready_campaign_stays_ready() -> None:
    schedule = domain.ScheduleRequest(ScheduleType.IMMEDIATE)
    updated = _update(_campaign(CampaignStatus.READY), _patch("schedule", schedule=schedule), UNTRUSTED)
    assert updated.status is CampaignStatus.READY


def test_pending_approval_may_return_to_draft_but_not_become_ready() -> None:
    current = _campaign(CampaignStatus.PENDING_APPROVAL)
    assert _update(current, _patch("status", status=DRAFT)).status is CampaignStatus.DRAFT
    error = _update_error(current, _patch("status", status=READY))
    assert (error.kind, _field_reasons(error)) == (ErrorKind.PRECONDITION, [("status", "STATUS_INVALID")])
    assert error.metadata == {"status": "CAMPAIGN_STATUS_PENDING_APPROVAL"}


@pytest.mark.parametrize(
    "status", [CampaignStatus.SENDING, CampaignStatus.PAUSED, CampaignStatus.SENT, CampaignStatus.FAILED]
)
def test_a_campaign_past_ready_cannot_go_back_by_update(status: CampaignStatus) -> None:
    error = _update_error(_campaign(status), _patch("status", status=DRAFT))
    assert _field_reasons(error) == [("status", "STATUS_INVALID")]


@pytest.mark.parametrize(
    "status",
    [
        CampaignStatus.SENDING,
        CampaignStatus.PAUSED,
        CampaignStatus.SENT,
        CampaignStatus.FAILED,
        CampaignStatus.CANCELLED,
        CampaignStatus.PENDING_APPROVAL,
    ],
)
def test_recipients_content_and_schedule_change_only_in_draft_or_ready(status: CampaignStatus) -> None:
    patch = _patch(
        "email_id",
        "schedule",
        "targeting",
        "auto_resend",
        "variations",
        email_id=OTHER_EMAIL,
        schedule=domain.ScheduleRequest(ScheduleType.IMMEDIATE),
        targeting=domain.Targeting(included=(domain.RecipientSource(3),)),
        auto_resend=domain.AutoResend(enabled=True, wait_days=2, subject="s", preheader_text="p"),
        variations=(domain.Variation(VARIANT_A, 1), domain.Variation(VARIANT_B, 1)),
    )
    error = _update_error(_campaign(status), patch)
    assert error.kind is ErrorKind.PRECONDITION
    assert sorted(_field_reasons(error)) == [
        ("auto_resend", "CAMPAIGN_NOT_EDITABLE"),
        ("email_id", "CAMPAIGN_NOT_EDITABLE"),
        ("schedule", "CAMPAIGN_NOT_EDITABLE"),
        ("targeting", "CAMPAIGN_NOT_EDITABLE"),
        ("variations", "CAMPAIGN_NOT_EDITABLE"),
    ]


def test_content_sent_again_unchanged_is_no_change_after_ready() -> None:
    current = _campaign(CampaignStatus.SENDING, schedule=FUTURE_SCHEDULE, scheduled_at=IN_A_DAY)
    patch = _patch(
        "email_id", "schedule", "targeting", "variations", email_id=EMAIL, schedule=_future(time_zone="UTC")
    )
    assert _update(current, patch) == current


@pytest.mark.parametrize("status", [CampaignStatus.SENDING, CampaignStatus.SENT, CampaignStatus.CANCELLED])
def test_name_and_tracking_settings_change_in_any_status(status: CampaignStatus) -> None:
    patch = _patch(
        "name",
        "status_reason",
        "approval_user_explanation",
        "google_analytics_domains",
        "publish_on_rss",
        "s2s_enabled",
        name="Renamed",
        status_reason="why",
        approval_user_explanation="please",
        google_analytics_domains=" ",
        publish_on_rss=True,
        s2s_enabled=False,
    )
    updated = _update(_campaign(status), patch)
    assert updated.status is status
    assert (updated.name, updated.status_reason, updated.approval_user_explanation) == ("Renamed", "why", "please")
    assert (updated.google_analytics_domains, updated.publish_on_rss, updated.s2s_enabled) == ("", True, False)


def test_settings_herald_does_not_implement_are_refused_unless_left_at_their_default() -> None:
    """Issue 14: a setting that is accepted is acted on, or refused; GA link tagging and S2S tracking are not
    implemented, so only their defaults may be stored."""
    patch = _patch(
        "google_analytics_domains",
        "s2s_enabled",
        google_analytics_domains="example.com",
        s2s_enabled=True,
    )
    error = _update_error(_campaign(), patch)
    assert error.kind is ErrorKind.INVALID
    assert _field_reasons(error) == [
        ("google_analytics_domains", "SETTING_UNSUPPORTED"),
        ("s2s_enabled", "SETTING_UNSUPPORTED"),
    ]
    assert "not supported" in error.violations[0].description


def test_free_text_with_nul_is_invalid() -> None:
    error = _update_error(_campaign(), _patch("status_reason", "google_analytics_domains", status_reason="a\x00"))
    assert _field_reasons(error) == [("status_reason", "TEXT_INVALID")]


def test_ready_campaign_may_be_rescheduled() -> None:
    updated = _update(_campaign(CampaignStatus.READY), _patch("schedule", schedule=_future()))
    assert (updated.status, updated.schedule, updated.scheduled_at) == (
        CampaignStatus.READY,
        domain.Schedule(ScheduleType.FUTURE, future=domain.FutureSchedule(IN_A_DAY)),
        IN_A_DAY,
    )


def test_immediate_schedule_is_due_when_set() -> None:
    patch = _patch("schedule", schedule=domain.ScheduleRequest(ScheduleType.IMMEDIATE))
    assert _update(_campaign(), patch).scheduled_at == NOW


def test_arming_a_campaign_whose_future_send_time_passed_is_refused() -> None:
    stale = domain.Schedule(ScheduleType.FUTURE, future=domain.FutureSchedule(NOW - timedelta(hours=1)))
    error = _update_error(_campaign(schedule=stale), _patch("status", status=READY))
    assert _field_reasons(error) == [("schedule.future.send_time", "SEND_TIME_IN_PAST")]


def test_arming_a_recursive_campaign_computes_its_next_occurrence() -> None:
    recursive = domain.Schedule(ScheduleType.RECURSIVE, recursive=_rule(days_of_week=(1,)))
    updated = _update(
        _campaign(schedule=recursive, scheduled_at=datetime(2020, 1, 1, tzinfo=UTC)),
        _patch("status", status=READY),
    )
    assert updated.scheduled_at == datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


def test_a_rename_keeps_the_due_instant() -> None:
    current = _campaign(CampaignStatus.READY, schedule=FUTURE_SCHEDULE, scheduled_at=IN_A_DAY)
    assert _update(current, _patch("name", name="New")).scheduled_at == IN_A_DAY


def test_variations_are_stored_in_order_and_an_empty_list_clears_them() -> None:
    variations = (domain.Variation(VARIANT_B, 30), domain.Variation(VARIANT_A, 70))
    updated = _update(_campaign(), _patch("variations", variations=variations))
    assert updated.variations == variations
    assert _update(updated, _patch("variations")).variations == ()


def test_variation_emails_that_are_not_the_owners_are_not_found_even_beside_other_problems() -> None:
    variations = (domain.Variation(VARIANT_A, 1000), domain.Variation(404, 1))
    error = _update_error(_campaign(), _patch("variations", variations=variations))
    assert _field_reasons(error) == [
        ("variations", "VARIATION_EMAIL_NOT_FOUND"),
        ("variations", "VARIATION_SHARE_TOO_SMALL"),
    ]


def test_original_campaign_must_be_found_and_not_the_campaign_itself() -> None:
    assert (
        _update(
            _campaign(),
            _patch("original_campaign_id", original_campaign_id=3),
            references=domain.References(original_campaign_found=True),
        ).original_campaign_id
        == 3
    )
    for original in (3, 5, -1):
        error = _update_error(_campaign(), _patch("original_campaign_id", original_campaign_id=original))
        assert _field_reasons(error) == [("original_campaign_id", "ORIGINAL_CAMPAIGN_NOT_FOUND")]


def test_original_campaign_zero_clears_the_link() -> None:
    updated = _update(_campaign(original_campaign_id=3), _patch("original_campaign_id", original_campaign_id=0))
    assert updated.original_campaign_id is None


def test_every_problem_is_reported_together_in_legacy_order() -> None:
    patch = _patch(
        "targeting",
        "name",
        "variations",
        "auto_resend",
        "schedule",
        "email_id",
        "status",
        status=CampaignStatus.SENT,
        email_id=404,
        schedule=_recursive(months=(), hours=(), minutes=(), max_instances=0, time_zone="X"),
        auto_resend=domain.AutoResend(enabled=True),
        variations=(domain.Variation(VARIANT_A, 1),),
        name="",
        targeting=domain.Targeting(included=(domain.RecipientSource(-1),)),
    )
    error = _update_error(_campaign(), patch)
    assert error.kind is ErrorKind.INVALID
    assert error.reason == "STATUS_INVALID"
    assert [reason for _, reason in _field_reasons(error)] == [
        "STATUS_INVALID",
        "EMAIL_NOT_FOUND",
        "TIME_ZONE_INVALID",
        "RECURSIVE_MONTHS_REQUIRED",
        "RECURSIVE_HOURS_REQUIRED",
        "RECURSIVE_MINUTES_REQUIRED",
        "RECURSIVE_MAX_INSTANCES_REQUIRED",
        "AUTO_RESEND_WAIT_DAYS_INVALID",
        "AUTO_RESEND_SUBJECT_REQUIRED",
        "AUTO_RESEND_PREHEADER_REQUIRED",
        "VARIATIONS_TOO_FEW",
        "CAMPAIGN_NAME_REQUIRED",
        "TARGETING_INVALID",
    ]


def test_request_problems_found_without_the_campaign() -> None:
    patch = domain.CampaignPatch(0, ("name", "schedule"), name="", schedule=_future(send_time=None))
    _, violations = domain.check_patch(patch, NOW)
    assert [(v.field, v.reason) for v in violations] == [
        ("campaign.campaign_id", "CAMPAIGN_ID_REQUIRED"),
        ("name", "CAMPAIGN_NAME_REQUIRED"),
        ("schedule.future.send_time", "SEND_TIME_REQUIRED"),
    ]


def test_fields_are_checked_in_the_legacy_order_whatever_the_mask_order() -> None:
    paths = ("google_analytics_domains", "approval_user_explanation", "status_reason", "auto_resend", "name")
    patch = domain.CampaignPatch(
        5,
        paths,
        name="a\x00",
        auto_resend=domain.AutoResend(subject="a\x00"),
        status_reason="a\x00",
        approval_user_explanation="a\x00",
        google_analytics_domains="a\x00",
    )
    changes, violations = domain.check_patch(patch, NOW)
    assert changes == {}
    assert [v.field for v in violations] == [
        "name",
        "auto_resend.subject",
        "status_reason",
        "approval_user_explanation",
        "google_analytics_domains",
    ]


def test_a_patch_of_every_path_changes_every_field_it_names() -> None:
    schedule = domain.ScheduleRequest(ScheduleType.IMMEDIATE)
    patch = domain.CampaignPatch(
        5, domain.UPDATABLE_PATHS, name="New", status=READY, schedule=schedule, publish_on_rss=True
    )
    changes, violations = domain.check_patch(patch, NOW)
    assert violations == []
    assert set(changes) == set(domain.UPDATABLE_PATHS)
    assert (changes["name"], changes["status"], changes["email_id"], changes["publish_on_rss"]) == (
        "New",
        CampaignStatus.READY,
        None,
        True,
    )


def test_missing_campaign_is_reported_first_beside_the_request_problems() -> None:
    _, violations = domain.check_patch(_patch("schedule", schedule=_future(send_time=None)), NOW)
    error = domain.update_not_found(5, violations)
    assert error.kind is ErrorKind.NOT_FOUND
    assert _field_reasons(error) == [
        ("campaign.campaign_id", "CAMPAIGN_NOT_FOUND"),
        ("schedule.future.send_time", "SEND_TIME_REQUIRED"),
    ]


# --- custom status methods -----------------------------------------------------------------------------------


def test_cancelling_a_ready_campaign_returns_it_to_draft_without_its_schedule() -> None:
    cancelled = domain.cancelled(_campaign(CampaignStatus.READY, schedule=FUTURE_SCHEDULE, scheduled_at=IN_A_DAY))
    assert (cancelled.status, cancelled.schedule, cancelled.scheduled_at) == (
        CampaignStatus.DRAFT,
        domain.NOT_SCHEDULED,
        None,
    )


@pytest.mark.parametrize("status", [CampaignStatus.SENDING, CampaignStatus.PAUSED])
def test_cancelling_while_sending_is_final_and_keeps_the_schedule(status: CampaignStatus) -> None:
    cancelled = domain.cancelled(_campaign(status, schedule=FUTURE_SCHEDULE, scheduled_at=IN_A_DAY))
    assert (cancelled.status, cancelled.schedule) == (CampaignStatus.CANCELLED, FUTURE_SCHEDULE)


def test_refused_transition_names_the_current_status() -> None:
    error = _error(lambda: domain.paused(_campaign(CampaignStatus.DRAFT)))
    assert (error.kind, error.reason, error.metadata) == (
        ErrorKind.PRECONDITION,
        "STATUS_INVALID",
        {"status": "CAMPAIGN_STATUS_DRAFT"},
    )


@pytest.mark.parametrize(
    ("transition", "current", "message"),
    [
        (domain.PAUSE, CampaignStatus.DRAFT, "only a Sending or Ready campaign can be paused, not a Draft one"),
        (
            domain.CANCEL,
            CampaignStatus.SENT,
            "only a Ready, Sending or Paused campaign can be cancelled, not a Sent one",
        ),
        (domain.START_SENDING, CampaignStatus.PAUSED, "only a Ready campaign starts sending, not a Paused one"),
        (domain.RETRY_FAILED, CampaignStatus.DRAFT, "only a Sent or Failed campaign is retried, not a Draft one"),
    ],
)
def test_a_refused_transition_says_which_statuses_allow_it(
    transition: domain.Transition, current: CampaignStatus, message: str
) -> None:
    assert not domain.allows(transition, current)
    error = _error(lambda: domain.status_after(transition, current))
    assert (error.kind, error.reason, error.message, error.metadata) == (
        ErrorKind.PRECONDITION,
        "STATUS_INVALID",
        message,
        {"status": current.api_name},
    )


def test_approval_rearms_a_recursive_schedule_from_now() -> None:
    recursive = domain.Schedule(ScheduleType.RECURSIVE, recursive=_rule(days_of_week=(1,)))
    current = _campaign(
        CampaignStatus.PENDING_APPROVAL, schedule=recursive, scheduled_at=datetime(2020, 1, 6, 9, tzinfo=UTC)
    )
    approved = domain.approved(current, NOW)
    assert (approved.status, approved.scheduled_at) == (CampaignStatus.READY, datetime(2025, 6, 2, 9, tzinfo=UTC))


# --- split tests ---------------------------------------------------------------------------------------------


def test_split_test_settings_are_accepted_at_their_bounds() -> None:
    settings, violations = domain.check_split_test(3, 99, 720, domain.Winner.MOST_UNIQUE_CLICKS)
    assert violations == []
    assert settings == domain.SplitTestSettings(99, 720, domain.Winner.MOST_UNIQUE_CLICKS)


def test_split_test_without_anything_names_every_field() -> None:
    settings, violations = domain.check_split_test(0, 0, 0, None)
    assert settings is None
    assert [(v.field, v.reason) for v in violations] == [
        ("campaign_id", "CAMPAIGN_ID_REQUIRED"),
        ("test_size_percent", "TEST_SIZE_REQUIRED"),
        ("test_duration_hours", "TEST_DURATION_REQUIRED"),
        ("winner", "WINNER_REQUIRED"),
    ]


@pytest.mark.parametrize(
    ("size", "hours", "winner", "expected"),
    [
        (100, 1, domain.Winner.HIGHEST_OPEN_RATE, ("test_size_percent", "TEST_SIZE_INVALID")),
        (-5, 1, domain.Winner.HIGHEST_OPEN_RATE, ("test_size_percent", "TEST_SIZE_INVALID")),
        (10, 721, domain.Winner.HIGHEST_OPEN_RATE, ("test_duration_hours", "TEST_DURATION_INVALID")),
        (10, -1, domain.Winner.HIGHEST_OPEN_RATE, ("test_duration_hours", "TEST_DURATION_INVALID")),
        (10, 1, domain.Unrecognized(9), ("winner", "WINNER_INVALID")),
    ],
)
def test_split_test_values_out_of_range(
    size: int, hours: int, winner: domain.Winner | domain.Unrecognized, expected: tuple[str, str]
) -> None:
    _, violations = domain.check_split_test(3, size, hours, winner)
    assert [(v.field, v.reason) for v in violations] == [expected]


def test_split_test_failure_adds_the_missing_campaign() -> None:
    _, violations = domain.check_split_test(3, 0, 24, domain.Winner.HIGHEST_OPEN_RATE)
    error = domain.split_test_failure(violations, 3)
    assert error.kind is ErrorKind.INVALID
    assert _field_reasons(error) == [
        ("test_size_percent", "TEST_SIZE_REQUIRED"),
        ("campaign_id", "CAMPAIGN_NOT_FOUND"),
    ]
    assert domain.split_test_failure([], 3).kind is ErrorKind.NOT_FOUND


# --- list filters --------------------------------------------------------------------------------------------


def test_schedule_type_filter_refuses_unspecified() -> None:
    error = _error(lambda: _query(schedule_types=[ScheduleType.FUTURE, domain.Unrecognized(0)]))
    assert _field_reasons(error) == [("schedule_types", "SCHEDULE_TYPE_INVALID")]


def test_tag_filter_needs_positive_ids() -> None:
    error = _error(lambda: _query(tag_ids=[3, 0]))
    assert _field_reasons(error) == [("tag_ids", "TAG_IDS_INVALID")]


def test_user_may_name_only_themself_as_owner() -> None:
    assert _query(owner_user_id=7).filter.owner_user_id == 7
    error = _error(lambda: _query(owner_user_id=8))
    assert (error.kind, error.reason) == (ErrorKind.PERMISSION, "ADMIN_REQUIRED")


def test_admin_may_list_one_users_campaigns() -> None:
    assert _query(ADMIN, owner_user_id=8).filter.owner_user_id == 8


def test_page_token_is_bound_to_the_new_filters_too() -> None:
    first = _query(page_size=10, scheduled=True)
    token = domain.next_page_token(first, 10, 25)
    for changed in (
        {"scheduled": False},
        {"schedule_types": [ScheduleType.FUTURE]},
        {"send_time_from": NOW},
        {"send_time_to": NOW},
        {"tag_ids": [4]},
    ):
        request = {"page_size": 10, "scheduled": True, "page_token": token, **changed}
        error = _error(lambda request=request: _query(**request))
        assert _field_reasons(error) == [("page_token", "PAGE_TOKEN_INVALID")]


def test_resolved_tagged_campaigns_do_not_change_the_page_token() -> None:
    query = _query(tag_ids=[4])
    assert query.filter.with_tagged_campaigns([9, 2]).fingerprint() == query.filter.fingerprint()
    assert query.filter.with_tagged_campaigns([9, 2, 9]).tagged_campaign_ids == (2, 9)


# --- statistics ----------------------------------------------------------------------------------------------


def test_throughput_is_emails_per_second_between_first_and_last_send() -> None:
    assert domain.throughput(9950, NOW, NOW + timedelta(seconds=79.4)) == (9950 / 79.4, 79)


def test_throughput_without_a_send_is_zero() -> None:
    assert domain.throughput(0, None, None) == (0.0, 0)
    assert domain.throughput(0, NOW, NOW) == (0.0, 0)


def test_a_send_shorter_than_a_second_is_measured_over_one_second() -> None:
    # Three messages within 1 ms: 3 per second (not 3,000), and a duration of 0 s.
    assert domain.throughput(3, NOW, NOW + timedelta(milliseconds=1)) == (3.0, 0)
    assert domain.throughput(1, NOW, NOW) == (1.0, 0)
    assert domain.throughput(4, NOW, NOW + timedelta(seconds=0.6)) == (4.0, 1)


def test_arming_a_campaign_whose_email_was_deleted_meanwhile_is_refused() -> None:
    error = _update_error(_campaign(email_id=99), _patch("status", status=READY))
    assert _field_reasons(error) == [("email_id", "EMAIL_NOT_FOUND")]
