"""The campaign domain package: the names callers use stay importable from `services.campaign.domain`, and
the domain knows nothing of the generated proto types (the api layer maps them)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from services.campaign import domain

DOMAIN_MODULES = ("services.campaign.domain", "services.campaign.email_domain")
PACKAGE = Path(domain.__file__).parent

# Every public name of each module of the package. Removing or moving one out of the package breaks callers
# that write `domain.X`: change this table only together with them.
PUBLIC_NAMES: dict[str, frozenset[str]] = {
    "model": frozenset(
        {
            "AUTO_RESEND_SUFFIX",
            "AutoResend",
            "COPY_SUFFIX",
            "Campaign",
            "CampaignStatus",
            "FutureSchedule",
            "MAX_NAME_LENGTH",
            "NOT_SCHEDULED",
            "RecipientSource",
            "RecursiveSchedule",
            "Schedule",
            "ScheduleType",
            "SplitTest",
            "Targeting",
            "Unrecognized",
            "Variation",
            "Winner",
            "campaign_not_found",
            "auto_resend_name",
            "check_all_found",
            "copy_name",
            "owner_of_new_campaign",
            "owner_scope",
            "require_campaign_ids",
            "text_violation",
            "validate_campaign_id",
            "validate_campaign_name",
        }
    ),
    "listing": frozenset(
        {
            "CampaignFilter",
            "ListQuery",
            "MAX_OFFSET",
            "MAX_PAGE_SIZE",
            "MAX_PAGE_TOKEN_LENGTH",
            "OrderField",
            "build_list_query",
            "decode_page_token",
            "encode_page_token",
            "list_owner_scope",
            "next_page_token",
        }
    ),
    "schedule": frozenset(
        {
            "ScheduleRequest",
            "due_at",
            "is_time_zone",
            "next_occurrence",
            "validate_recurrence",
            "validate_schedule",
        }
    ),
    "targeting": frozenset(
        {
            "MAX_AUTO_RESEND_WAIT_DAYS",
            "MAX_VARIATIONS",
            "MIN_VARIATIONS",
            "rules_bundle_problem",
            "validate_auto_resend",
            "validate_targeting",
            "validate_variations",
        }
    ),
    "status": frozenset(
        {
            "APPROVE",
            "ARMED_STATUSES",
            "AWAIT_NEXT_OCCURRENCE",
            "CANCEL",
            "CANCEL_WITH_ORIGINAL",
            "CLIENT_SETTABLE_STATUSES",
            "EDITABLE_STATUSES",
            "FAIL_SENDING",
            "FINISH_SENDING",
            "PAUSE",
            "RESUME",
            "RETRY_FAILED",
            "START_SENDING",
            "Transition",
            "allows",
            "approved",
            "cancelled",
            "paused",
            "resumed",
            "status_after",
            "status_after_update",
            "status_invalid",
        }
    ),
    "update": frozenset(
        {
            "APPROVED_CONTENT",
            "CampaignPatch",
            "RENAMED_PATHS",
            "RESTRICTED_PATHS",
            "References",
            "STATE_REASONS",
            "UPDATABLE_PATHS",
            "apply_update",
            "check_patch",
            "update_failure",
            "update_not_found",
        }
    ),
    "split_test": frozenset(
        {
            "MAX_TEST_DURATION_HOURS",
            "SplitTestSettings",
            "check_split_test",
            "split_test_failure",
        }
    ),
    "statistics": frozenset(
        {
            "MAX_TOTAL_STATISTICS_CAMPAIGNS",
            "throughput",
        }
    ),
}


def _defined_names(module: str) -> set[str]:
    """The public names a module of the package defines at its top level (imports aside)."""
    names: set[str] = set()
    for node in ast.parse((PACKAGE / f"{module}.py").read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def test_every_module_of_the_package_is_listed() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert modules == set(PUBLIC_NAMES)


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_each_module_defines_the_names_listed_for_it(module: str) -> None:
    assert _defined_names(module) == PUBLIC_NAMES[module]


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_the_package_re_exports_every_public_name_as_it_is(module: str) -> None:
    submodule = importlib.import_module(f"services.campaign.domain.{module}")
    for name in PUBLIC_NAMES[module]:
        assert name in domain.__all__, name
        assert getattr(domain, name) is getattr(submodule, name), name


def test_the_package_exports_nothing_else() -> None:
    assert sorted(domain.__all__) == sorted(set().union(*PUBLIC_NAMES.values()))


def test_the_campaign_domain_imports_no_generated_proto_type() -> None:
    # A fresh interpreter: this test session has long since loaded every generated module.
    probe = (
        "import sys\n"
        f"for name in {DOMAIN_MODULES!r}:\n"
        "    __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('herald', 'grpc') or m.startswith('google.protobuf')))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
