"""LEB128 varints as Herald's tokens carry ids: every id round-trips, and one id has one encoding only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common import varint


@given(st.integers(min_value=0, max_value=2**63 - 1), st.binary(max_size=4))
def test_every_id_round_trips_at_any_offset(value: int, before: bytes) -> None:
    data = before + varint.encode(value) + b"\x01"
    assert varint.decode(data, len(before)) == (value, len(data) - 1)


@pytest.mark.parametrize(
    ("value", "encoded"), [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")]
)
def test_numbers_are_seven_bit_groups_least_significant_first(value: int, encoded: bytes) -> None:
    assert varint.encode(value) == encoded


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x00", "non-canonical number"),
        (b"\x80", "truncated or overlong number"),
        (b"\xff" * 9 + b"\x01", "truncated or overlong number"),
    ],
)
def test_a_padded_truncated_or_overlong_number_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(varint.MalformedVarint, match=reason):
        varint.decode(data, 0)
