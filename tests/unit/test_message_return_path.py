"""Every rendered message carries its recipient's signed return path: the envelope sender, X-Herald-Token, and the
relay provider's metadata header; the visible From stays the user's. Also HERALD_RELAY_PROVIDER's validation."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage

import pytest
from pydantic import ValidationError

from services.common.config import Settings
from services.common.return_path import BouncedRecipient, InvalidReturnPath, ReturnPaths
from services.delivery.message import Recipient, RenderedMessage
from tests.unit.message_templates import BOUNCES, message_template


def render(relay_provider: str = "none", recipient_id: int = 21) -> RenderedMessage:
    template = message_template(
        {
            "subject": "Hello",
            "from_name": "Ada's Shop",
            "from_email": "news@shop.example",
            "html": "<html><body><p>Hi</p></body></html>",
            "plain": "Hi",
            "content_type": "Both",
        },
        relay_provider=relay_provider,
    )
    return template.render(Recipient(recipient_id, "ada@example.com", "Ada", "", 31, 41, None, None))


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_the_envelope_sender_is_the_recipients_signed_return_path_and_from_stays_the_users() -> None:
    rendered = render()
    assert rendered.return_path.startswith("b-") and rendered.return_path.endswith("@bounces.herald.test")
    assert BOUNCES.verify_address(rendered.return_path) == BouncedRecipient(7, 21)
    message = parsed(rendered.data)
    assert message["From"] == "Ada's Shop <news@shop.example>"
    assert "Return-Path" not in message  # the receiving server adds it from MAIL FROM
    token = message["X-Herald-Token"]
    assert rendered.return_path == f"b-{token}@bounces.herald.test"
    assert BOUNCES.verify_token(token) == BouncedRecipient(7, 21)
    assert "X-SMTPAPI" not in message and not [name for name in message if name.startswith("X-PM-")]


def test_each_recipient_has_a_return_path_of_its_own_that_another_key_does_not_verify() -> None:
    first, second = render(recipient_id=21), render(recipient_id=22)
    assert first.return_path != second.return_path
    assert BOUNCES.verify_address(second.return_path).recipient_id == 22
    with pytest.raises(InvalidReturnPath):
        ReturnPaths("bounces.herald.test", "another-secret").verify_address(first.return_path)


def test_sendgrid_and_postmark_get_the_token_in_their_metadata_headers() -> None:
    message = parsed(render("sendgrid").data)
    token = message["X-Herald-Token"]
    assert json.loads(message["X-SMTPAPI"]) == {"unique_args": {"herald_token": token}}
    message = parsed(render("postmark").data)
    assert message["X-PM-Metadata-herald_token"] == message["X-Herald-Token"]
    assert "X-SMTPAPI" not in message
    message = parsed(render("ses").data)
    assert "X-SMTPAPI" not in message and "X-PM-Metadata-herald_token" not in message


def test_the_relay_provider_setting_is_one_of_four_names_and_anything_else_stops_the_start() -> None:
    assert Settings(relay_provider="SendGrid").relay_provider == "sendgrid"
    assert Settings().relay_provider == "none"
    with pytest.raises(ValidationError, match="'none', 'ses', 'sendgrid' or 'postmark'"):
        Settings(relay_provider="mailgun")


def test_the_feedback_address_must_be_one_plain_address() -> None:
    assert Settings(bounce_feedback_address=" fbl@bounces.example.com ").bounce_feedback_address == (
        "fbl@bounces.example.com"
    )
    for bad in ("fbl", "@bounces.example.com", "a b@example.com", "<fbl@example.com>"):
        with pytest.raises(ValidationError, match="one plain address"):
            Settings(bounce_feedback_address=bad)
