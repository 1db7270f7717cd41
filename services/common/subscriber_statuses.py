"""What the `Subscriber:Status` personalization tag shows for each audience subscriber status (the legacy API's
names). Apart from services/common/personalization.py, which the campaign domain imports and which stays free of
generated proto types."""

from __future__ import annotations

from collections.abc import Mapping

from herald.audience.v1 import audience_pb2

SUBSCRIBER_STATUS_NAMES: Mapping[int, str] = {
    audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED: "Subscribed",
    audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED: "Unsubscribed",
    audience_pb2.SUBSCRIBER_STATUS_OPT_IN_PENDING: "Opt-In Pending",
    audience_pb2.SUBSCRIBER_STATUS_OPT_OUT_PENDING: "Opt-Out Pending",
}
