"""A campaign message template for the unit tests that render mail: campaign 7 "News" of https://herald.test, its
tracking links and its return paths at bounces.herald.test, all under one test secret; the content is the test's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common.return_path import ReturnPaths
from services.common.tracking import TrackingLinks
from services.delivery.message import MessageTemplate

SECRET = "unit-test-secret"
PUBLIC_URL = "https://herald.test"
BOUNCES = ReturnPaths("bounces.herald.test", SECRET)


def message_template(
    content: Mapping[str, Any], *, unsubscribe_mailto: str = "", relay_provider: str = "none"
) -> MessageTemplate:
    """The template of `content` (an email snapshot) in campaign 7."""
    return MessageTemplate(
        content,
        campaign_id=7,
        campaign_name="News",
        links=TrackingLinks(PUBLIC_URL, SECRET),
        return_paths=BOUNCES,
        public_url=PUBLIC_URL,
        unsubscribe_mailto=unsubscribe_mailto,
        relay_provider=relay_provider,
    )
