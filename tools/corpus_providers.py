"""The provider webhook payloads of the bounce corpus, built from the fields Amazon SES (through SNS), SendGrid
(Event Webhook) and Postmark (bounce and spam-complaint webhooks) document; written by
tools/bounce_corpus_built.py. Every value is ours: addresses, ids, texts. Each payload names its recipient
the way Herald's messages make the provider do it: SES by the return path in mail.source (or the
X-Herald-Token among mail.headers), SendGrid by the herald_token unique argument, Postmark by the
herald_token metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.common.return_path import ReturnPaths
from tools import corpus_manifest
from tools.bounce_scenarios import BOUNCE_DOMAIN, SECRET

PATHS = ReturnPaths(BOUNCE_DOMAIN, SECRET)
CAMPAIGN_IDS = corpus_manifest.BUILT_CAMPAIGN_IDS
SENT = corpus_manifest.SENT


@dataclass(frozen=True)
class Expected:
    """One report the webhook should hand to delivery, as delivery then classifies it."""

    kind: str
    status_code: str = ""
    reply_code: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "status_code": self.status_code, "reply_code": self.reply_code}


@dataclass(frozen=True)
class Payload:
    origin: str
    name: str
    recipient_id: int
    address: str
    description: str
    body: object
    reports: Sequence[Expected] = ()
    ignored: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        return {
            "file": f"providers/{self.origin}/{self.name}.json",
            "origin": self.origin,
            "source": corpus_manifest.BUILT_SOURCES[self.origin],
            "scenario": self.name,
            "description": self.description,
            "return_path": corpus_manifest.return_path_entry(self.origin, self.recipient_id, self.address),
            "expected": {"reports": [r.as_json() for r in self.reports], "ignored": self.ignored},
        }


def _instant(moment: datetime) -> str:
    """ISO 8601 with milliseconds and Z, as SES and SNS write instants."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _ses_mail(recipient_id: int, address: str, *, source: str = "") -> dict[str, Any]:
    campaign = CAMPAIGN_IDS["ses"]
    token = PATHS.token(campaign, recipient_id)
    message_id = f"0102018c3e5b{recipient_id:04d}-5d1c9a2e-7f41-4b0e-9c2d-3a6f8e1b{recipient_id:04d}-000000"
    return {
        "timestamp": _instant(SENT),
        "messageId": message_id,
        "source": source or PATHS.address(campaign, recipient_id),
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/shop.example.test",
        "sourceIp": "203.0.113.7",
        "callerIdentity": "herald-sender",
        "sendingAccountId": "123456789012",
        "destination": [address],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": '"Herald Shop" <news@shop.example.test>'},
            {"name": "To", "value": address},
            {"name": "Subject", "value": "Our winter collection"},
            {"name": "X-Herald-Token", "value": token},
            {"name": "List-Unsubscribe", "value": f"<https://herald.example.test/u/{token}>"},
        ],
        "commonHeaders": {
            "from": ['"Herald Shop" <news@shop.example.test>'],
            "to": [address],
            "messageId": f"<{campaign}.{recipient_id}.corpus@shop.example.test>",
            "subject": "Our winter collection",
        },
    }


def _sns(recipient_id: int, notification: dict[str, Any]) -> dict[str, Any]:
    """The SNS Notification that carries it, as SNS posts it, without the signature fields (Signature,
    SigningCertURL...): the corpus starts after verification, which tests/unit/test_webhook_sns.py covers."""
    return {
        "Type": "Notification",
        "MessageId": f"5b8f3c2e-91d4-5a7e-b0c6-{CAMPAIGN_IDS['ses']:04d}{recipient_id:08d}",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:herald-ses-feedback",
        "Message": json.dumps(notification, separators=(",", ":")),
        "Timestamp": _instant(SENT + timedelta(minutes=recipient_id)),
    }


def _ses_bounce(
    recipient_id: int,
    address: str,
    bounce_type: str,
    sub_type: str,
    status: str,
    diagnostic: str,
    *,
    event: bool = False,
    source: str = "",
) -> dict[str, Any]:
    bounced: dict[str, Any] = {"emailAddress": address, "action": "failed", "status": status}
    if diagnostic:
        bounced["diagnosticCode"] = diagnostic
    when = SENT + timedelta(minutes=recipient_id)
    bounce = {
        "bounceType": bounce_type,
        "bounceSubType": sub_type,
        "bouncedRecipients": [bounced],
        "timestamp": _instant(when),
        "feedbackId": f"0102018c3e5c{recipient_id:04d}-8a2b1f3d-0c7e-4d5a-b6f9-1e2d3c4b5a69-000000",
        "remoteMtaIp": "192.0.2.44",
        "reportingMTA": "dns; b224-13.smtp-out.eu-west-1.amazonses.com",
    }
    kind_field = "eventType" if event else "notificationType"
    return _sns(
        recipient_id,
        {kind_field: "Bounce", "bounce": bounce, "mail": _ses_mail(recipient_id, address, source=source)},
    )


