"""A message's return path: the MAIL FROM the worker sends (MessageTemplate.return_path) and the one its headers carry
(render) are the same signed address, whether or not MAIL FROM was asked for first, for any number of recipients
in flight."""

from __future__ import annotations

import email
import email.policy

from services.delivery.message import Recipient
from tests.unit.message_templates import BOUNCES, message_template

CONTENT = {"from_email": "news@example.com", "subject": "Hello", "plain": "Hi", "content_type": "Plain"}


def _recipient(recipient_id: int) -> Recipient:
    return Recipient(recipient_id, f"r{recipient_id}@example.com", "", "", 3, 40 + recipient_id, None, None)


def test_the_mail_from_and_the_rendered_return_path_name_the_same_recipient_in_any_order() -> None:
    template = message_template(CONTENT)
    recipients = [_recipient(n) for n in range(1, 30)]
    # As a worker does: every envelope first (sends in flight), then each message once its envelope is accepted,
    # in another order; one recipient is rendered without an envelope asked for.
    mail_from = {r.recipient_id: template.return_path(r) for r in recipients[:-1]}
    for recipient in reversed(recipients):
        rendered = template.render(recipient)
        expected = mail_from.get(recipient.recipient_id, BOUNCES.address(7, recipient.recipient_id))
        assert rendered.return_path == expected == BOUNCES.address(7, recipient.recipient_id)
        assert BOUNCES.verify_address(rendered.return_path).recipient_id == recipient.recipient_id
        message = email.message_from_bytes(rendered.data, policy=email.policy.default)
        token = expected.split("@")[0].removeprefix("b-")
        assert message["X-Herald-Token"] == token
    # Rendering again (a resend to the same recipient) signs afresh, to the same address.
    assert template.render(recipients[0]).return_path == mail_from[recipients[0].recipient_id]
