"""The bounce corpus's provider payloads through the product's own path: each webhook module turns the verified
payload into BounceReports (translator/webhooks/ses.py, sendgrid.py, postmark.py `findings_of`, the step after
the signature or secret check, which tests/unit/test_webhook_*.py cover), and delivery judges each report as
RecordBounces does (services/delivery/api.py's conversion, then domain.classified_bounce, which calls
services/common/bounces.py judge). The reports' recipients, kinds, enhanced status codes and reply codes, and
the number of events acknowledged without a report, must be the manifest's.

The payloads and their expectations are in tests/bounce_corpus/ (docs/bounces.md, "The bounce corpus").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.common import bounces
from services.common.return_path import ReturnPaths
from services.delivery import api, domain
from translator.webhooks import postmark, sendgrid, ses
from translator.webhooks._common import Findings, Recipients
from translator.webhooks.sns import SnsMessage

CORPUS = Path(__file__).resolve().parent.parent / "bounce_corpus"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text())
PAYLOADS: list[dict[str, Any]] = MANIFEST["provider_payloads"]
RECIPIENTS = Recipients(ReturnPaths(MANIFEST["bounce_domain"], MANIFEST["secret"]))
RECEIVED_AT = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
SOURCES = {
    "ses": bounces.BounceSource.SES,
    "sendgrid": bounces.BounceSource.SENDGRID,
    "postmark": bounces.BounceSource.POSTMARK,
}


def _findings(origin: str, body: Any) -> Findings:
    if origin == "ses":
        # What SnsVerifier.verify hands on for a Notification whose signature verified.
        message = SnsMessage(
            type=body["Type"], message_id=body["MessageId"], topic_arn=body["TopicArn"], message=body["Message"]
        )
        return ses.findings_of(message, RECIPIENTS)
    if origin == "sendgrid":
        return sendgrid.findings_of(body, RECIPIENTS)
    assert origin == "postmark"
    return postmark.findings_of(body, RECIPIENTS)


def test_every_provider_has_its_payloads() -> None:
    assert {entry["origin"] for entry in PAYLOADS} == set(SOURCES)


@pytest.mark.parametrize("entry", PAYLOADS, ids=[entry["file"] for entry in PAYLOADS])
def test_each_provider_payload_is_recorded_as_the_manifest_says(entry: dict[str, Any]) -> None:
    body = json.loads((CORPUS / entry["file"]).read_text())
    findings = _findings(entry["origin"], body)
    expected = entry["expected"]
    assert (findings.ignored, findings.unverified) == (expected["ignored"], 0)
    recorded = [domain.classified_bounce(api._bounce_report(report, RECEIVED_AT)) for report in findings.reports]
    return_path = entry["return_path"]
    for bounce in recorded:
        assert (bounce.campaign_id, bounce.recipient_id) == (
            return_path["campaign_id"],
            return_path["recipient_id"],
        )
        assert bounce.source is SOURCES[entry["origin"]]
    got = [
        {"kind": str(bounce.kind), "status_code": bounce.status_code, "reply_code": bounce.reply_code}
        for bounce in recorded
    ]
    assert got == expected["reports"], [bounce.diagnostic for bounce in recorded]


@pytest.mark.parametrize("entry", PAYLOADS, ids=[entry["file"] for entry in PAYLOADS])
def test_the_same_payload_gives_the_same_event_keys(entry: dict[str, Any]) -> None:
    body = json.loads((CORPUS / entry["file"]).read_text())
    first = [report.event_key for report in _findings(entry["origin"], body).reports]
    again = [report.event_key for report in _findings(entry["origin"], json.loads(json.dumps(body))).reports]
    assert first == again and len(set(first)) == len(first)
