"""Pure tests of the campaign rules: status mapping, names, search escaping, list queries and page tokens."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

import pytest
from herald.campaign.v1 import campaign_pb2
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
        "order_by": campaign_pb2.CAMPAIGN_ORDER_FIELD_UNSPECIFIED,
        "descending": False,
        "page_size": 0,
        "skip": 0,
        "page_token": "",
    }
    request.update(overrides)
    return domain.build_list_query(principal, **request)  # type: ignore[arg-type]


# --- statuses, schedule types and order fields ------------------------------------------------------------


@pytest.mark.parametrize("status", list(CampaignStatus))
def test_every_status_round_trips_through_the_proto_enum(status: CampaignStatus) -> None:
    assert domain.status_from_proto(domain.status_to_proto(status)) is status


def test_status_names_match_the_proto_enum_names() -> None:
    for status in CampaignStatus:
        assert campaign_pb2.CampaignStatus.Name(domain.status_to_proto(status)) == f"CAMPAIGN_STATUS_{status.name}"


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


@pytest.mark.parametrize("value", [campaign_pb2.CAMPAIGN_STATUS_UNSPECIFIED, 99, -1])
def test_unspecified_or_unknown_proto_status_maps_to_none(value: int) -> None:
    assert domain.status_from_proto(value) is None


@pytest.mark.parametrize("schedule_type", list(ScheduleType))
def test_every_schedule_type_round_trips_through_the_proto_enum(schedule_type: ScheduleType) -> None:
    proto = domain.schedule_type_to_proto(schedule_type)
    assert campaign_pb2.ScheduleType.Name(proto) == f"SCHEDULE_TYPE_{schedule_type.name}"
    assert domain.schedule_type_from_proto(proto) is schedule_type


def test_unspecified_schedule_type_maps_to_none() -> None:
    assert domain.schedule_type_from_proto(campaign_pb2.SCHEDULE_TYPE_UNSPECIFIED) is None


def test_unspecified_order_field_orders_by_campaign_id() -> None:
    assert domain.order_field_from_proto(campaign_pb2.CAMPAIGN_ORDER_FIELD_UNSPECIFIED) is OrderField.CAMPAIGN_ID


def test_every_proto_order_field_has_an_ordering() -> None:
    for value in campaign_pb2.CampaignOrderField.values():
        assert domain.order_field_from_proto(value) is not None


def test_unknown_order_field_maps_to_none() -> None:
    assert domain.order_field_from_proto(42) is None


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


# --- search escaping -----------------------------------------------------------------------------------------


def _like_matches(pattern: str, text: str) -> bool:
    """A reference LIKE with backslash escapes, case-insensitive like ILIKE."""
    regex, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            regex.append(re.escape(next(chars)))
        elif char == "%":
            regex.append(".*")
        elif char == "_":
            regex.append(".")
        else:
            regex.append(re.escape(char))
    return re.fullmatch("".join(regex), text, flags=re.DOTALL | re.IGNORECASE) is not None


@pytest.mark.parametrize(
    ("search", "escaped"),
    [("50%", "50\\%"), ("a_b", "a\\_b"), ("back\\slash", "back\\\\slash"), ("plain", "plain"), ("\\%", "\\\\\\%")],
)
def test_like_wildcards_and_escape_character_are_escaped(search: str, escaped: str) -> None:
    assert domain.escape_like(search) == escaped


def test_percent_in_search_matches_only_a_literal_percent() -> None:
    pattern = domain.name_contains_pattern("50%")
    assert _like_matches(pattern, "Save 50% today")
    assert not _like_matches(pattern, "Save 500 today")


def test_underscore_in_search_matches_only_a_literal_underscore() -> None:
    pattern = domain.name_contains_pattern("a_b")
    assert _like_matches(pattern, "x a_b y")
    assert not _like_matches(pattern, "x aXb y")


@given(st.text(alphabet="ab%_\\ ", max_size=8), st.text(alphabet="ab%_\\ ", max_size=12))
def test_search_pattern_matches_exactly_names_containing_the_search(search: str, name: str) -> None:
    assert _like_matches(domain.name_contains_pattern(search), name) == (search.lower() in name.lower())


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
        {"statuses": [campaign_pb2.CAMPAIGN_STATUS_SENT]},
        {"campaign_ids": [1]},
        {"include_auto_resend": True},
        {"order_by": campaign_pb2.CAMPAIGN_ORDER_FIELD_NAME},
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
    a = _query(statuses=[1, 2], campaign_ids=[3, 4]).filter.fingerprint()
    b = _query(statuses=[2, 1], campaign_ids=[4, 3]).filter.fingerprint()
    assert a == b


# --- list queries --------------------------------------------------------------------------------------------


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
    error = _error(lambda: _query(statuses=[campaign_pb2.CAMPAIGN_STATUS_DRAFT, 0, 77]))
    assert _field_reasons(error) == [("statuses", "CAMPAIGN_STATUS_INVALID")] * 2


def test_status_filter_keeps_each_status_once() -> None:
    query = _query(statuses=[campaign_pb2.CAMPAIGN_STATUS_SENT, campaign_pb2.CAMPAIGN_STATUS_SENT])
    assert query.filter.statuses == (CampaignStatus.SENT,)


def test_unknown_order_field_is_invalid() -> None:
    error = _error(lambda: _query(order_by=99))
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


# --- delete events -------------------------------------------------------------------------------------------


def test_deleted_campaigns_give_one_event_per_owner_with_ids_ascending() -> None:
    events = domain.deleted_events([(9, 2), (3, 1), (5, 2), (4, 1)])
    assert [(e.owner_user_id, e.campaign_ids) for e in events] == [(1, (3, 4)), (2, (5, 9))]


def test_nothing_deleted_gives_no_event() -> None:
    assert domain.deleted_events([]) == []


def test_deleted_event_payload_is_the_documented_json() -> None:
    event = domain.CampaignsDeleted(owner_user_id=7, campaign_ids=(3, 4))
    assert json.loads(event.payload()) == {"owner_user_id": 7, "campaign_ids": [3, 4]}
