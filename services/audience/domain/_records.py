"""The audience records: lists, subscribers and segments as stored, and the checked values that create them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.audience import rules as segment_rules


@dataclass(frozen=True)
class MailingList:
    list_id: int
    owner_user_id: int
    name: str
    description: str
    opt_in_mode: str
    sender_name: str
    sender_email_address: str
    sender_company: str
    sender_address: str
    confirmation_email_id: int
    created_at: datetime
    archived_at: datetime | None = None
    subscriber_count: int = 0
    active_subscriber_count: int = 0
    segment_count: int = 0
    last_activity_at: datetime | None = None


@dataclass(frozen=True)
class NewList:
    name: str
    description: str = ""
    opt_in_mode: str = "Single"
    sender_name: str = ""
    sender_email_address: str = ""
    sender_company: str = ""
    sender_address: str = ""


@dataclass(frozen=True)
class SubscriberRecord:
    subscriber_id: int
    list_id: int
    owner_user_id: int
    email_address: str
    first_name: str
    last_name: str
    custom_fields: Mapping[str, str]
    status: str
    bounce_type: str
    subscription_date: datetime | None
    subscription_ip: str
    unsubscription_date: datetime | None
    unsubscription_ip: str
    optin_date: datetime | None
    source: str
    source_ref: str
    suppressed: bool = False
    segments: tuple[tuple[int, str], ...] = ()
    # 'complaint' when a spam complaint unsubscribed the subscriber; '' otherwise.
    unsubscription_channel: str = ""
    # Why the address is suppressed ('manual', 'bounce', 'complaint'); '' when it is not.
    suppression_reason: str = ""


@dataclass(frozen=True)
class NewSubscriber:
    """A checked subscriber to add to a list."""

    list_id: int
    email_address: str
    email_key: str
    first_name: str = ""
    last_name: str = ""
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    status: str = "Subscribed"
    bounce_type: str = "Not Bounced"
    subscription_date: datetime | None = None
    subscription_ip: str = ""
    unsubscription_date: datetime | None = None
    unsubscription_ip: str = ""
    optin_date: datetime | None = None
    source: str = "API"
    source_ref: str = ""


@dataclass(frozen=True)
class SegmentRecord:
    segment_id: int
    list_id: int
    owner_user_id: int
    name: str
    operator: str
    rules: list[Any]
    randomness: bool
    randomness_audience_size: int
    created_at: datetime
    subscriber_count: int = 0

    def definition(self) -> segment_rules.SegmentDefinition:
        """Stored rules were checked when the segment was made; parsing them again cannot fail then."""
        return segment_rules.SegmentDefinition(
            segment_id=self.segment_id,
            list_id=self.list_id,
            operator=self.operator,
            criteria=segment_rules.parse_criteria(self.rules),
            randomness=self.randomness,
            audience_size=self.randomness_audience_size,
        )


@dataclass(frozen=True)
class NewSegment:
    list_id: int
    name: str
    operator: str
    rules: list[Any]
    criteria: segment_rules.Criteria
    randomness: bool
    randomness_audience_size: int
