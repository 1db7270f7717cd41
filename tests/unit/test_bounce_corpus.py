"""The bounce corpus stays whole: tests/bounce_corpus/ (made by tools/bounce_corpus.py, see docs/bounces.md)
holds real DSNs from real MTAs, and each says what its manifest entry says.

Every message is listed; each parses with the standard library as a multipart/report of report-type
delivery-status; it was sent to a return path that verifies with the recorded domain and secret and
names the recorded campaign and recipient (and the original it returns carries the same token); its
per-recipient Final-Recipient, Action, Status and quoted reply code are the manifest's.
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
RETURN_PATHS = ReturnPaths(MANIFEST["bounce_domain"], MANIFEST["secret"])
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
    """The headers of the original message the DSN returns (message/rfc822 or text/rfc822-headers)."""
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            return inner[0] if isinstance(inner, list) else None
        if part.get_content_type() == "text/rfc822-headers":
            return HeaderParser().parsestr(str(part.get_content()))
    return None


def _reply_code(diagnostic: str) -> int:
    match = re.match(r"\s*smtp\s*;\s*([2-5]\d\d)\b", diagnostic, re.IGNORECASE)
    return int(match.group(1)) if match else 0


def test_the_manifest_lists_every_message_and_only_existing_ones() -> None:
    on_disk = {str(path.relative_to(CORPUS)) for path in CORPUS.rglob("*.eml")}
    listed = [entry["file"] for entry in MESSAGES]
    assert len(listed) == len(set(listed)), "a file listed twice"
    assert set(listed) == on_disk


def test_the_corpus_holds_dsns_of_two_real_mtas() -> None:
    per_mta = Counter(entry["mta"] for entry in MESSAGES)
    assert per_mta["postfix"] >= 15
    assert per_mta["exim"] >= 5
    for entry in MESSAGES:
        assert entry["source"].lower().startswith(entry["mta"]), entry["source"]
        assert entry["file"].startswith(f"{entry['mta']}/")


@pytest.mark.parametrize("entry", MESSAGES, ids=[entry["file"] for entry in MESSAGES])
def test_the_message_is_a_delivery_status_report(entry: dict[str, Any]) -> None:
    message = _read(entry)
    assert not message.defects, message.defects
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == entry["report_type"] == "delivery-status"
    assert entry["envelope"]["mail_from"] == "", "a DSN is sent with the null return path"


@pytest.mark.parametrize("entry", MESSAGES, ids=[entry["file"] for entry in MESSAGES])
def test_the_return_path_verifies_and_names_the_recorded_recipient(entry: dict[str, Any]) -> None:
    recorded = entry["return_path"]
    for address in (entry["envelope"]["rcpt_to"], parseaddr(str(_read(entry)["To"]))[1], recorded["address"]):
        named = RETURN_PATHS.verify_address(address)
        assert (named.campaign_id, named.recipient_id) == (recorded["campaign_id"], recorded["recipient_id"])
    original = _returned_headers(_read(entry))
    assert original is not None, "the DSN returns the original message or its headers"
    token = recorded["address"].partition("@")[0].removeprefix("b-")
    assert str(original["X-Herald-Token"]).strip() == token


@pytest.mark.parametrize("entry", MESSAGES, ids=[entry["file"] for entry in MESSAGES])
def test_the_status_fields_are_the_manifests(entry: dict[str, Any]) -> None:
    blocks = {
        str(block["Final-Recipient"]).partition(";")[2].strip().lower(): block
        for block in _recipient_blocks(_read(entry))
    }
    assert set(blocks) == {r["address"].lower() for r in entry["recipients"]}
    for expected in entry["recipients"]:
        block = blocks[expected["address"].lower()]
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
        assert str(block["Action"]).strip().lower() == expected["action"]
        assert str(block["Status"]).strip() == expected["status"]
        assert _reply_code(diagnostic) == expected["reply_code"]
        assert diagnostic == expected["diagnostic"]
        # A reporter passes on the quoted code where it is more precise than a generic Status.
        assert expected["enhanced_code"] == expected["status"] or expected["enhanced_code"] in diagnostic
        assert expected["kind"] in _KIND_OF_ACTION[expected["action"]]
