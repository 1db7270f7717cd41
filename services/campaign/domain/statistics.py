"""Campaign statistics: the throughput (emails per second and duration), and how many campaigns one listing sums."""

from __future__ import annotations

from datetime import datetime

# CAMPAIGN_VIEW_FULL sums statistics over at most this many of a listing's matches (the first in its order),
# so that one listing never asks delivery about an unbounded number of campaigns.
MAX_TOTAL_STATISTICS_CAMPAIGNS = 10_000
# The shortest span a throughput is measured over (CampaignStatistics.emails_per_second).
_MIN_THROUGHPUT_SECONDS = 1.0


def throughput(total_sent: int, first_send: datetime | None, last_send: datetime | None) -> tuple[float, int]:
    """The legacy CampaignThroughput: emails per second between the first and the last send, and those seconds
    rounded. A span under one second counts as one second, so that a send of a few messages within
    milliseconds gives a rate of that many per second, not thousands; one message, or none, spans nothing."""
    if first_send is None or last_send is None or total_sent <= 0:
        return 0.0, 0
    seconds = max((last_send - first_send).total_seconds(), 0.0)
    return total_sent / max(seconds, _MIN_THROUGHPUT_SECONDS), round(seconds)