def _ses_complaint(recipient_id: int, address: str, feedback_type: str) -> dict[str, Any]:
    when = SENT + timedelta(hours=2)
    complaint = {
        "complainedRecipients": [{"emailAddress": address}],
        "timestamp": _instant(when),
        "feedbackId": f"0102018c3e5d{recipient_id:04d}-2f1e0d9c-8b7a-4c6d-9e5f-4a3b2c1d0e9f-000000",
        "userAgent": "ExampleMail-FBL/1.3",
        "complaintFeedbackType": feedback_type,
        "arrivalDate": _instant(SENT + timedelta(seconds=3)),
    }
    return _sns(
        recipient_id,
        {"notificationType": "Complaint", "complaint": complaint, "mail": _ses_mail(recipient_id, address)},
    )


def _ses_delivery(recipient_id: int, address: str) -> dict[str, Any]:
    delivery = {
        "timestamp": _instant(SENT + timedelta(seconds=4)),
        "processingTimeMillis": 812,
        "recipients": [address],
        "smtpResponse": "250 2.0.0 OK 1733477402 queued as 4Qx7Lk2Zb9z1x",
        "reportingMTA": "b224-13.smtp-out.eu-west-1.amazonses.com",
        "remoteMtaIp": "192.0.2.44",
    }
    return _sns(
        recipient_id,
        {"notificationType": "Delivery", "delivery": delivery, "mail": _ses_mail(recipient_id, address)},
    )


def ses_payloads() -> list[Payload]:
    def address(n: int) -> str:
        return f"reader{n}@ses-rcpt.example.net"

    return [
        Payload(
            "ses",
            "bounce-permanent-general",
            1,
            address(1),
            "Bounce, Permanent/General: the receiving server refused an unknown user (550 5.1.1).",
            _ses_bounce(
                1,
                address(1),
                "Permanent",
                "General",
                "5.1.1",
                f"smtp; 550 5.1.1 <{address(1)}>: no such user here",
            ),
            [Expected("hard", "5.1.1", 550)],
        ),
        Payload(
            "ses",
            "bounce-permanent-noemail",
            2,
            address(2),
            "Bounce, Permanent/NoEmail without a diagnosticCode and with a bare 5.0.0: only SES's bounce type "
            "says the address does not exist, so its hint decides.",
            _ses_bounce(2, address(2), "Permanent", "NoEmail", "5.0.0", ""),
            [Expected("hard", "5.0.0", 0)],
        ),
        Payload(
            "ses",
            "bounce-permanent-blocklisted",
            3,
            address(3),
            "Bounce, Permanent/General for a blocklist rejection (550 5.7.1): Permanent is no proof the address "
            "is bad; a policy rejection, never suppressed.",
            _ses_bounce(
                3,
                address(3),
                "Permanent",
                "General",
                "5.7.1",
                "smtp; 550 5.7.1 Message rejected: sending IP 203.0.113.7 is listed at bl.example-rbl.test",
            ),
            [Expected("policy", "5.7.1", 550)],
        ),
        Payload(
            "ses",
            "bounce-transient-mailboxfull",
            4,
            address(4),
            "Bounce, Transient/MailboxFull (552 5.2.2).",
            _ses_bounce(
                4,
                address(4),
                "Transient",
                "MailboxFull",
                "5.2.2",
                f"smtp; 552 5.2.2 <{address(4)}>: mailbox is full",
            ),
            [Expected("soft", "5.2.2", 552)],
        ),
        Payload(
            "ses",
            "bounce-transient-general",
            5,
            address(5),
            "Bounce, Transient/General: SES gave up after retrying a server that kept answering 421 4.4.2.",
            _ses_bounce(
                5,
                address(5),
                "Transient",
                "General",
                "4.4.7",
                "smtp; 421 4.4.2 connection timed out, try again later",
            ),
            [Expected("soft", "4.4.7", 421)],
        ),
        Payload(
            "ses",
            "bounce-on-account-suppression-list",
            6,
            address(6),
            "Bounce, Permanent/OnAccountSuppressionList: SES did not even try (the address is on the account's own "
            "suppression list, for a bounce reported when it happened): ignored.",
            _ses_bounce(
                6,
                address(6),
                "Permanent",
                "OnAccountSuppressionList",
                "5.1.1",
                "Amazon SES did not send the message to this address because it is on the suppression list",
            ),
            ignored=1,
        ),
        Payload(
            "ses",
            "event-bounce-token-header",
            7,
            address(7),
            "A configuration set's event destination (eventType Bounce) for a message sent with the shop's own "
            "MAIL FROM: mail.source names no return path, the X-Herald-Token among mail.headers names the "
            "recipient.",
            _ses_bounce(
                7,
                address(7),
                "Permanent",
                "General",
                "5.1.1",
                f"smtp; 550-5.1.1 <{address(7)}>: recipient address rejected: user unknown",
                event=True,
                source="news@shop.example.test",
            ),
            [Expected("hard", "5.1.1", 550)],
        ),
        Payload(
            "ses",
            "complaint-abuse",
            8,
            address(8),
            "Complaint with complaintFeedbackType abuse, from a mailbox provider's feedback loop.",
            _ses_complaint(8, address(8), "abuse"),
            [Expected("complaint")],
        ),
        Payload(
            "ses",
            "complaint-not-spam",
            9,
            address(9),
            "Complaint notification whose feedback type is not-spam: not a complaint, ignored.",
            _ses_complaint(9, address(9), "not-spam"),
            ignored=1,
        ),
        Payload(
            "ses",
            "delivery",
            10,
            address(10),
            "Delivery notification: the receiving server accepted the message. Nothing to record.",
            _ses_delivery(10, address(10)),
            ignored=1,
        ),
    ]


