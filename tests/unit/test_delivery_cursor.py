"""StreamDeliveryEvents' cursor: one spelling per position, decoded back exactly, anything else refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError, ErrorKind
from services.delivery import cursor
from services.delivery.cursor import Cursor


@given(st.integers(min_value=1, max_value=2**64 - 1), st.integers(min_value=0, max_value=999_999))
def test_a_cursor_decodes_to_the_position_it_encodes(sequence: int, index: int) -> None:
    text = Cursor(sequence, index).encode()
    assert cursor.decode(text) == Cursor(sequence, index)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_cursor_covers_its_own_event_and_those_before_it_only() -> None:
    at = Cursor(10, 3)
    assert at.covers(10, 3) and at.covers(10, 0) and at.covers(9, 99)
    assert not at.covers(10, 4) and not at.covers(11, 0)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "nonsense!",
        "",
        "x" * 65,
        _b64("v1.0.0"),  # sequences count from 1
        _b64("v1.01.0"),
        _b64("v1.5.-1"),
        _b64("v1.5"),
        _b64("v2.5.0"),
        _b64("v1.5.0 "),
        _b64(f"v1.{2**64}.0"),
        _b64("v1.5.0") + "=",
        "djEuMTAuMB",  # v1.10.0 (given out as djEuMTAuMA) with unused bits set: another spelling
        "djEuNS4wB",
    ],
)
def test_anything_but_a_cursor_given_out_is_invalid_argument(text: str) -> None:
    with pytest.raises(DomainError) as caught:
        cursor.decode(text)
    assert caught.value.kind is ErrorKind.INVALID and caught.value.reason == cursor.CURSOR_INVALID
    assert [violation.field for violation in caught.value.violations] == ["cursor"]
