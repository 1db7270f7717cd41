"""JSON values held in google.protobuf Struct and ListValue fields, given back as their senders wrote them."""

from __future__ import annotations

from typing import Any

# Doubles hold every integer up to this exactly; a larger one stays a float rather than gain made-up digits.
_EXACT_INTEGERS = 2**53


def plain_json(value: Any) -> Any:
    """A Struct's or ListValue's value (from json_format.MessageToDict) as JSON again: Struct stores every
    number as a double, so 5.0 becomes 5."""
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_json(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return int(value)
    return value
