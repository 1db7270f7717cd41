"""A double opt-in confirmation email renders its confirm and reject links, and no unsubscribe link."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

from services.common.opt_in_links import OptInLinks, opt_in_key, verify_opt_in
from services.common.return_path import ReturnPaths
from services.common.tracking import TrackingLinks
from services.delivery import sending
from services.delivery.message import MessageTemplate, Recipient

SECRET = "unit-test-secret"
PUBLIC_URL = "https://herald.test"
CONTENT = {
    "from_email": "news@herald.test",
    "subject": "Confirm, %Subscriber:FirstName%",
    "html": '<p><a href="%Link:Confirm%">Yes</a> <a href="{{ Link:Reject }}">No</a></p>',
    "plain": "Yes: %Link:Confirm%",
    "content_type": "Both",
    "link_tracking": True,
    "opt_in": True,
}
RECIPIENT = Recipient(
    5, "ada@example.com", "Ada", "", subscriber_id=42, list_id=3, custom_fields=None, email_id=None
)


def template(content: dict[str, object]) -> MessageTemplate:
    return MessageTemplate(
        content,
        campaign_id=sending.opt_in_run_id(3),
        campaign_name="Confirmation email of list 3",
        links=TrackingLinks(PUBLIC_URL, SECRET),
        return_paths=ReturnPaths("bounces.herald.test", SECRET),
        public_url=PUBLIC_URL,
        opt_in_links=OptInLinks(PUBLIC_URL, SECRET),
    )


def test_the_confirmation_carries_signed_links_for_its_subscriber_and_no_unsubscribe() -> None:
    rendered = template(CONTENT).render(RECIPIENT)
    message = email.message_from_bytes(rendered.data, policy=email.policy.default)
    assert message["List-Unsubscribe"] is None
    body = "\n".join(str(part.get_content()) for part in message.walk() if part.get_content_maintype() == "text")
    found = dict(re.findall(r"https://herald\.test/t/(confirm|reject)/([A-Za-z0-9_-]+)", body))
    # Link tracking leaves Herald's own links alone: the reader sees where they lead.
    assert set(found) == {"confirm", "reject"}, body
    for action, token in found.items():
        subscription = verify_opt_in(token, key=opt_in_key(SECRET))
        assert (subscription.action, subscription.list_id, subscription.subscriber_id) == (action, 3, 42)


def test_a_campaign_email_leaves_the_opt_in_tags_empty() -> None:
    rendered = template({**CONTENT, "opt_in": False}).render(RECIPIENT)
    assert b"/t/confirm/" not in rendered.data
    assert b"List-Unsubscribe:" in rendered.data


def test_the_migration_leaves_exactly_the_opt_in_runs_out_of_the_one_address_rule() -> None:
    migration = Path(__file__).parents[2] / "services/delivery/migrations/0012_opt_in.sql"
    assert f"campaign_id < {sending.OPT_IN_RUN_BASE}" in migration.read_text()
    assert sending.is_opt_in_run(sending.opt_in_run_id(1)) and not sending.is_opt_in_run(10**12)
