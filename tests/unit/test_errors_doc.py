"""docs/errors.md, the ErrorInfo reasons per RPC, is current and is what the code raises (tools/errors_doc.py)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from services.common.permissions import RPC_PERMISSIONS
from tools import errors_doc

CAMPAIGN = "/herald.campaign.v1.CampaignService/"


@pytest.fixture(scope="module")
def program() -> errors_doc.Program:
    return errors_doc.Program()


@pytest.fixture(scope="module")
def by_rpc(program: errors_doc.Program) -> dict[str, dict[str, set[str]]]:
    return program.reasons_by_rpc()


def test_the_error_table_in_the_docs_is_current(program: errors_doc.Program) -> None:
    current = errors_doc.DOC.read_text()
    assert errors_doc.with_table(current, program) == current, "run .venv/bin/python tools/errors_doc.py"


def test_every_rpc_of_the_permission_table_is_analysed(program: errors_doc.Program) -> None:
    assert set(program.rpc_methods) == set(RPC_PERMISSIONS)


def test_every_reason_the_audience_service_declares_is_answered_by_some_rpc(
    program: errors_doc.Program, by_rpc: dict[str, dict[str, set[str]]]
) -> None:
    # services/audience/domain/_reasons.py is the audience service's own list of its reasons.
    declared = program.modules["services.audience.domain._reasons"].constants.values()
    answered = {reason for reasons in by_rpc.values() for reason in reasons}
    assert set(declared) - answered == set()


def test_every_reason_raised_in_services_is_answered_by_some_rpc(
    program: errors_doc.Program, by_rpc: dict[str, dict[str, set[str]]]
) -> None:
    # A reason raised where no RPC reaches is dead code or a gap of the analysis: either way, look.
    raised = set(program.sites_by_reason()) - program.interceptor_reasons()
    answered = {reason for reasons in by_rpc.values() for reason in reasons}
    assert raised - answered == set()


def test_known_rpcs_list_their_reasons_with_their_codes(by_rpc: dict[str, dict[str, set[str]]]) -> None:
    assert by_rpc["/herald.tag.v1.TagService/GetTag"] == {
        "TAG_ID_REQUIRED": {"INVALID"},
        "TAG_NOT_FOUND": {"NOT_FOUND"},
    }
    update = by_rpc[CAMPAIGN + "UpdateCampaign"]
    # Raised by the audience service's CheckTargeting, which UpdateCampaign calls and passes through.
    assert "SEGMENT_NOT_FOUND" in update and "RULES_INVALID" in update
    # update_failure answers FAILED_PRECONDITION when only the state is wrong (STATE_REASONS).
    assert "PRECONDITION" in update["CAMPAIGN_NOT_EDITABLE"]
    preview = by_rpc["/herald.campaign.v1.EmailService/SendEmailPreview"]
    assert "PRECONDITION" in preview["FROM_EMAIL_REQUIRED"]
    assert "TEMPLATE_NOT_FOUND" not in by_rpc[CAMPAIGN + "CreateCampaign"]


def test_the_analysis_follows_helpers_constants_and_neighbour_rpcs(tmp_path: Path) -> None:
    services = tmp_path / "services"
    (services / "common").mkdir(parents=True)
    shutil.copy(errors_doc.SERVICES / "common" / "errors.py", services / "common" / "errors.py")
    (services / "thing").mkdir()
    (services / "thing" / "domain.py").write_text(
        textwrap.dedent(
            """
            from services.common.errors import Violations, invalid

            THING_ID_REQUIRED = "THING_ID_REQUIRED"
            _REASONS = {"name": "THING_NAME_INVALID"}

            def check(thing_id, name):
                if not thing_id:
                    raise invalid(THING_ID_REQUIRED, "thing_id is required", "thing_id")
                violations = Violations()
                violations.add("name", _REASONS["name"], f"{name} is no name")
                _refuse("colour", "THING_COLOUR_INVALID")
                violations.raise_if_any()

            def _refuse(field, reason):
                raise invalid(reason, f"{field} is wrong", field)

            def unused():
                raise invalid("NEVER_ANSWERED", "nobody calls this", "x")
            """
        )
    )
    (services / "thing" / "api.py").write_text(
        textwrap.dedent(
            """
            from herald.thing.v1 import thing_pb2_grpc
            from services.common.errors import DomainError, ErrorKind
            from services.thing import domain

            class ThingService(thing_pb2_grpc.ThingServiceServicer):
                async def GetThing(self, request, context):
                    domain.check(request.thing_id, request.name)

                async def MakeThing(self, request, context):
                    await self._things.GetThing(request)
                    raise DomainError(ErrorKind.CONFLICT, "THING_EXISTS", "the thing exists")
            """
        )
    )

    synthetic = errors_doc.Program(services)
    found = synthetic.reasons_by_rpc()

    get = {
        "THING_ID_REQUIRED": {"INVALID"},
        "THING_NAME_INVALID": {"INVALID"},
        "THING_COLOUR_INVALID": {"INVALID"},
    }
    assert found == {
        "/herald.thing.v1.ThingService/GetThing": get,
        "/herald.thing.v1.ThingService/MakeThing": get | {"THING_EXISTS": {"CONFLICT"}},
    }
    # Raised where no RPC reaches: the completeness test above would name it.
    assert "NEVER_ANSWERED" in synthetic.sites_by_reason()
