"""The OpenAPI document generated from the command table, and the guard that keeps handlers to their rows."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from translator.commands import Args, Command
from translator.commands.registry import V1_PATHS, all_commands
from translator.commands.tag import create_tag
from translator.openapi import document, schema_name
from translator.params import Params, UndeclaredParameter

COMMANDS = all_commands()
DOCUMENT = document(COMMANDS, "http://127.0.0.1:8080")


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT)


@pytest.mark.parametrize("command", sorted(COMMANDS.values(), key=lambda c: c.name), ids=lambda c: c.name)
def test_every_command_row_is_in_the_document(command: Command) -> None:
    name = schema_name(command.name)
    schemas = DOCUMENT["components"]["schemas"]
    for kind in ("Parameters", "Call", "Answer", "Error"):
        assert f"{name}{kind}" in schemas
    body = DOCUMENT["paths"]["/api.php"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["mapping"][command.name] == f"#/components/schemas/{name}Call"
    parameters = schemas[f"{name}Parameters"]["properties"]
    assert {param.name for param in command.params if not param.family} <= set(parameters)
    families = schemas[f"{name}Parameters"].get("patternProperties", {})
    assert len(families) == len([param for param in command.params if param.family])
    assert "ResponseFormat" in parameters
    assert set(schemas[f"{name}Answer"]["properties"]) == {
        "Success",
        "ErrorCode",
        *(p.name for p in command.returns),
    }
    if command.v1_alias:
        operation = DOCUMENT["paths"][f"/api/v1/{command.name}"]["post"]
        assert operation["x-legacy-command"]["name"] == command.name


def test_the_paths_that_serve_two_commands_document_both() -> None:
    for (path, method), name in V1_PATHS.items():
        operation = DOCUMENT["paths"][f"/api/v1/{path}"][method.lower()]
        assert operation["x-legacy-command"]["name"] == name


@pytest.mark.parametrize("command", sorted(COMMANDS.values(), key=lambda c: c.name), ids=lambda c: c.name)
def test_every_row_says_what_it_does_and_what_each_parameter_means(command: Command) -> None:
    assert command.summary
    assert all(param.description for param in command.params), command.name
    names = [param.name.lower() for param in command.params]
    assert len(names) == len(set(names)), "a parameter declared twice"


def test_each_error_code_of_a_row_is_documented_with_its_text() -> None:
    errors = DOCUMENT["components"]["schemas"]["TagUpdateError"]["properties"]["ErrorCode"]["oneOf"]
    assert errors[0]["items"]["enum"] == [1, 2, 3, 4]
    operation = DOCUMENT["paths"]["/api/v1/campaign.pause"]["post"]
    assert {"code": 3, "text": "Invalid campaign status (campaign must be Sending or Ready to be paused)"} in (
        operation["x-legacy-command"]["errors"]
    )


def test_credentials_follow_the_scope() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert {"APIKey", "SessionID"} <= set(schemas["TagCreateParameters"]["properties"])
    assert "AdminAPIKey" not in schemas["TagCreateParameters"]["properties"]
    assert "AdminAPIKey" in schemas["CampaignApproveParameters"]["properties"]
    # A login needs no credentials; user.login reads APIKey as its own parameter.
    assert "SessionID" not in schemas["UserLoginParameters"]["properties"]
    assert "APIKey" in schemas["UserLoginParameters"]["properties"]


def test_a_handler_reading_a_parameter_its_row_does_not_declare_fails() -> None:
    raw = Params({"Tag": "news", "CampaignID": 1})
    declared = Args(raw.declared_only(COMMANDS["tag.create"].parameter_names))
    assert create_tag(declared).name == "news"
    # tags.get declares no Tag: running tag.create's builder under its row is a programming error.
    undeclared = Args(raw.declared_only(COMMANDS["tags.get"].parameter_names))
    with pytest.raises(UndeclaredParameter, match="'tag'"):
        create_tag(undeclared)
    with pytest.raises(UndeclaredParameter):
        declared.params.raw("CampaignID")


def test_a_parameter_family_is_declared_by_its_pattern_and_documented_for_any_case() -> None:
    command = COMMANDS["subscriber.subscribe"]
    raw = Params({"CustomField12": "x", "customfield7": ["a", "b"], "CustomFieldX": "no"})
    declared = raw.declared_only(command.parameter_names, command.parameter_families)
    assert declared.names_in(command.parameter_families[0]) == ["customfield12", "customfield7"]
    assert declared.raw("CUSTOMFIELD12") == "x"
    with pytest.raises(UndeclaredParameter):
        declared.raw("CustomFieldX")
    schema = DOCUMENT["components"]["schemas"]["SubscriberSubscribeParameters"]
    [pattern] = schema["patternProperties"]
    assert pattern == "^[cC][uU][sS][tT][oO][mM][fF][iI][eE][lL][dD][0-9]{1,18}$"


def test_declared_parameters_are_read_case_insensitively() -> None:
    params = Params({"TAG": "x"}).declared_only(["Tag"])
    assert params.str("tag") == "x" and params.has("TaG")
