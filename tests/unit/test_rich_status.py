"""services.common.grpcutil's error statuses are grpcio-status's: rich_status makes one, decode_error reads one."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.errors import DomainError, ErrorKind, FieldViolation
from services.common.grpcutil import decode_error, rich_status

ERROR = DomainError(
    ErrorKind.INVALID,
    "TAG_NAME_REQUIRED",
    "name is required ✓",
    [
        FieldViolation("name", "TAG_NAME_REQUIRED", "name is required"),
        FieldViolation("tag_id", "TAG_ID_INVALID", ""),
    ],
    {"tag_id": "0"},
)


def _raised(status: grpc.Status) -> grpc.aio.AioRpcError:
    """The error a client of a server that aborted with `status` catches."""
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), status.details
    )


def test_a_domain_error_becomes_a_status_grpcio_status_reads_back() -> None:
    status = rich_status(ERROR, "herald.tag.v1")
    assert (status.code, status.details) == (grpc.StatusCode.INVALID_ARGUMENT, "name is required ✓")
    decoded = rpc_status.from_call(_raised(status))
    assert decoded is not None and decoded.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_details_pb2.ErrorInfo()
    assert decoded.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "TAG_NAME_REQUIRED",
        "herald.tag.v1",
        {"tag_id": "0"},
    )


def test_decode_error_reads_the_reason_and_every_field_violation() -> None:
    failure = decode_error(_raised(rich_status(ERROR, "herald.tag.v1")))
    assert (failure.code, failure.message, failure.reason, failure.domain) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "name is required ✓",
        "TAG_NAME_REQUIRED",
        "herald.tag.v1",
    )
    assert failure.field_reasons() == [("name", "TAG_NAME_REQUIRED"), ("tag_id", "TAG_ID_INVALID")]


def test_unauthenticated_is_its_own_code() -> None:
    status = rich_status(DomainError(ErrorKind.PERMISSION, "UNAUTHENTICATED", "missing token"), "herald.tag.v1")
    assert status.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_status_without_details_is_its_code_and_message() -> None:
    failure = decode_error(
        grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")
    )
    assert (failure.code, failure.message, failure.reason, failure.violations) == (
        grpc.StatusCode.UNAVAILABLE,
        "down",
        "",
        [],
    )
    assert failure.field_reasons() == [("", "")]


def test_details_that_contradict_the_calls_status_are_not_believed() -> None:
    # Another hop answered with its own status but passed our trailer on: its reason is not the answer.
    trailer = rich_status(ERROR, "herald.tag.v1").trailing_metadata
    raised = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(*trailer), "upstream reset"
    )
    failure = decode_error(raised)
    assert (failure.code, failure.reason, failure.violations) == (grpc.StatusCode.UNAVAILABLE, "", [])
