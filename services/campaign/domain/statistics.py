"""Campaign statistics: the throughput of RULINGS 11, and how many campaigns one listing sums."""

from __future__ import annotations

from datetime import datetime

# CAMPAIGN_VIEW_FULL sums statistics over at most this many of a listing's matches (the first in its order),
# so that one listing never asks delivery about an unbounded number of campaigns.
MAX_TOTAL_STATISTICS_CAMPAIGNS = 10_000


def throughput(total_sent: int, first_send: datetime | None, last_send: datetime | None) -> tuple[float, int]:
    """RULINGS 11: emails per second between the first and the last send, and those seconds rounded."""
    if first_send is None or last_send is None:
        return 0.0, 0
    seconds = (last_send - first_send).total_seconds()
    if seconds <= 0:
        return 0.0, 0
    return total_sent / seconds, round(seconds)