def _sendgrid_event(
    recipient_id: int, address: str, event: str, moment: datetime, **fields: Any
) -> dict[str, Any]:
    token = PATHS.token(CAMPAIGN_IDS["sendgrid"], recipient_id)
    return {
        "email": address,
        "timestamp": int(moment.timestamp()),
        "smtp-id": f"<{CAMPAIGN_IDS['sendgrid']}.{recipient_id}.corpus@shop.example.test>",
        "event": event,
        "category": ["campaign"],
        "sg_event_id": f"c2VuZGdyaWQtY29ycHVz-{event}-{recipient_id:03d}-{int(moment.timestamp())}",
        "sg_message_id": f"Qm9yZGVyQ29ycHVz{recipient_id:03d}.filterdrecv-5d4c8b7f9-xq2lp-1-6752C0A8-{recipient_id}.0",
        "herald_token": token,
        **fields,
    }


def sendgrid_payloads() -> list[Payload]:
    def address(n: int) -> str:
        return f"reader{n}@sendgrid-rcpt.example.net"

    late = SENT + timedelta(minutes=5)
    return [
        Payload(
            "sendgrid",
            "bounce",
            1,
            address(1),
            "A bounce event of type bounce: the receiving server refused an unknown user.",
            [
                _sendgrid_event(
                    1,
                    address(1),
                    "bounce",
                    late,
                    type="bounce",
                    status="5.1.1",
                    reason=f"550 5.1.1 <{address(1)}>: mailbox does not exist",
                    tls=1,
                    ip="203.0.113.9",
                )
            ],
            [Expected("hard", "5.1.1", 550)],
        ),
        Payload(
            "sendgrid",
            "blocked",
            2,
            address(2),
            "A bounce event of type blocked: the receiving server refused the sending IP (a blocklist). "
            "A policy rejection, never suppressed.",
            [
                _sendgrid_event(
                    2,
                    address(2),
                    "bounce",
                    late,
                    type="blocked",
                    status="5.7.1",
                    reason="554 5.7.1 Service unavailable; client host [203.0.113.9] blocked using bl.example-rbl.test",
                    tls=1,
                    ip="203.0.113.9",
                )
            ],
            [Expected("policy", "5.7.1", 554)],
        ),
        Payload(
            "sendgrid",
            "spamreport",
            3,
            address(3),
            "A spamreport event: the reader marked the message as spam.",
            [_sendgrid_event(3, address(3), "spamreport", SENT + timedelta(hours=3))],
            [Expected("complaint")],
        ),
        Payload(
            "sendgrid",
            "dropped",
            4,
            address(4),
            "A dropped event (reason Bounced Address): SendGrid did not offer the message to the receiving "
            "server because of its own suppression list; nothing new about the address, ignored.",
            [_sendgrid_event(4, address(4), "dropped", SENT, reason="Bounced Address", status="5.0.0")],
            ignored=1,
        ),
        Payload(
            "sendgrid",
            "batch",
            5,
            address(5),
            "One POST with several events for one message, as SendGrid batches them: processed, deferred, "
            "a bounce of type bounce whose reply says the mailbox is full (the code decides: soft, whatever "
            "the type says), and an open. One report, three events ignored.",
            [
                _sendgrid_event(5, address(5), "processed", SENT, send_at=0),
                _sendgrid_event(
                    5,
                    address(5),
                    "deferred",
                    SENT + timedelta(minutes=1),
                    response="452 4.2.2 mailbox full, try again later",
                    attempt="1",
                ),
                _sendgrid_event(
                    5,
                    address(5),
                    "bounce",
                    late,
                    type="bounce",
                    status="5.2.2",
                    reason=f"552 5.2.2 <{address(5)}>: mailbox is over its storage quota",
                    tls=1,
                ),
                _sendgrid_event(5, address(5), "open", late, useragent="Mozilla/5.0", ip="192.0.2.80"),
            ],
            [Expected("soft", "5.2.2", 552)],
            ignored=3,
        ),
    ]


