"""The shared pieces of the webhooks: codes read from providers' texts, event keys, instants, and reports
that protobuf takes whatever a provider put in its fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from herald.delivery.v1 import delivery_pb2
from hypothesis import given
from hypothesis import strategies as st

from services.common.return_path import BouncedRecipient
from translator.webhooks._common import (
    bounce_report,
    content_key,
    enhanced_status,
    event_key,
    parse_instant,
    reply_code,
)

RECIPIENT = BouncedRecipient(1, 2)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("550 5.1.1 user unknown", 550),
        ("smtp; 550 5.1.1 user unknown", 550),
        ("smtp;452 4.2.2 mailbox full", 452),
        ("SMTP; 554-5.7.1 blocked", 554),
        ("x-postfix; 421 try later", 421),
        ("421", 421),
        ("user 550 unknown", 0),
        ("5.1.1 user unknown", 0),
        ("5501 too long", 0),
        ("Test bounce details", 0),
        ("", 0),
    ],
)
def test_the_reply_code_is_the_one_a_diagnostic_starts_with(text: str, code: int) -> None:
    assert reply_code(text) == code


@pytest.mark.parametrize(
    ("provided", "text", "status"),
    [
        ("5.1.1", "", "5.1.1"),
        ("5.0.0", "550 5.1.1 unknown user", "5.1.1"),
        ("5.1.2", "550 5.1.1 unknown user", "5.1.2"),
        ("4.0.0", "550 5.1.1 unknown user", "4.0.0"),
        ("", "smtp; 554 5.7.26 DMARC", "5.7.26"),
        ("bogus", "no code here", ""),
        (None, "version 1.2.3.4 of the server", ""),
        (7, "452 4.2.2 full", "4.2.2"),
    ],
)
def test_the_status_is_the_providers_unless_a_quoted_one_is_more_precise(
    provided: object, text: str, status: str
) -> None:
    assert enhanced_status(provided, text) == status


def test_event_keys_are_readable_when_they_can_be_and_hashed_when_not() -> None:
    assert event_key("ses", "fb-1", "a@example.com") == "ses:fb-1:a@example.com"
    long = event_key("ses", "x" * 300)
    assert long.startswith("ses:sha256:") and long == event_key("ses", "x" * 300)
    assert event_key("sendgrid", "with space").startswith("sendgrid:sha256:")
    assert event_key("ses", "fb", "jöns@example.com").startswith("ses:sha256:")


def test_instants_in_the_providers_forms() -> None:
    assert parse_instant("2019-11-05T16:33:54.9070259Z") == datetime(2019, 11, 5, 16, 33, 54, 907025, UTC)
    assert parse_instant("2016-01-27T14:59:38.237Z") == datetime(2016, 1, 27, 14, 59, 38, 237000, UTC)
    assert parse_instant(1_800_000_000) == datetime.fromtimestamp(1_800_000_000, UTC)
    assert parse_instant("2016-01-27T14:59:38") == datetime(2016, 1, 27, 14, 59, 38, tzinfo=UTC)
    for nonsense in ("yesterday", "", None, True, 1e400, -1e20, [1], {"a": 1}):
        assert parse_instant(nonsense) is None


@given(status=JSON, diagnostic=JSON, occurred=JSON, key=st.text())
def test_any_provider_fields_make_a_report_protobuf_takes(
    status: Any, diagnostic: Any, occurred: Any, key: str
) -> None:
    report = bounce_report(
        RECIPIENT,
        source=delivery_pb2.BOUNCE_SOURCE_SENDGRID,
        key=event_key("sendgrid", key),
        status=status,
        diagnostic=diagnostic,
        occurred=parse_instant(occurred),
    )
    parsed = delivery_pb2.BounceReport.FromString(report.SerializeToString())
    assert len(parsed.diagnostic) <= 1000 and len(parsed.event_key) <= 200
    assert parsed.reply_code == 0 or 200 <= parsed.reply_code < 600


@given(event=JSON)
def test_content_keys_are_stable_and_short(event: Any) -> None:
    assert content_key("postmark", event) == content_key("postmark", event)
    assert len(content_key("postmark", event)) <= 200
