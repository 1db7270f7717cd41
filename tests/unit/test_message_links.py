"""A campaign message renders %Link:WebBrowser% and %Link:ReportAbuse% as links signed for its recipient."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from services.common.return_path import ReturnPaths
from services.common.tracking import (
    InvalidTrackingToken,
    TrackedRecipient,
    TrackingLinks,
    TrackingPayload,
    tracking_key,
    verify_tracking,
)
from services.delivery import sending
from services.delivery.message import MessageTemplate, Recipient

SECRET = "unit-test-secret"
PUBLIC_URL = "https://herald.test"
CONTENT = {
    "from_email": "news@herald.test",
    "subject": "News",
    "html": '<p><a href="%Link:WebBrowser%">Web</a> <a href="{{ Link:ReportAbuse }}">Abuse</a></p>',
    "plain": "Web: %Link:WebBrowser%\nAbuse: %Link:ReportAbuse%",
    "content_type": "Both",
    "link_tracking": True,
}
RECIPIENT = Recipient(
    5, "ada@example.com", "Ada", "", subscriber_id=42, list_id=3, custom_fields=None, email_id=None
)


def template(content: dict[str, object]) -> MessageTemplate:
    return MessageTemplate(
        content,
        campaign_id=77,
        campaign_name="News",
        links=TrackingLinks(PUBLIC_URL, SECRET),
        return_paths=ReturnPaths("bounces.herald.test", SECRET),
        public_url=PUBLIC_URL,
    )


def _body(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return "\n".join(str(part.get_content()) for part in message.walk() if part.get_content_maintype() == "text")


def test_web_view_and_report_abuse_links_are_signed_for_the_recipient_and_left_untracked() -> None:
    body = _body(template(CONTENT).render(RECIPIENT).data)
    found = re.findall(r"https://herald\.test/t/(view|abuse)/([A-Za-z0-9_-]+)", body)
    # Both parts carry both links; link tracking does not wrap Herald's own pages.
    assert sorted(kind for kind, _ in found) == ["abuse", "abuse", "view", "view"], body
    assert "/t/c/" not in body
    recipient = TrackedRecipient(77, 5, 3, 42)
    for kind, token in found:
        assert verify_tracking(token, key=tracking_key(SECRET)) == TrackingPayload(kind, recipient)  # type: ignore[arg-type]


def test_a_recipient_without_a_subscription_gets_a_web_view_but_no_report_abuse_link() -> None:
    body = _body(template(CONTENT).render(Recipient(5, "x@example.com", "", "", 0, 0, None, None)).data)
    assert "/t/view/" in body and "/t/abuse/" not in body and "%Link:" not in body


def test_a_preview_or_confirmation_run_renders_the_links_empty() -> None:
    run = MessageTemplate(
        CONTENT,
        campaign_id=sending.preview_run_id(9),
        campaign_name="Preview",
        links=TrackingLinks(PUBLIC_URL, SECRET),
        return_paths=ReturnPaths("bounces.herald.test", SECRET),
        public_url=PUBLIC_URL,
    )
    body = _body(run.render(RECIPIENT).data)
    assert "/t/view/" not in body and "/t/abuse/" not in body and "%Link:" not in body


def test_the_web_view_link_names_the_email_the_recipient_got_under_the_signature() -> None:
    body = _body(template({**CONTENT, "email_id": 12}).render(RECIPIENT).data)
    [(token, shown)] = set(re.findall(r"https://herald\.test/t/view/([A-Za-z0-9_-]+)\?e=([0-9]+)", body))
    key = tracking_key(SECRET)
    assert shown == "12" and verify_tracking(token, key=key, url="12").kind == "view"
    for wrong in ("", "13"):
        with pytest.raises(InvalidTrackingToken):
            verify_tracking(token, key=key, url=wrong)
