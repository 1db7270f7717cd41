"""Writes the built part of tests/bounce_corpus/: ARF abuse reports (RFC 5965, built here) and provider webhook
payloads (Amazon SES through SNS, SendGrid, Postmark: tools/corpus_providers.py), each built from the fields
the RFC or the provider documents, with the classification Herald should give it.

    .venv/bin/python tools/bounce_corpus_built.py

No root, no network, deterministic: fixed dates and ids, so a rerun rewrites the same bytes. The real
MTAs' DSNs are tools/bounce_corpus.py's; this tool keeps their manifest entries and replaces its own.

Nothing is copied from a provider's samples: the layouts follow what the documentation describes (which
fields, where, in which form) and every value is ours. What each file stands for is in its manifest
entry (`scenario`, `description`), and docs/bounces.md ("The bounce corpus") lists them.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.common.return_path import ReturnPaths
from tools import corpus_manifest
from tools.bounce_corpus import campaign_message
from tools.bounce_scenarios import BOUNCE_DOMAIN, SECRET
from tools.corpus_providers import postmark_payloads, sendgrid_payloads, ses_payloads

PATHS = ReturnPaths(BOUNCE_DOMAIN, SECRET)
CAMPAIGN_IDS = corpus_manifest.BUILT_CAMPAIGN_IDS
SENT = corpus_manifest.SENT
SENDER_IP = "198.51.100.25"  # Herald's sending host, as the receiving provider saw it


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def _original(campaign_id: int, recipient_id: int, address: str) -> str:
    """The campaign message as the receiving provider stored it: its Return-Path and Received added."""
    message = campaign_message(PATHS, campaign_id, recipient_id, [address], 0).decode()
    message = message.replace(
        message[message.index("Date: ") : message.index("\n", message.index("Date: "))],
        f"Date: {format_datetime(SENT)}",
    )
    # The standard library picks a random MIME boundary: a fixed one keeps reruns byte for byte the same.
    boundary = re.search(r'boundary="([^"]+)"', message)
    if boundary is not None:
        message = message.replace(boundary.group(1), f"==herald-{campaign_id}-{recipient_id}==")
    domain = address.partition("@")[2]
    return (
        f"Return-Path: <{PATHS.address(campaign_id, recipient_id)}>\n"
        f"Received: from mta.shop.example.test (mta.shop.example.test [{SENDER_IP}])\n"
        f"\tby mx1.{domain} with ESMTPS id 4Qx7Lk2Zb9z1x\n"
        f"\tfor <{address}>; {format_datetime(SENT + timedelta(seconds=2))}\n" + message.replace("\r\n", "\n")
    )


def _headers_of(original: str) -> str:
    return original.split("\n\n", 1)[0] + "\n"


@dataclass(frozen=True)
class Arf:
    """One ARF report: its layout, whom it reaches, which fields it has, what Herald should make of it."""

    name: str
    recipient_id: int
    description: str
    feedback_type: str
    kind: str
    address: str
    to_return_path: bool = False
    headers_only: bool = False
    original_rcpt_to: bool = True
    strip_token: bool = False
    redact_recipient: bool = False
    extra_fields: tuple[tuple[str, str], ...] = ()
    user_agent: str = "ExampleMail-FBL/1.3"
    reporter: str = "mail.example.net"


ARF_REPORTS = (
    Arf(
        "abuse-full-original",
        1,
        "A mailbox provider's feedback loop: a reader pressed 'this is spam'. Human-readable part, the "
        "feedback fields with Original-Rcpt-To, and the whole original as message/rfc822, sent to the "
        "feedback address.",
        "abuse",
        "complaint",
        "ann.lee@mail.example.net",
    ),
    Arf(
        "abuse-headers-only-redacted",
        2,
        "A provider that returns only the original's headers (text/rfc822-headers) and redacts the "
        "reader: no Original-Rcpt-To, the original's To replaced. The X-Herald-Token names the recipient.",
        "abuse",
        "complaint",
        "bo.chen@inbox.example.org",
        headers_only=True,
        original_rcpt_to=False,
        redact_recipient=True,
        user_agent="InboxExample-Feedback/2.0",
        reporter="inbox.example.org",
    ),
    Arf(
        "abuse-original-mail-from-only",
        3,
        "Headers only, trimmed to From, To, Subject, Date and Message-ID (no X-Herald-Token, no "
        "Return-Path): the recipient is named by the report's Original-Mail-From, the return path.",
        "abuse",
        "complaint",
        "cy.diaz@webmail.example.com",
        headers_only=True,
        strip_token=True,
        extra_fields=(("Incidents", "1"),),
        user_agent="WebmailExample-ARF/0.9",
        reporter="webmail.example.com",
    ),
    Arf(
        "abuse-to-return-path",
        4,
        "A feedback loop that sends its report to the message's return path instead of a feedback address; "
        "the whole original, three incidents, Authentication-Results of the original.",
        "abuse",
        "complaint",
        "dee.evans@mail.example.net",
        to_return_path=True,
        extra_fields=(
            ("Incidents", "3"),
            (
                "Authentication-Results",
                "mx1.mail.example.net; spf=pass smtp.mailfrom=bounces.example.test; dkim=pass header.d=shop.example.test",
            ),
        ),
    ),
    Arf(
        "not-spam",
        5,
        "Feedback-Type not-spam: the reader moved the message out of the spam folder. Not a complaint: "
        "nothing is recorded.",
        "not-spam",
        "none",
        "eli.fox@mail.example.net",
    ),
    Arf(
        "auth-failure",
        6,
        "Feedback-Type auth-failure (RFC 6591): a DKIM failure report about the message, not the reader's "
        "complaint: nothing is recorded.",
        "auth-failure",
        "none",
        "fay.gold@inbox.example.org",
        headers_only=True,
        extra_fields=(
            ("Auth-Failure", "signature"),
            ("DKIM-Domain", "shop.example.test"),
            ("DKIM-Selector", "s1"),
        ),
        user_agent="InboxExample-Feedback/2.0",
        reporter="inbox.example.org",
    ),
)


def arf_report(arf: Arf) -> tuple[bytes, dict[str, Any]]:
    """The report as it arrives over SMTP (CRLF), and its manifest entry."""
    campaign = CAMPAIGN_IDS["arf"]
    return_path = PATHS.address(campaign, arf.recipient_id)
    original = _original(campaign, arf.recipient_id, arf.address)
    if arf.redact_recipient:
        original = original.replace(f"To: {arf.address}", "To: redacted@" + arf.address.partition("@")[2])
    if arf.strip_token:
        kept = ("From:", "To:", "Subject:", "Date:", "Message-ID:")
        original = "".join(line + "\n" for line in _headers_of(original).splitlines() if line.startswith(kept))
    arrived = SENT + timedelta(seconds=2)
    reported = SENT + timedelta(hours=1, minutes=arf.recipient_id)
    boundary = f"----=_ARF_{campaign}_{arf.recipient_id}"
    fields = [
        ("Feedback-Type", arf.feedback_type),
        ("User-Agent", arf.user_agent),
        ("Version", "1"),
        ("Original-Mail-From", f"<{return_path}>"),
        *([("Original-Rcpt-To", f"<{arf.address}>")] if arf.original_rcpt_to else []),
        ("Arrival-Date", format_datetime(arrived)),
        ("Reporting-MTA", f"dns; fbl.{arf.reporter}"),
        ("Source-IP", SENDER_IP),
        ("Reported-Domain", "shop.example.test"),
        *arf.extra_fields,
    ]
    if arf.headers_only:
        enclosed = f"Content-Type: text/rfc822-headers\n\n{_headers_of(original)}"
    else:
        enclosed = f"Content-Type: message/rfc822\nContent-Disposition: inline\n\n{original}"
    what = {
        "abuse": "an abuse report (the recipient marked it as spam)",
        "not-spam": "a not-spam report (the recipient marked it as not spam)",
        "auth-failure": "an authentication failure report",
    }[arf.feedback_type]
    rcpt_to = return_path if arf.to_return_path else corpus_manifest.FEEDBACK_ADDRESS
    text = (
        f"From: Feedback Loop <fbl@{arf.reporter}>\n"
        f"To: <{rcpt_to}>\n"
        f"Subject: Feedback report: Our winter collection\n"
        f"Date: {format_datetime(reported)}\n"
        f"Message-ID: <arf-{campaign}-{arf.recipient_id}@fbl.{arf.reporter}>\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=feedback-report;\n\tboundary="{boundary}"\n'
        "\n"
        "This is a multi-part message in MIME format.\n"
        "\n"
        f"--{boundary}\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "Content-Transfer-Encoding: 7bit\n"
        "\n"
        f"This is {what} for a message received from IP {SENDER_IP} on {format_datetime(arrived)}.\n"
        f"For questions, write to postmaster@{arf.reporter}.\n"
        "\n"
        f"--{boundary}\n"
        "Content-Type: message/feedback-report\n"
        "\n" + "".join(f"{name}: {value}\n" for name, value in fields) + "\n"
        f"--{boundary}\n"
        f"{enclosed}\n"
        f"--{boundary}--\n"
    )
    entry = {
        "file": f"arf/{arf.name}.eml",
        "origin": "arf",
        "source": corpus_manifest.BUILT_SOURCES["arf"],
        "scenario": arf.name,
        "description": arf.description,
        "report_type": "feedback-report",
        "content_type": "multipart/report",
        "feedback_type": arf.feedback_type,
        "envelope": {"mail_from": f"fbl-bounces@{arf.reporter}", "rcpt_to": rcpt_to},
        "return_path": corpus_manifest.return_path_entry("arf", arf.recipient_id, arf.address),
        "expected": {"kind": arf.kind, "status_code": "", "reply_code": 0},
    }
    return _crlf(text), entry


def main() -> int:
    corpus = corpus_manifest.CORPUS
    manifest = corpus_manifest.load()
    shutil.rmtree(corpus / "arf", ignore_errors=True)
    (corpus / "arf").mkdir(parents=True)
    messages = [m for m in manifest["messages"] if m.get("origin") != "arf"]
    for arf in ARF_REPORTS:
        raw, entry = arf_report(arf)
        (corpus / entry["file"]).write_bytes(raw)
        messages.append(entry)
    payloads = [*ses_payloads(), *sendgrid_payloads(), *postmark_payloads()]
    shutil.rmtree(corpus / "providers", ignore_errors=True)
    for payload in payloads:
        path = corpus / "providers" / payload.origin / f"{payload.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload.body, indent=2, ensure_ascii=False) + "\n")
    manifest["messages"] = messages
    manifest["provider_payloads"] = [payload.entry() for payload in payloads]
    corpus_manifest.save(manifest)
    print(f"{len(ARF_REPORTS)} ARF reports, {len(payloads)} provider payloads written to tests/bounce_corpus")
    return 0


if __name__ == "__main__":
    sys.exit(main())
