"""The command tables' shared parts: the filter on a service's verdict, the value readers, the packages' rows."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import TypeAlias

import grpc
import pytest
from google.rpc import error_details_pb2

from services.common.grpcutil import RpcFailure
from services.common.protojson import plain_json
from translator.commands import audience, campaign, without
from translator.commands.registry import all_commands
from translator.params import Params, legacy_bool

Violation: TypeAlias = error_details_pb2.BadRequest.FieldViolation


def failure(*violations: Violation, reason: str = "FIRST") -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "bad", reason=reason, violations=list(violations))


def test_a_verdict_loses_the_violations_of_judged_fields_and_the_fields_inside_them() -> None:
    verdict = failure(
        Violation(field="subscriber.email_address", reason="EMAIL_ADDRESS_REQUIRED"),
        Violation(field="subscriber.custom_fields.12", reason="CUSTOM_FIELD_INVALID"),
        Violation(field="subscriber.list_id_extra", reason="OTHER"),
    )
    kept = without(verdict, fields=["subscriber.email_address", "subscriber.custom_fields", "subscriber.list_id"])
    assert kept is not None
    assert [v.reason for v in kept.violations] == ["OTHER"]


def test_a_violation_without_a_reason_is_judged_by_the_errors_reason() -> None:
    verdict = failure(Violation(field="list_id", reason=""), Violation(field="ip_address", reason="IP_INVALID"))
    kept = without(verdict, reasons={"SUBSCRIBER_NOT_FOUND"})
    assert kept is verdict
    kept = without(failure(*verdict.violations, reason="SUBSCRIBER_NOT_FOUND"), reasons={"SUBSCRIBER_NOT_FOUND"})
    assert kept is not None
    assert [v.field for v in kept.violations] == ["ip_address"]


def test_an_error_without_violations_is_kept_unless_its_reason_is_left_out() -> None:
    verdict = failure(reason="LIST_NOT_FOUND")
    assert without(verdict, fields=["list_id"]) is verdict
    assert without(verdict, reasons={"LIST_NOT_FOUND"}) is None


def test_nothing_left_is_no_verdict() -> None:
    assert (
        without(failure(Violation(field="email.email_id", reason="EMAIL_ID_REQUIRED")), fields=["email"]) is None
    )
    assert without(None, fields=["email"]) is None


@pytest.mark.parametrize("value", [True, False, 1, 0, 2, "1", " yes ", "ON", "true\u00a0", "no", None, [], 1.0])
def test_a_nested_boolean_reads_like_a_parameter(value: object) -> None:
    assert legacy_bool(value) == Params({"flag": value}).bool("flag", default=False)


def test_struct_numbers_come_back_as_the_integers_they_were() -> None:
    assert plain_json({"a": [5.0, 2.5, {"b": 9007199254740992.0}], "c": "x"}) == {
        "a": [5, 2.5, {"b": 9007199254740992.0}],
        "c": "x",
    }


@pytest.mark.parametrize("package", [campaign, audience], ids=lambda p: p.__name__)
def test_a_package_serves_every_row_of_its_modules(package: ModuleType) -> None:
    modules = [
        importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)
    ]
    module_rows = [row.name for module in modules for row in getattr(module, "ROWS", [])]
    assert sorted(module_rows) == sorted(row.name for row in package.ROWS)
    assert {name.lower() for name in module_rows} <= all_commands().keys()


@pytest.mark.parametrize("package", [campaign, audience], ids=lambda p: p.__name__)
def test_a_package_exports_the_names_it_lists(package: ModuleType) -> None:
    for name in package.__all__:
        assert hasattr(package, name), name
