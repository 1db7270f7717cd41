"""Tracking tokens: they round-trip, stay short and URL-safe, bind a click to its URL, and reject every forgery."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.tracking import (
    MAX_TOKEN_LENGTH,
    InvalidTrackingToken,
    TrackedRecipient,
    TrackingLinks,
    TrackingPayload,
    sign_tracking,
    tracking_key,
    verify_tracking,
)

KEY = tracking_key("test-secret")
OTHER_KEY = tracking_key("another-secret")
_ids = st.integers(min_value=1, max_value=2**63 - 1)


def test_open_token_round_trips() -> None:
    token = sign_tracking("open", 12, 345, 6, 78, key=KEY)
    payload = verify_tracking(token, key=KEY)
    assert payload.kind == "open"
    assert payload.recipient == TrackedRecipient(campaign_id=12, recipient_id=345, list_id=6, subscriber_id=78)
    assert payload.url == ""


def test_tokens_are_short_and_url_safe() -> None:
    token = sign_tracking("unsubscribe", 2**40, 2**40, 2**40, 2**40, key=KEY)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) <= 60
    assert len(sign_tracking("open", 1, 1, 1, 1, key=KEY)) <= 32


def test_click_token_verifies_only_with_its_url() -> None:
    token = sign_tracking("click", 1, 2, 3, 4, "https://example.com/a?b=c", key=KEY)
    assert verify_tracking(token, key=KEY, url="https://example.com/a?b=c").url == "https://example.com/a?b=c"
    for other in ("https://evil.example/", "https://example.com/a?b=d", "https://example.com/a?b=c ", ""):
        with pytest.raises(InvalidTrackingToken):
            verify_tracking(token, key=KEY, url=other)


def test_a_token_signed_with_another_key_is_rejected() -> None:
    with pytest.raises(InvalidTrackingToken, match="signature"):
        verify_tracking(sign_tracking("open", 1, 2, 3, 4, key=OTHER_KEY), key=KEY)


def test_an_open_token_with_a_url_is_rejected() -> None:
    token = sign_tracking("open", 1, 2, 3, 4, key=KEY)
    with pytest.raises(InvalidTrackingToken):
        verify_tracking(token, key=KEY, url="https://example.com/")


def test_every_flipped_bit_is_detected() -> None:
    token = sign_tracking("unsubscribe", 10, 20, 30, 40, key=KEY)
    data = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for index in range(len(data)):
        for bit in range(8):
            forged = bytearray(data)
            forged[index] ^= 1 << bit
            forged_token = base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode()
            with pytest.raises(InvalidTrackingToken):
                verify_tracking(forged_token, key=KEY)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a",
        "abc.def",
        "A" * (MAX_TOKEN_LENGTH + 1),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "a b",
        "é",
        "AAAAA",
    ],
)
def test_garbage_is_rejected(token: str) -> None:
    with pytest.raises(InvalidTrackingToken):
        verify_tracking(token, key=KEY)


def test_unknown_version_is_rejected_before_anything_else() -> None:
    token = sign_tracking("open", 1, 2, 3, 4, key=KEY)
    data = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data[0] = 2
    with pytest.raises(InvalidTrackingToken, match="version"):
        verify_tracking(base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode(), key=KEY)


def test_signing_checks_its_input() -> None:
    with pytest.raises(ValueError):
        sign_tracking("click", 1, 2, 3, 4, key=KEY)  # a click needs its URL
    with pytest.raises(ValueError):
        sign_tracking("open", 1, 2, 3, 4, "https://example.com/", key=KEY)
    with pytest.raises(ValueError):
        sign_tracking("unsubscribe", 1, 2, 0, 4, key=KEY)  # no list to unsubscribe from
    with pytest.raises(ValueError):
        sign_tracking("open", 0, 2, 3, 4, key=KEY)
    with pytest.raises(ValueError):
        sign_tracking("open", 1, 2**63, 3, 4, key=KEY)
    with pytest.raises(ValueError):
        sign_tracking("bounce", 1, 2, 3, 4, key=KEY)  # type: ignore[arg-type]


def test_links_put_the_token_and_url_where_the_endpoints_expect_them() -> None:
    links = TrackingLinks("https://herald.example/", "test-secret")
    recipient = TrackedRecipient(1, 2, 3, 4)
    pixel = links.open_pixel(recipient)
    assert re.fullmatch(r"https://herald\.example/t/o/[A-Za-z0-9_-]+\.gif", pixel)
    click = links.click(recipient, "https://example.com/x?y=1&z=2")
    assert click.startswith("https://herald.example/t/c/")
    assert click.endswith("?u=https%3A%2F%2Fexample.com%2Fx%3Fy%3D1%26z%3D2")
    token = click.split("/t/c/")[1].split("?")[0]
    assert verify_tracking(token, key=KEY, url="https://example.com/x?y=1&z=2").kind == "click"
    unsubscribe = links.unsubscribe(recipient)
    assert verify_tracking(unsubscribe.rsplit("/", 1)[1], key=KEY).kind == "unsubscribe"
    with pytest.raises(ValueError):
        links.click(recipient, "javascript:alert(1)")


@given(
    kind=st.sampled_from(["open", "click", "unsubscribe", "view", "abuse"]),
    campaign_id=_ids,
    recipient_id=_ids,
    list_id=_ids,
    subscriber_id=_ids,
    url=st.text(min_size=1, max_size=200),
)
def test_any_ids_round_trip(
    kind: str, campaign_id: int, recipient_id: int, list_id: int, subscriber_id: int, url: str
) -> None:
    url = url if kind == "click" else ""
    token = sign_tracking(kind, campaign_id, recipient_id, list_id, subscriber_id, url, key=KEY)  # type: ignore[arg-type]
    assert len(token) <= MAX_TOKEN_LENGTH
    payload = verify_tracking(token, key=KEY, url=url)
    assert (payload.kind, payload.url) == (kind, url)
    assert payload.recipient == TrackedRecipient(campaign_id, recipient_id, list_id, subscriber_id)


@given(st.text(max_size=120))
def test_arbitrary_text_is_rejected_as_invalid_and_nothing_else(token: str) -> None:
    with pytest.raises(InvalidTrackingToken):
        verify_tracking(token, key=KEY)


def test_web_view_and_report_abuse_links_carry_tokens_of_their_own_kind() -> None:
    links = TrackingLinks("https://herald.example", "test-secret")
    recipient = TrackedRecipient(1, 2, 3, 4)
    view = links.web_view(recipient)
    abuse = links.report_abuse(recipient)
    assert view.startswith("https://herald.example/t/view/")
    assert abuse.startswith("https://herald.example/t/abuse/")
    assert verify_tracking(view.rsplit("/", 1)[1], key=KEY) == TrackingPayload("view", recipient)
    assert verify_tracking(abuse.rsplit("/", 1)[1], key=KEY) == TrackingPayload("abuse", recipient)
    with pytest.raises(ValueError):
        sign_tracking("abuse", 1, 2, 0, 4, key=KEY)  # a complaint needs the subscription it is about
