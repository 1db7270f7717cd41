"""SQL of the audience service: one function per statement over the `audience` schema; `owner=None` means an admin (no owner filter).

One private module per part (_tables, _lists, _subscribers, _suppressions, _bounces, _segments, _recipients);
callers import from here (`store.lists_page`, `store.subscribers`), whatever module holds a name.
tests/unit/test_audience_modules.py guards the names.
"""

from __future__ import annotations

from services.audience.store._bounces import (
    complained_count,
    delivered_count,
    hard_bounced_count,
    hard_bounced_counts,
    soft_bounced_types,
)
from services.audience.store._fields import (
    FIELD_ORDER,
    alias_in_use,
    clashing_field_ids,
    custom_field_by_id,
    custom_fields_page,
    deleted_custom_field_ids,
    fields_of_lists,
    inserted_custom_field,
    lock_owner_fields,
    lock_unique_values,
    updated_custom_field,
)
from services.audience.store._lists import (
    LIST_ORDER,
    deleted_list_count,
    inserted_list,
    list_by_id,
    list_with_confirmation_email,
    lists_by_id,
    lists_page,
)
from services.audience.store._opt_in import (
    claimed_confirmation_time,
    confirmed_subscriber_id,
    rejected_count,
)
from services.audience.store._recipients import (
    RecipientQuery,
    RecipientRow,
    custom_fields_of,
    recipient_count,
    recipient_rows,
)
from services.audience.store._segments import (
    deleted_segment_count,
    inserted_segment,
    member_count,
    segments_of_lists,
)
from services.audience.store._subscribers import (
    deleted_subscriber_count,
    existing_subscriber,
    inserted_subscriber_id,
    segments_containing,
    selected_statuses,
    subscriber_by,
    subscribers_page,
    unsubscribable_count,
    unsubscribed_subscribers,
    unsuppressed_count,
    updated_subscriber_id,
)
from services.audience.store._suppressions import (
    added_bounce_suppression_counts,
    added_suppression_count,
    removed_bounce_suppression_count,
)
from services.audience.store._tables import (
    SCHEMA,
    custom_fields,
    is_suppressed,
    lists,
    metadata,
    owned_by,
    segments,
    subscribers,
    suppression_reason,
    suppressions,
)

__all__ = [
    "FIELD_ORDER",
    "LIST_ORDER",
    "SCHEMA",
    "RecipientQuery",
    "RecipientRow",
    "added_bounce_suppression_counts",
    "added_suppression_count",
    "alias_in_use",
    "claimed_confirmation_time",
    "clashing_field_ids",
    "complained_count",
    "confirmed_subscriber_id",
    "custom_field_by_id",
    "custom_fields",
    "custom_fields_of",
    "custom_fields_page",
    "deleted_custom_field_ids",
    "deleted_list_count",
    "deleted_segment_count",
    "deleted_subscriber_count",
    "delivered_count",
    "existing_subscriber",
    "fields_of_lists",
    "hard_bounced_count",
    "hard_bounced_counts",
    "inserted_custom_field",
    "inserted_list",
    "inserted_segment",
    "inserted_subscriber_id",
    "is_suppressed",
    "list_by_id",
    "list_with_confirmation_email",
    "lists",
    "lists_by_id",
    "lists_page",
    "lock_owner_fields",
    "lock_unique_values",
    "member_count",
    "metadata",
    "owned_by",
    "recipient_count",
    "recipient_rows",
    "rejected_count",
    "removed_bounce_suppression_count",
    "segments",
    "segments_containing",
    "segments_of_lists",
    "selected_statuses",
    "soft_bounced_types",
    "subscriber_by",
    "subscribers",
    "subscribers_page",
    "suppression_reason",
    "suppressions",
    "unsubscribable_count",
    "unsubscribed_subscribers",
    "unsuppressed_count",
    "updated_custom_field",
    "updated_subscriber_id",
]
