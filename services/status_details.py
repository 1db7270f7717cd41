"""`herald grpc-status`: a gRPC error's google.rpc.Status, its ErrorInfo and BadRequest included, as JSON.

buf curl prints an error's details base64-encoded (`{"type": "google.rpc.ErrorInfo", "value":
"ChFU..."}`), and the `grpc-status-details-bin` trailer other tools show is a base64 Status; this
decodes either, so the reason and the field violations can be read.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

# The pool the google.rpc detail types (ErrorInfo, BadRequest, ...) are registered in once imported.
_POOL: descriptor_pool.DescriptorPool = error_details_pb2.DESCRIPTOR.pool
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def from_base64(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (buf curl leaves the padding off)."""
    cleaned = "".join(text.split())
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from exc


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def detail(type_name: str, value: bytes) -> dict[str, Any]:
    """One detail, decoded by its type name (google.rpc.ErrorInfo, google.rpc.BadRequest, ...)."""
    name = type_name.rsplit("/", 1)[-1]
    try:
        descriptor = _POOL.FindMessageTypeByName(name)
    except KeyError as exc:
        raise ValueError(f"unknown detail type {name!r}") from exc
    message = message_factory.GetMessageClass(descriptor)()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise ValueError(f"not a {name}: {exc}") from exc
    return {"type": name, **_as_dict(message)}


def status(value: bytes) -> dict[str, Any]:
    """A whole google.rpc.Status (the grpc-status-details-bin trailer), every detail decoded."""
    decoded = status_pb2.Status()
    try:
        decoded.ParseFromString(value)
    except DecodeError as exc:
        raise ValueError(f"not a google.rpc.Status: {exc}") from exc
    if decoded.code == 0:
        # An error's status is never OK: these bytes are something else, most likely one detail.
        raise ValueError("not a google.rpc.Status (code OK); for one detail, give its type with --type")
    return {
        "code": _CODE_NAMES.get(decoded.code, str(decoded.code)),
        "message": decoded.message,
        "details": [detail(item.type_url, item.value) for item in decoded.details],
    }


def explain(text: str, type_name: str = "") -> dict[str, Any]:
    """buf curl's error JSON, a base64 detail of the given type, or a base64 Status, decoded."""
    text = text.strip()
    if not text:
        raise ValueError("nothing to decode: pass buf curl's error output or a base64 value")
    if text.startswith("{"):
        try:
            error = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not buf curl's error JSON: {exc}") from exc
        if not isinstance(error, dict) or not isinstance(error.get("details", []), list):
            raise ValueError("not buf curl's error JSON: expected an object with code, message and details")
        return {
            "code": error.get("code", ""),
            "message": error.get("message", ""),
            "details": [
                detail(str(item.get("type", "")), from_base64(str(item.get("value", ""))))
                for item in error.get("details", [])
                if isinstance(item, dict)
            ],
        }
    value = from_base64(text)
    return detail(type_name, value) if type_name else status(value)
