"""tests/bounce_corpus/manifest.json, shared by the tools that write parts of the corpus: tools/bounce_corpus.py
(the DSNs of real MTAs) and tools/bounce_corpus_built.py (ARF reports and provider payloads built here from
their documented fields). Each tool replaces its own entries and keeps the others'."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common.return_path import ReturnPaths
from tools.bounce_scenarios import BOUNCE_DOMAIN, SECRET

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "bounce_corpus"
MANIFEST = CORPUS / "manifest.json"
# Where feedback loops send ARF reports in the corpus (HERALD_BOUNCE_FEEDBACK_ADDRESS).
FEEDBACK_ADDRESS = f"fbl@{BOUNCE_DOMAIN}"

# The built part's campaigns (one per source), the sources as the manifest names them, and when the
# campaign message went out (reports follow minutes later).
BUILT_CAMPAIGN_IDS = {"arf": 3201, "ses": 3202, "sendgrid": 3203, "postmark": 3204}
BUILT_SOURCES = {
    "arf": "ARF abuse report (RFC 5965), built here from the RFC's fields",
    "ses": "Amazon SES notification delivered by SNS, built here from AWS's documented fields",
    "sendgrid": "SendGrid Event Webhook events, built here from SendGrid's documented fields",
    "postmark": "Postmark bounce or spam-complaint webhook record, built here from Postmark's documented fields",
}
SENT = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)

KINDS = {
    "hard": "the address does not exist or cannot receive mail: suppress it",
    "soft": "temporary, or a full mailbox: Soft until a later delivery",
    "policy": "the sender's or the message's problem (5.7.x, blocklists, size): never suppress",
    "complaint": "the recipient reported the message as spam: unsubscribe and suppress",
    "delayed": "a delay warning (Action: delayed): the MTA still tries, nothing to record",
    "none": "nothing to record: a success notice, a feedback report that is no complaint, a provider event "
    "that says nothing new about the address",
}


def load() -> dict[str, Any]:
    """The manifest as it is, or an empty one with the fixed fields."""
    manifest: dict[str, Any] = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    return {
        "generated_by": "tools/bounce_corpus.py (DSNs of real MTAs), tools/bounce_corpus_built.py (ARF reports "
        "and provider payloads built from their documented fields)",
        "bounce_domain": BOUNCE_DOMAIN,
        "secret": SECRET,
        "feedback_address": FEEDBACK_ADDRESS,
        "kinds": KINDS,
        "messages": manifest.get("messages", []),
        "provider_payloads": manifest.get("provider_payloads", []),
    }


def save(manifest: dict[str, Any]) -> None:
    manifest["messages"] = sorted(manifest["messages"], key=lambda m: m["file"])
    manifest["provider_payloads"] = sorted(manifest["provider_payloads"], key=lambda m: m["file"])
    MANIFEST.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def return_path_entry(origin: str, recipient_id: int, address: str) -> dict[str, Any]:
    """A built item's `return_path`: the signed address of its campaign and recipient, and the address it stands for."""
    campaign = BUILT_CAMPAIGN_IDS[origin]
    return {
        "address": ReturnPaths(BOUNCE_DOMAIN, SECRET).address(campaign, recipient_id),
        "campaign_id": campaign,
        "recipient_id": recipient_id,
        "recipient": address,
    }
