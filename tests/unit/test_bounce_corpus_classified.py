"""The bounce corpus's messages through the product's own path, and the classifier: every real DSN and every ARF
report is read by the bounce receiver's parser, turned into BounceReports by the receiver (the recipient named
by the verified return path, or for an ARF report at the feedback address by the original it includes), and
judged by delivery as RecordBounces judges it (services/delivery/api.py's conversion, then
domain.classified_bounce, which calls services/common/bounces.py judge). The kind, the enhanced status code
and the reply code must be the manifest's. The provider payloads go through the webhooks in
tests/unit/test_bounce_corpus_providers.py.

The expectations are in tests/bounce_corpus/manifest.json (docs/bounces.md, "The bounce corpus").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from herald.delivery.v1 import delivery_pb2

from services.common import bounces
from services.common.return_path import ReturnPaths
from services.delivery import api, bounce_parser, domain
from services.delivery.bounce_receiver import BounceReceiver
from services.delivery.group_commit import GroupCommit

CORPUS = Path(__file__).resolve().parent.parent / "bounce_corpus"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text())
MESSAGES: list[dict[str, Any]] = MANIFEST["messages"]
DSNS = [entry for entry in MESSAGES if entry["report_type"] == "delivery-status"]
ARFS = [entry for entry in MESSAGES if entry["report_type"] == "feedback-report"]
BOUNCE_KINDS = ("hard", "soft", "policy")
RECEIVED_AT = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)


async def _nothing_recorded(reports: Sequence[delivery_pb2.BounceReport]) -> None:
    raise AssertionError("the corpus tests record nothing")


RECEIVER = BounceReceiver(
    ReturnPaths(MANIFEST["bounce_domain"], MANIFEST["secret"]),
    GroupCommit(_nothing_recorded),
    MANIFEST["feedback_address"],
)


def _through_the_receiver(entry: dict[str, Any]) -> tuple[bounce_parser.Reading, list[domain.ClassifiedBounce]]:
    """What the receiver reads in the message and reports, as delivery classifies it."""
    raw = (CORPUS / entry["file"]).read_bytes()
    reading = bounce_parser.read_report(raw, received_at=RECEIVED_AT)
    reports = RECEIVER.reports_of(reading, raw, [entry["envelope"]["rcpt_to"]])
    return reading, [domain.classified_bounce(api._bounce_report(report, RECEIVED_AT)) for report in reports]


def _bounced(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The recipient blocks Herald should record: failures (and OpenSMTPD's expiry, reported as 'delayed')."""
    return [r for r in entry["recipients"] if r["kind"] in BOUNCE_KINDS]


# The classifier alone gets the fields a reporter passes on. Exim writes some failures with a generic Status
# 5.0.0 and no Diagnostic-Code ("Unrouteable address", "retry timeout exceeded" are only in the human-readable
# part): those are judged through the parser, below.
FAILED = [
    (entry, recipient)
    for entry in DSNS
    for recipient in _bounced(entry)
    if recipient["diagnostic"] or recipient["text_reply"] or not recipient["status"].endswith(".0.0")
]


@pytest.mark.parametrize(("entry", "recipient"), FAILED, ids=[f"{e['file']}:{r['address']}" for e, r in FAILED])
def test_the_classifier_gives_each_failed_recipient_its_expected_kind(
    entry: dict[str, Any], recipient: dict[str, Any]
) -> None:
    diagnostic = recipient["diagnostic"] or recipient["text_reply"]
    kind = bounces.classify(recipient["enhanced_code"], recipient["reply_code"], diagnostic)
    assert str(kind) == recipient["kind"], diagnostic or recipient["status"]


@pytest.mark.parametrize("entry", DSNS, ids=[entry["file"] for entry in DSNS])
def test_each_dsn_is_recorded_as_the_manifest_says(entry: dict[str, Any]) -> None:
    reading, recorded = _through_the_receiver(entry)
    bounced = _bounced(entry)
    if not bounced:
        assert reading.notice is None, "a delay warning or a success notice is no bounce"
        assert recorded == []
        return
    notice = reading.notice
    assert notice is not None, reading.why_nothing
    # One report: the DSN is about the one recipient its return path names. A multi-recipient DSN lists its
    # blocks in no fixed order; the parser reads one of the failed ones, and that one's codes are recorded.
    [bounce] = recorded
    return_path = entry["return_path"]
    assert (bounce.campaign_id, bounce.recipient_id) == (return_path["campaign_id"], return_path["recipient_id"])
    assert bounce.source is bounces.BounceSource.DSN
    by_address = {r["address"].lower(): r for r in bounced}
    assert notice.final_recipient.lower() in by_address
    expected = by_address[notice.final_recipient.lower()]
    assert (str(bounce.kind), bounce.status_code, bounce.reply_code) == (
        expected["kind"],
        expected["enhanced_code"],
        expected["reply_code"],
    ), bounce.diagnostic


@pytest.mark.parametrize("entry", ARFS, ids=[entry["file"] for entry in ARFS])
def test_each_arf_report_is_recorded_as_the_manifest_says(entry: dict[str, Any]) -> None:
    reading, recorded = _through_the_receiver(entry)
    expected = entry["expected"]
    if expected["kind"] == "none":
        assert reading.notice is None and recorded == [], "only an abuse report is a complaint"
        return
    [complaint] = recorded
    return_path = entry["return_path"]
    assert (complaint.campaign_id, complaint.recipient_id) == (
        return_path["campaign_id"],
        return_path["recipient_id"],
    )
    assert complaint.source is bounces.BounceSource.ARF
    assert (str(complaint.kind), complaint.status_code, complaint.reply_code) == (
        expected["kind"],
        expected["status_code"],
        expected["reply_code"],
    )
