"""The events the campaign service publishes, as the domain builds them (the outbox writes them)."""

from __future__ import annotations

import uuid


def new_event_id(event: str) -> str:
    """A Nats-Msg-Id for one occurrence of an event."""
    return f"{event}:{uuid.uuid4()}"
