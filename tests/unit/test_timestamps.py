"""Timestamps between datetime, protobuf and the legacy text form (RULINGS 3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from services.common import grpcutil
from translator.commands import instant

MOMENTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.none() | st.timezones()
)


@given(MOMENTS)
def test_to_timestamp_agrees_with_protobufs_own_conversion(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert grpcutil.to_timestamp(moment) == expected


def test_to_timestamp_of_an_aware_instant_is_its_utc_instant() -> None:
    moment = datetime(2026, 11, 29, 17, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    stamp = grpcutil.to_timestamp(moment)
    assert stamp.ToDatetime(tzinfo=UTC) == moment and stamp.nanos == 123_456_000


def test_an_optional_timestamp_of_none_is_none() -> None:
    assert grpcutil.timestamp(None) is None


@given(MOMENTS)
def test_instant_is_the_utc_second_in_the_legacy_form(moment: datetime) -> None:
    stamp = grpcutil.to_timestamp(moment)
    if stamp.seconds == 0 and stamp.nanos == 0:
        return
    assert instant(stamp) == stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def test_instant_is_empty_when_unset() -> None:
    assert instant(timestamp_pb2.Timestamp()) == ""
    set_at = grpcutil.to_timestamp(datetime(2025, 7, 1, 8, 0, tzinfo=UTC))
    assert instant(set_at) == "2025-07-01 08:00:00"
    assert instant(set_at, is_set=False) == ""
    assert instant(timestamp_pb2.Timestamp(), is_set=True) == "1970-01-01 00:00:00"
