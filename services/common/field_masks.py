"""The update masks of every Update RPC (UpdateCampaign, UpdateEmail, UpdateTemplate, UpdateCustomField), read by
one rule, AIP-134's:

- a mask with paths changes exactly those fields; each path may be written in snake_case, as in the .proto
  (`email_id`), or in lowerCamelCase, as the proto3 JSON mapping and most client libraries write field masks
  (`emailId`): both name the same field;
- an omitted mask (no paths) changes every updatable field the request's resource populates: a scalar or enum
  with a value other than its default (0, "", false, UNSPECIFIED), a non-empty repeated or map field, a message
  field that is set. A field cannot be cleared this way: name it in the mask to set it to its default.

Each RPC keeps its own table of the paths it accepts and refuses any other with INVALID_ARGUMENT
UPDATE_MASK_INVALID, naming the path to use where a client may have meant another one (`misnamed`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # domain modules use this one without importing protobuf
    from google.protobuf.field_mask_pb2 import FieldMask
    from google.protobuf.message import Message

_UPPER = re.compile(r"[A-Z]")


def snake_case(path: str) -> str:
    """A mask path in the .proto's spelling: `scheduleType.futureTime` -> `schedule_type.future_time`."""
    return ".".join(_UPPER.sub(lambda m: "_" + m[0].lower(), part) for part in path.split("."))


def update_paths(mask: FieldMask, resource: Message, updatable: Collection[str]) -> tuple[str, ...]:
    """The paths an update changes: the mask's in snake_case, each once, in the order given; or, for an omitted
    mask, the updatable top-level fields that `resource` populates, in field-number order."""
    if mask.paths:
        return tuple(dict.fromkeys(snake_case(path) for path in mask.paths))
    return tuple(field.name for field, _ in resource.ListFields() if field.name in updatable)


def misnamed(path: str, updatable: Collection[str], renames: Mapping[str, str] = {}) -> str:
    """Why `path` is refused, naming the path to use when there is one: `renames` maps a path clients may write
    (an output-only mirror of an updatable field) to the one that changes it, and a sub-field path of a field
    that is updated whole names that field."""
    if path in renames:
        return f"{path!r} cannot be updated: name {renames[path]!r} instead"
    head = path.split(".", 1)[0]
    if head != path and head in updatable:
        return f"{path!r} names part of a field: name the whole field {head!r}"
    return f"{path!r} is not a field an update may change"


def unknown_paths_message(
    paths: Sequence[str], updatable: Collection[str], renames: Mapping[str, str] = {}
) -> str:
    """One message for every refused path of a mask."""
    return "update_mask: " + "; ".join(misnamed(path, updatable, renames) for path in paths)
