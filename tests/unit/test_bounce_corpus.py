"""The bounce corpus stays whole: tests/bounce_corpus/ (docs/bounces.md, "The bounce corpus") holds real DSNs of
five real MTAs (made by tools/bounce_corpus.py), ARF reports and provider payloads built from their documented
fields (tools/bounce_corpus_built.py), and each says what its manifest entry says.

Every file is listed and every entry has its file; the corpus has at least 8 distinct sources and 30 items.
A DSN parses with the standard library as a report with a message/delivery-status part; it was sent to a
return path that verifies with the recorded domain and secret and names the recorded campaign and recipient
(and the original it returns carries the same token); its per-recipient Final-Recipient, Action, Status,
quoted reply code and diagnostic are the manifest's. An ARF report has the recorded feedback type and
includes an original that names the recipient; a provider payload carries the recipient's token or return path.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest

from services.common.return_path import ReturnPaths

CORPUS = Path(__file__).resolve().parent.parent / "bounce_corpus"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text())
MESSAGES: list[dict[str, Any]] = MANIFEST["messages"]
DSNS = [entry for entry in MESSAGES if entry["report_type"] == "delivery-status"]
ARFS = [entry for entry in MESSAGES if entry["report_type"] == "feedback-report"]
PAYLOADS: list[dict[str, Any]] = MANIFEST["provider_payloads"]
RETURN_PATHS = ReturnPaths(MANIFEST["bounce_domain"], MANIFEST["secret"])
MTAS = ("postfix", "exim", "opensmtpd", "sendmail", "courier")
_KIND_OF_ACTION = {
    "failed": {"hard", "soft", "policy"},
    "delayed": {"delayed"},
    "relayed": {"none"},
    "delivered": {"none"},
}


def _read(entry: dict[str, Any]) -> Message:
    return message_from_bytes((CORPUS / entry["file"]).read_bytes(), policy=policy.default)


def _recipient_blocks(message: Message) -> list[Message]:
    part = next(p for p in message.walk() if p.get_content_type() == "message/delivery-status")
    blocks = part.get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, "a per-message block and at least one recipient block"
    return [block for block in blocks[1:] if isinstance(block, Message)]


def _returned_headers(message: Message) -> Message | None:
    """The headers of the original message the report returns (message/rfc822 or text/rfc822-headers)."""
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            return inner[0] if isinstance(inner, list) else None
        if part.get_content_type() == "text/rfc822-headers":
            return HeaderParser().parsestr(str(part.get_content()))
    return None


def _human_text(message: Message) -> str:
    texts = []
    for part in message.walk():
        if part.get_content_type() in ("message/delivery-status", "message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_type() == "text/plain":
            texts.append(str(part.get_content()))
    return " ".join(" ".join(texts).split())


def _reply_code(text: str) -> int:
    match = re.match(r"\s*(?:smtp\s*;\s*)?([2-5]\d\d)\b", text, re.IGNORECASE)
    return int(match.group(1)) if match else 0


def _token(recorded: dict[str, Any]) -> str:
    return str(recorded["address"]).partition("@")[0].removeprefix("b-")


def _names_the_recorded_recipient(address: str, recorded: dict[str, Any]) -> None:
    named = RETURN_PATHS.verify_address(address)
    assert (named.campaign_id, named.recipient_id) == (recorded["campaign_id"], recorded["recipient_id"])


def test_the_manifest_lists_every_file_and_only_existing_ones() -> None:
    on_disk = {str(path.relative_to(CORPUS)) for path in CORPUS.rglob("*") if path.suffix in (".eml", ".json")}
    on_disk.discard("manifest.json")
    listed = [entry["file"] for entry in [*MESSAGES, *PAYLOADS]]
    assert len(listed) == len(set(listed)), "a file listed twice"
    assert set(listed) == on_disk


def test_the_corpus_holds_at_least_eight_sources_and_thirty_items() -> None:
    per_origin = Counter(entry["origin"] for entry in [*MESSAGES, *PAYLOADS])
    assert len(per_origin) >= 8, per_origin
    assert sum(per_origin.values()) >= 30
    for mta in MTAS:
        assert per_origin[mta] >= 10, (mta, per_origin[mta])
    for origin in ("arf", "ses", "sendgrid", "postmark"):
        assert per_origin[origin] >= 4, (origin, per_origin[origin])
    for entry in DSNS:
        assert entry["mta"] == entry["origin"] in MTAS
        assert entry["source"].lower().startswith(entry["mta"]), entry["source"]
    for entry in [*MESSAGES, *PAYLOADS]:
        folder = entry["origin"] if entry["origin"] in (*MTAS, "arf") else f"providers/{entry['origin']}"
        assert entry["file"].startswith(f"{folder}/")


@pytest.mark.parametrize("entry", DSNS, ids=[entry["file"] for entry in DSNS])
def test_the_message_is_a_delivery_status_report(entry: dict[str, Any]) -> None:
    message = _read(entry)
    assert not message.defects, message.defects
    assert message.get_content_type() == entry["content_type"]
    if entry["content_type"] == "multipart/report":
        assert message.get_param("report-type") == "delivery-status"
    else:
        # OpenSMTPD 6.8 sends multipart/mixed with a message/delivery-status part.
        assert entry["mta"] == "opensmtpd" and entry["content_type"] == "multipart/mixed"
    assert _recipient_blocks(message)
    assert entry["envelope"]["mail_from"] == "", "a DSN is sent with the null return path"


@pytest.mark.parametrize("entry", DSNS, ids=[entry["file"] for entry in DSNS])
def test_the_return_path_verifies_and_names_the_recorded_recipient(entry: dict[str, Any]) -> None:
    recorded = entry["return_path"]
    for address in (entry["envelope"]["rcpt_to"], parseaddr(str(_read(entry)["To"]))[1], recorded["address"]):
        _names_the_recorded_recipient(address, recorded)
    original = _returned_headers(_read(entry))
    assert original is not None, "the DSN returns the original message or its headers"
    assert str(original["X-Herald-Token"]).strip() == _token(recorded)


@pytest.mark.parametrize("entry", DSNS, ids=[entry["file"] for entry in DSNS])
def test_the_status_fields_are_the_manifests(entry: dict[str, Any]) -> None:
    message = _read(entry)
    blocks = {
        str(block["Final-Recipient"]).partition(";")[2].strip().lower(): block
        for block in _recipient_blocks(message)
    }
    assert set(blocks) == {r["address"].lower() for r in entry["recipients"]}
    for expected in entry["recipients"]:
        block = blocks[expected["address"].lower()]
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
        # The Action's first word: Sendmail adds a comment ("relayed (to non-dsn-aware mailer)").
        assert str(block["Action"]).lower().split()[0] == expected["action"]
        assert str(block["Status"]).strip() == expected["status"]
        assert diagnostic == expected["diagnostic"]
        # Without a Diagnostic-Code, the reply may be quoted on the recipient's line of the text (OpenSMTPD).
        quoted = expected["text_reply"]
        assert not (quoted and diagnostic), "a text reply is recorded only for a block without Diagnostic-Code"
        if quoted:
            assert f"{expected['address']}: {quoted}".lower() in _human_text(message).lower()
        assert (_reply_code(diagnostic) if diagnostic else _reply_code(quoted)) == expected["reply_code"]
        # A reporter passes on the quoted code where it is more precise than a generic Status.
        code = expected["enhanced_code"]
        assert code == expected["status"] or code in diagnostic or code in quoted
        allowed = set(_KIND_OF_ACTION[expected["action"]])
        if expected["action"] == "delayed" and expected["status"].endswith(".4.7"):
            allowed.add("soft")  # OpenSMTPD's report that the queue lifetime ran out: the message is dropped
        assert expected["kind"] in allowed


@pytest.mark.parametrize("entry", ARFS, ids=[entry["file"] for entry in ARFS])
def test_the_arf_report_has_its_feedback_type_and_names_the_recipient(entry: dict[str, Any]) -> None:
    message = _read(entry)
    assert not message.defects, message.defects
    assert message.get_content_type() == entry["content_type"] == "multipart/report"
    assert message.get_param("report-type") == "feedback-report"
    part = next(p for p in message.walk() if p.get_content_type() == "message/feedback-report")
    payload = part.get_payload()
    fields = payload[0] if isinstance(payload, list) else HeaderParser().parsestr(str(payload))
    assert str(fields["Feedback-Type"]).strip() == entry["feedback_type"]
    for name in ("User-Agent", "Version", "Original-Mail-From", "Arrival-Date", "Source-IP", "Reported-Domain"):
        assert fields[name], f"RFC 5965 field {name}"
    recorded = entry["return_path"]
    _names_the_recorded_recipient(parseaddr(str(fields["Original-Mail-From"]))[1], recorded)
    rcpt_to = entry["envelope"]["rcpt_to"]
    if rcpt_to != MANIFEST["feedback_address"]:
        _names_the_recorded_recipient(rcpt_to, recorded)
    original = _returned_headers(message)
    assert original is not None, "the report includes the original message or its headers"
    if original["X-Herald-Token"] is not None:
        assert str(original["X-Herald-Token"]).strip() == _token(recorded)
    assert entry["expected"]["kind"] == ("complaint" if entry["feedback_type"] == "abuse" else "none")


@pytest.mark.parametrize("entry", PAYLOADS, ids=[entry["file"] for entry in PAYLOADS])
def test_the_provider_payload_carries_the_recipients_token(entry: dict[str, Any]) -> None:
    text = (CORPUS / entry["file"]).read_text()
    body = json.loads(text)
    recorded = entry["return_path"]
    if entry["origin"] == "ses":
        assert body["Type"] == "Notification" and "Signature" not in body
        text = body["Message"]
        json.loads(text)
    assert _token(recorded) in text, "the payload names its recipient by Herald's token or return path"
    expected = entry["expected"]
    assert expected["ignored"] >= 0 and {r["kind"] for r in expected["reports"]} <= {
        "hard",
        "soft",
        "policy",
        "complaint",
    }
