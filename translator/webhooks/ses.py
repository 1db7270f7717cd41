"""POST /webhooks/ses: Amazon SES bounce and complaint notifications, delivered by an SNS topic.

The SNS message is verified first (translator/webhooks/sns.py); a SubscriptionConfirmation is then
confirmed, a Notification read as an SES notification (`notificationType`, or `eventType` for an SES
configuration set's event destination). The recipient is the return path SES reports as `mail.source`
(`b-<token>@<bounce domain>`, Herald's MAIL FROM), or else the `X-Herald-Token` header among
`mail.headers` (when the identity's notifications include the original headers).

- Bounce: one report per message (Herald sends each message to one recipient), with the
  bouncedRecipients entry's status and diagnosticCode; bounceType Permanent hints HARD, Transient
  SOFT, Undetermined leaves it to the classifier. A bounce SES made up because the address is on the
  account's own suppression list (bounceSubType OnAccountSuppressionList) is ignored: the message
  was never offered to the receiving server, and the bounce that put it there was reported then.
- Complaint: a COMPLAINT report, unless the feedback type says `not-spam` (or it is an
  OnAccountSuppressionList one, as above).
- Delivery and every other notification: acknowledged and ignored.

The event key is the SES feedbackId and the recipient's address (the SNS MessageId when SES gave no
feedbackId), so SNS's retries of one notification are recorded once.
"""

from __future__ import annotations

import json
from email.utils import parseaddr

import structlog
from aiohttp import web
from herald.delivery.v1 import delivery_pb2

from services.common.return_path import BouncedRecipient
from translator.webhooks._common import (
    REQUESTS,
    Findings,
    ProviderWebhook,
    Recipients,
    bounce_report,
    event_key,
    load_json,
    parse_instant,
    read_body,
    text_of,
    unavailable_response,
)
from translator.webhooks.sns import (
    SUBSCRIPTION_CONFIRMATION,
    UNSUBSCRIBE_CONFIRMATION,
    SnsMessage,
    SnsUnreachable,
    SnsVerifier,
)

log = structlog.get_logger()

PROVIDER = "ses"
TOKEN_HEADER = "x-herald-token"
_HINTS = {"Permanent": delivery_pb2.BOUNCE_KIND_HARD, "Transient": delivery_pb2.BOUNCE_KIND_SOFT}
_PROVIDER_SUPPRESSION = "OnAccountSuppressionList"


def _object(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _entries(value: object) -> list[dict[str, object]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def recipient_of(mail: dict[str, object], recipients: Recipients) -> BouncedRecipient | None:
    """The recipient named by the message's return path, or else by its X-Herald-Token header."""
    source = mail.get("source")
    if isinstance(source, str):
        found = recipients.by_address(parseaddr(source)[1] or source)
        if found is not None:
            return found
    for header in _entries(mail.get("headers")):
        name = header.get("name")
        if isinstance(name, str) and name.strip().lower() == TOKEN_HEADER:
            found = recipients.by_token(header.get("value"))
            if found is not None:
                return found
    return None


def findings_of(sns: SnsMessage, recipients: Recipients) -> Findings:
    """The reports of one verified SNS Notification."""
    try:
        notification = json.loads(sns.message)
    except (ValueError, RecursionError):
        notification = None
    if not isinstance(notification, dict):
        log.info("SNS notification is no SES notification", message_id=sns.message_id)
        return Findings(ignored=1)
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = _object(notification.get("mail"))
    if kind == "Bounce":
        return _bounce(_object(notification.get("bounce")), mail, sns, recipients)
    if kind == "Complaint":
        return _complaint(_object(notification.get("complaint")), mail, sns, recipients)
    return Findings(ignored=1)


def _first_entry(entries: list[dict[str, object]], sns: SnsMessage) -> tuple[dict[str, object], int]:
    """The entry a Herald message's notification is about, and how many more it (unexpectedly) lists."""
    if len(entries) > 1:
        log.warning("SES notification lists several recipients", message_id=sns.message_id, count=len(entries))
    return (entries[0] if entries else {}), max(0, len(entries) - 1)


def _key(feedback: dict[str, object], entry: dict[str, object], sns: SnsMessage) -> str:
    feedback_id = feedback.get("feedbackId")
    address = entry.get("emailAddress")
    address = address.strip().lower() if isinstance(address, str) else ""
    if isinstance(feedback_id, str) and feedback_id:
        return event_key(PROVIDER, feedback_id, address)
    return event_key(PROVIDER, "sns", sns.message_id, address)


def _bounce(
    bounce: dict[str, object], mail: dict[str, object], sns: SnsMessage, recipients: Recipients
) -> Findings:
    if bounce.get("bounceSubType") == _PROVIDER_SUPPRESSION:
        return Findings(ignored=1)
    entry, extra = _first_entry(_entries(bounce.get("bouncedRecipients")), sns)
    recipient = recipient_of(mail, recipients)
    if recipient is None:
        return Findings(unverified=1, ignored=extra)
    bounce_type = text_of(bounce.get("bounceType"), 40)
    diagnostic = text_of(entry.get("diagnosticCode")) or (
        f"SES {bounce_type or 'Undetermined'} bounce ({text_of(bounce.get('bounceSubType'), 60) or 'General'})"
    )
    report = bounce_report(
        recipient,
        source=delivery_pb2.BOUNCE_SOURCE_SES,
        key=_key(bounce, entry, sns),
        kind_hint=_HINTS.get(bounce_type, delivery_pb2.BOUNCE_KIND_UNSPECIFIED),
        status=entry.get("status"),
        diagnostic=diagnostic,
        occurred=parse_instant(bounce.get("timestamp")),
    )
    return Findings(reports=[report], ignored=extra)


def _complaint(
    complaint: dict[str, object], mail: dict[str, object], sns: SnsMessage, recipients: Recipients
) -> Findings:
    feedback_type = text_of(complaint.get("complaintFeedbackType"), 60)
    if feedback_type == "not-spam" or complaint.get("complaintSubType") == _PROVIDER_SUPPRESSION:
        return Findings(ignored=1)
    entry, extra = _first_entry(_entries(complaint.get("complainedRecipients")), sns)
    recipient = recipient_of(mail, recipients)
    if recipient is None:
        return Findings(unverified=1, ignored=extra)
    report = bounce_report(
        recipient,
        source=delivery_pb2.BOUNCE_SOURCE_SES,
        key=_key(complaint, entry, sns),
        kind_hint=delivery_pb2.BOUNCE_KIND_COMPLAINT,
        diagnostic=f"SES complaint ({feedback_type})" if feedback_type else "SES complaint",
        occurred=parse_instant(complaint.get("timestamp")),
    )
    return Findings(reports=[report], ignored=extra)


class SesWebhook(ProviderWebhook[SnsVerifier]):
    """The handler of POST /webhooks/ses; without an SNS verifier it is off (404)."""

    provider = PROVIDER

    async def findings(self, request: web.Request, check: SnsVerifier) -> Findings | web.Response:
        body = await read_body(request, self._max_body)
        try:
            message = await check.verify(load_json(body))
            if message.type == SUBSCRIPTION_CONFIRMATION:
                await check.confirm(message)
                REQUESTS.labels(PROVIDER, "confirmed").inc()
                return web.json_response({"confirmed": True})
        except SnsUnreachable as exc:
            return unavailable_response(PROVIDER, str(exc))
        if message.type == UNSUBSCRIBE_CONFIRMATION:
            log.warning("SNS unsubscribed the SES webhook", topic=message.topic_arn)
            return web.json_response({"unsubscribed": True})
        return findings_of(message, self._recipients)
