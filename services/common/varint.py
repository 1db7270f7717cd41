"""LEB128 unsigned varints, the id encoding inside Herald's signed tokens (tracking links, return paths)."""

from __future__ import annotations

# Nine 7-bit groups hold any id below 2**63; a longer number is no id of ours.
MAX_BYTES = 9


class MalformedVarint(ValueError):
    """The bytes hold no canonical varint of at most MAX_BYTES bytes at the offset."""


def encode(value: int) -> bytes:
    """`value` (not negative) in 7-bit groups, least significant first, the high bit marking that more follow."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def decode(data: bytes, offset: int) -> tuple[int, int]:
    """The number at `offset` and the offset after it, or MalformedVarint."""
    value = shift = 0
    for index in range(offset, min(offset + MAX_BYTES, len(data))):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            # A trailing zero byte would give one number two encodings.
            if byte == 0 and index > offset:
                raise MalformedVarint("non-canonical number")
            return value, index + 1
        shift += 7
    raise MalformedVarint("truncated or overlong number")
