"""What the audience commands share of the legacy contract: how they read paging numbers, scalars and
RulesJSON, how they answer instants, their rate limit, and the parameters several of them declare."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

from translator.commands import Args, Param, instant
from translator.params import INT32_MAX, ParamError

# An enum value no client can mean: the service answers it as "not a valid value" (the proto
# enums are open), so one call reports it together with every other problem.
UNKNOWN_ENUM: Any = 99
# (requests, seconds) per caller of the subscriber commands.
RATE_LIMIT = (100, 60.0)


def field_instant(message: Any, field_name: str) -> str:
    """A Timestamp field with presence as a legacy instant; "" when unset."""
    return instant(getattr(message, field_name), is_set=message.HasField(field_name))


def lenient_int(args: Args, name: str, default: int, *, low: int = 0, high: int = INT32_MAX) -> int:
    """A paging number read as the legacy server did (PHP intval): anything unusable is the default."""
    try:
        value = args.params.int(name)
    except ParamError:
        return default
    if value is None or value < low:
        return default
    return min(value, high)


def scalar_text(value: object) -> str | None:
    """A JSON scalar as text (true → "1"), None for objects, arrays and non-finite numbers."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return None


def field_value_text(value: object) -> str | None:
    """A custom field value as the audience service takes it: a scalar as text (scalar_text), an array of
    scalars (a form's checkboxes, `CustomField7[]=a&CustomField7[]=b`) as its items joined by commas;
    None for anything else (an object, a nested array)."""
    if isinstance(value, list):
        items = [scalar_text(item) for item in value if item is not None]
        return None if any(item is None for item in items) else ",".join(item or "" for item in items)
    return scalar_text(value)


def rules_list(args: Args, name: str) -> struct_pb2.ListValue | None:
    """RulesJSON: a JSON string (even inside a JSON body) holding an array; None when absent or ""."""
    try:
        value = args.params.json_str(name)
    except ParamError as exc:
        args.problems.append(
            ParamError(name, "malformed", f"{name} must be a JSON string holding the rules: {exc}")
        )
        return None
    if value is None:
        return None
    if not isinstance(value, list):
        args.problems.append(ParamError(name, "malformed", f"{name} must hold an array of rule groups"))
        return None
    rules = struct_pb2.ListValue()
    rules.extend(value)
    return rules


# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

LIST_ID = Param("ListID", "integer", "ID of the list", required=True)
SUBSCRIBER_LIST_ID = Param("SubscriberListID", "integer", "ID of the list", required=True)
ORDER_TYPE = Param("OrderType", "string", "Sort direction", enum=("ASC", "DESC"))
RULES_JSON = Param(
    "RulesJSON", "json", "Rules as a JSON string: an array of groups of {type, operator, value} rules"
)
RULES_OPERATOR = Param("RulesOperator", "string", "How RulesJSON's groups combine", enum=("and", "or"))
