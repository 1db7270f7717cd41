"""Rows for the campaign commands: create, get, update, copy, pause, resume, cancel, approve, delete, list, split tests.

One module per command family; the names other code uses are re-exported here.
"""

from __future__ import annotations

from translator.commands.campaign import get, lifecycle, listing, split_test, update
from translator.commands.campaign.legacy import (
    SCHEDULE_BY_LEGACY,
    SCHEDULE_NAMES,
    STATUS_BY_LEGACY,
    STATUS_NAMES,
    WINNER_BY_LEGACY,
    WINNER_NAMES,
)
from translator.commands.campaign.render import Extras, render_campaign, statistics_view_of, view_of

__all__ = [
    "ROWS",
    "SCHEDULE_BY_LEGACY",
    "SCHEDULE_NAMES",
    "STATUS_BY_LEGACY",
    "STATUS_NAMES",
    "WINNER_BY_LEGACY",
    "WINNER_NAMES",
    "Extras",
    "render_campaign",
    "statistics_view_of",
    "view_of",
]

ROWS = [*lifecycle.ROWS, *get.ROWS, *update.ROWS, *split_test.ROWS, *listing.ROWS]
