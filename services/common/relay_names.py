"""What may name an SMTP relay: the delivery workers' SMTP_URL names its relays, a campaign names the one it goes through."""

from __future__ import annotations

import re

# Letters, digits and . _ - : [ ], at most 100: a relay's default name, host:port ([::1]:25 too), is one.
RELAY_NAME = re.compile(r"[A-Za-z0-9._:\[\]-]{1,100}")


def relay_name_problem(name: str) -> str | None:
    """Why `name` cannot name a relay, or None when it can."""
    if not RELAY_NAME.fullmatch(name):
        return "a relay name is 1 to 100 letters, digits and . _ - : [ ]"
    return None