def _postmark(
    recipient_id: int, address: str, record_type: str, type_name: str, code: int, **fields: Any
) -> dict[str, Any]:
    token = PATHS.token(CAMPAIGN_IDS["postmark"], recipient_id)
    when = SENT + timedelta(minutes=recipient_id)
    return {
        "RecordType": record_type,
        "ID": 4_202_600 + recipient_id,
        "Type": type_name,
        "TypeCode": code,
        "MessageID": f"8d2f4c1a-6b3e-4f7d-9a1c-0e5b7d3f{recipient_id:04d}",
        "ServerID": 23456,
        "MessageStream": "broadcast",
        "Tag": "winter-collection",
        "Email": address,
        "From": "news@shop.example.test",
        "BouncedAt": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Subject": "Our winter collection",
        "Metadata": {"herald_token": token},
        **fields,
    }


def postmark_payloads() -> list[Payload]:
    def address(n: int) -> str:
        return f"reader{n}@postmark-rcpt.example.net"

    return [
        Payload(
            "postmark",
            "hard-bounce",
            1,
            address(1),
            "Bounce record of Type HardBounce: the receiving server refused an unknown user.",
            _postmark(
                1,
                address(1),
                "Bounce",
                "HardBounce",
                1,
                Name="Hard bounce",
                Description="Permanent failure: the receiving server refused the recipient.",
                Details=f"smtp;550 5.1.1 <{address(1)}>: unknown recipient",
                Inactive=True,
                CanActivate=True,
                DumpAvailable=True,
            ),
            [Expected("hard", "5.1.1", 550)],
        ),
        Payload(
            "postmark",
            "soft-bounce",
            2,
            address(2),
            "Bounce record of Type SoftBounce: the mailbox is full.",
            _postmark(
                2,
                address(2),
                "Bounce",
                "SoftBounce",
                4096,
                Name="Soft bounce/Undeliverable",
                Description="Temporary failure: the receiving server could not take the message now.",
                Details=f"smtp;452 4.2.2 <{address(2)}>: mailbox full, please try again later",
                Inactive=False,
                CanActivate=True,
                DumpAvailable=True,
            ),
            [Expected("soft", "4.2.2", 452)],
        ),
        Payload(
            "postmark",
            "transient",
            3,
            address(3),
            "Bounce record of Type Transient: the server answered 421 and Postmark will retry.",
            _postmark(
                3,
                address(3),
                "Bounce",
                "Transient",
                2,
                Name="Message delayed/Undeliverable",
                Description="Delayed: the receiving server asked to try again later.",
                Details="smtp;421 4.4.2 connection dropped by the receiving server",
                Inactive=False,
                CanActivate=True,
                DumpAvailable=False,
            ),
            [Expected("soft", "4.4.2", 421)],
        ),
        Payload(
            "postmark",
            "blocked",
            4,
            address(4),
            "Bounce record of Type Blocked: the receiving server refused the content as spam. A policy "
            "rejection, never suppressed.",
            _postmark(
                4,
                address(4),
                "Bounce",
                "Blocked",
                100000,
                Name="ISP block",
                Description="Refused by the receiving server's filters.",
                Details="smtp;554 5.7.1 Message rejected: its content looks like spam",
                Inactive=False,
                CanActivate=True,
                DumpAvailable=True,
            ),
            [Expected("policy", "5.7.1", 554)],
        ),
        Payload(
            "postmark",
            "spam-complaint",
            5,
            address(5),
            "SpamComplaint record: the reader marked the message as spam.",
            _postmark(
                5,
                address(5),
                "SpamComplaint",
                "SpamComplaint",
                512,
                Name="Spam complaint",
                Description="The reader reported the message as spam.",
                Details="Feedback loop report from mail.example.net",
                Inactive=True,
                CanActivate=False,
                DumpAvailable=True,
            ),
            [Expected("complaint")],
        ),
    ]
