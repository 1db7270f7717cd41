"""Unit tests for services.status_details (`herald grpc-status`)."""

from __future__ import annotations

import base64
import json

import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from services.status_details import explain

INFO = error_details_pb2.ErrorInfo(reason="TAG_NAME_REQUIRED", domain="herald.tag.v1")
BAD = error_details_pb2.BadRequest(
    field_violations=[
        error_details_pb2.BadRequest.FieldViolation(
            field="name", description="required", reason="TAG_NAME_REQUIRED"
        )
    ]
)


def unpadded(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def test_buf_curls_error_output_is_decoded_detail_by_detail() -> None:
    text = json.dumps(
        {
            "code": "invalid_argument",
            "message": "name is required",
            "details": [
                {"type": "google.rpc.ErrorInfo", "value": unpadded(INFO.SerializeToString())},
                {"type": "google.rpc.BadRequest", "value": unpadded(BAD.SerializeToString())},
            ],
        }
    )
    assert explain(text) == {
        "code": "invalid_argument",
        "message": "name is required",
        "details": [
            {"type": "google.rpc.ErrorInfo", "reason": "TAG_NAME_REQUIRED", "domain": "herald.tag.v1"},
            {
                "type": "google.rpc.BadRequest",
                "field_violations": [{"field": "name", "description": "required", "reason": "TAG_NAME_REQUIRED"}],
            },
        ],
    }


def test_a_status_trailer_and_a_single_detail_are_decoded() -> None:
    details = [any_pb2.Any(), any_pb2.Any()]
    details[0].Pack(INFO)
    details[1].Pack(BAD)
    status = status_pb2.Status(code=3, message="name is required", details=details)
    decoded = explain(base64.b64encode(status.SerializeToString()).decode())
    assert decoded["code"] == "INVALID_ARGUMENT" and decoded["message"] == "name is required"
    assert [item["type"] for item in decoded["details"]] == ["google.rpc.ErrorInfo", "google.rpc.BadRequest"]
    assert explain(unpadded(INFO.SerializeToString()), "google.rpc.ErrorInfo")["reason"] == "TAG_NAME_REQUIRED"


@pytest.mark.parametrize(
    ("text", "type_name", "problem"),
    [
        ("", "", "nothing to decode"),
        ("!!", "", "not base64"),
        ("{not json", "", "not buf curl's error JSON"),
        (unpadded(INFO.SerializeToString()), "", "code OK"),
        (unpadded(INFO.SerializeToString()), "google.rpc.NoSuchThing", "unknown detail type"),
    ],
)
def test_what_cannot_be_decoded_says_why(text: str, type_name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        explain(text, type_name)
