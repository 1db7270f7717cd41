"""What the campaign commands share of the legacy contract: the names of statuses, schedule types and
winners, the CampaignID parameter with its codes and texts, and the date format."""

from __future__ import annotations

import re
from datetime import date

from herald.campaign.v1 import campaign_pb2

from translator.commands import Param

STATUS_NAMES = {
    campaign_pb2.CAMPAIGN_STATUS_DRAFT: "Draft",
    campaign_pb2.CAMPAIGN_STATUS_READY: "Ready",
    campaign_pb2.CAMPAIGN_STATUS_SENDING: "Sending",
    campaign_pb2.CAMPAIGN_STATUS_PAUSED: "Paused",
    campaign_pb2.CAMPAIGN_STATUS_PENDING_APPROVAL: "Pending Approval",
    campaign_pb2.CAMPAIGN_STATUS_SENT: "Sent",
    campaign_pb2.CAMPAIGN_STATUS_FAILED: "Failed",
    campaign_pb2.CAMPAIGN_STATUS_CANCELLED: "Cancelled",
}
STATUS_BY_LEGACY = {name.lower(): status for status, name in STATUS_NAMES.items()}
SCHEDULE_NAMES = {
    campaign_pb2.SCHEDULE_TYPE_NOT_SCHEDULED: "Not Scheduled",
    campaign_pb2.SCHEDULE_TYPE_IMMEDIATE: "Immediate",
    campaign_pb2.SCHEDULE_TYPE_FUTURE: "Future",
    campaign_pb2.SCHEDULE_TYPE_RECURSIVE: "Recursive",
}
SCHEDULE_BY_LEGACY = {name.lower(): schedule for schedule, name in SCHEDULE_NAMES.items()}
WINNER_NAMES = {
    campaign_pb2.WINNER_HIGHEST_OPEN_RATE: "highest_open_rate",
    campaign_pb2.WINNER_MOST_UNIQUE_CLICKS: "most_unique_clicks",
}
WINNER_BY_LEGACY = {name: winner for winner, name in WINNER_NAMES.items()}
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

CAMPAIGN_ID = Param("CampaignID", "integer", "ID of the campaign", required=True)
# pause, resume, cancel, approve and update: 1 no id, 2 not found, 3 the status does not allow it.
ID_CODES = {"campaignid": 1, "CAMPAIGN_ID_REQUIRED": 1, "CAMPAIGN_NOT_FOUND": 2, "STATUS_INVALID": 3}
MISSING_ID_TEXT = "Missing required parameter (CampaignID)"
NOT_FOUND_TEXT = "Campaign not found or doesn't belong to user"


def parse_date(text: str) -> date | None:
    """A YYYY-MM-DD day that exists; None otherwise."""
    if not DATE_RE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
