"""What bounces, complaints and deliveries do to subscribers and the owner's suppression list (docs/bounces.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.audience.domain._checks import email_key


class BounceKind(enum.Enum):
    """The classifier's verdict on a report (delivery classifies; audience acts on it)."""

    HARD = "hard"
    SOFT = "soft"
    POLICY = "policy"
    COMPLAINT = "complaint"


# Why an address is suppressed. Only SUPPRESSION_BOUNCE entries are removed automatically (by a delivery
# to the address); the user's own entries and complaints stay until the user removes them.
SUPPRESSION_MANUAL = "manual"
SUPPRESSION_BOUNCE = "bounce"
SUPPRESSION_COMPLAINT = "complaint"
SUPPRESSION_REASONS = (SUPPRESSION_MANUAL, SUPPRESSION_BOUNCE, SUPPRESSION_COMPLAINT)

# The unsubscription channel recorded when a spam complaint unsubscribes a subscriber.
COMPLAINT_CHANNEL = "complaint"


@dataclass(frozen=True)
class BounceTarget:
    """The subscribers a report is about: the one with the address on `list_id`, or, with no list, every
    subscriber of the owner with the address. The suppression list is the owner's, by address, either way."""

    owner_user_id: int
    email_key: str
    list_id: int = 0

    @classmethod
    def of(cls, owner_user_id: int, email_address: str, list_id: int = 0) -> BounceTarget:
        return cls(owner_user_id=owner_user_id, email_key=email_key(email_address), list_id=max(list_id, 0))


def soft_bounce_limit(configured: int) -> int:
    """Soft bounces on this many campaigns make a subscriber Hard; at least one (HERALD_SOFT_BOUNCE_LIMIT)."""
    return max(1, configured)
