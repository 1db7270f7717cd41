"""Rows for the audience commands: lists, subscribers (subscriber.subscribe and subscriber.unsubscribe on their
own), custom fields and segments.

One module per command family; the names other code uses are re-exported here.
"""

from __future__ import annotations

from translator.commands.audience import fields, lists, segments, subscribe, subscribers, unsubscribe
from translator.commands.audience.legacy import RATE_LIMIT
from translator.commands.audience.subscribers import BOUNCE_NAMES, STATUS_NAMES

__all__ = ["BOUNCE_NAMES", "RATE_LIMIT", "ROWS", "STATUS_NAMES"]

ROWS = [*lists.ROWS, *subscribers.ROWS, *subscribe.ROWS, *unsubscribe.ROWS, *fields.ROWS, *segments.ROWS]
