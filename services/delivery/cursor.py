"""StreamDeliveryEvents' cursor: where in the events stream a client stopped, as an opaque string.

A cursor names one event: the JetStream stream sequence of the DeliveryEvents message that carried it and
its index in that message. Resuming after it starts the consumer at that message and skips the events up to
and including the index, so a client that reconnects with its last cursor misses nothing and sees nothing
twice. On the wire it is `v1.<sequence>.<index>` in unpadded base64url: opaque to clients, which must pass
it back as they got it; a later format gets a new version prefix.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from services.common.errors import invalid

CURSOR_INVALID = "CURSOR_INVALID"

_FORMAT = re.compile(r"v1\.([1-9][0-9]{0,19})\.(0|[1-9][0-9]{0,5})")
# JetStream sequences are unsigned 64-bit.
_MAX_SEQUENCE = 2**64 - 1


@dataclass(frozen=True, order=True)
class Cursor:
    """The event at `index` of the message at stream `sequence`."""

    sequence: int
    index: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"v1.{self.sequence}.{self.index}".encode()).decode().rstrip("=")

    def covers(self, sequence: int, index: int) -> bool:
        """Whether the event at (sequence, index) is this one or came before it: a resumed stream skips it."""
        return (sequence, index) <= (self.sequence, self.index)


def decode(text: str) -> Cursor:
    """The cursor `text` names; INVALID_ARGUMENT (CURSOR_INVALID) for anything a StreamDeliveryEvents response
    did not give out."""
    problem = "cursor is not one StreamDeliveryEvents gave out"
    if len(text) > 64 or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise invalid(CURSOR_INVALID, problem, "cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, ValueError) as exc:
        raise invalid(CURSOR_INVALID, problem, "cursor") from exc
    match = _FORMAT.fullmatch(raw)
    if match is None or int(match.group(1)) > _MAX_SEQUENCE:
        raise invalid(CURSOR_INVALID, problem, "cursor")
    cursor = Cursor(int(match.group(1)), int(match.group(2)))
    if cursor.encode() != text:  # one spelling per cursor (no stray padding bits)
        raise invalid(CURSOR_INVALID, problem, "cursor")
    return cursor
