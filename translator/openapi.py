"""The OpenAPI 3.1 document of the legacy API, generated from the command table and served at GET /api/openapi.json.

Every command row declares its parameters and success keys (translator.commands.Param); this turns
them, with the row's scope, permission, error codes and aliases, into schemas: `<Name>Parameters`
(what a command reads), `<Name>Call` (the same with its Command, for /api.php), `<Name>Answer` and
`<Name>Error`. Legacy-client teams generate clients from it; the fuzz test drives the API from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from translator import envelope
from translator.commands import CREDENTIALS, Command, Param
from translator.commands.registry import V1_PATHS

__all__ = ["PATH", "document", "schema_name"]

PATH = "/api/openapi.json"
JSON, FORM, MULTIPART, XML = (
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/xml",
)
AUTH_CODES = (envelope.NOT_AUTHENTICATED, envelope.NOT_PERMITTED)
RATE_LIMITED = 429

DESCRIPTION = """\
Herald's legacy command API. A call names its command in `Command` (matched case-insensitively) and sends
its parameters beside it, in a JSON object, `application/x-www-form-urlencoded` or `multipart/form-data`
(nested values in brackets: `ABTesting[Variations][0][EmailID]=301`). Parameter names are case-insensitive at
every depth; query-string parameters count too, the body's win. A body is read as JSON whatever its
Content-Type says (in its declared charset, UTF-8 by default); a form keeps its first 1,000 fields.

An object parameter may also be sent as a string holding its JSON. `integers` and `strings` parameters take
a comma-separated string or an array. Booleans are true for `true`, `1`, `"1"`, `"true"`, `"yes"`, `"on"`
and false for anything else.

Every answer is an envelope: `Success`, `ErrorCode` (0 on success) and, mostly, `ErrorText`, plus the
command's keys. `ResponseFormat=XML` answers the same as XML (root `<response>`, list items `<node_N>`).
A handler's error answers HTTP 200 with the command's codes, as an int or an ascending list (the command's
error shape; `x-legacy-command.errors` lists them). 99998: credentials missing, unknown or expired; 99999:
not permitted. Hard failures have a real HTTP status and add `Errors: [{Code, Message}]`: 100000 the body
or a parameter cannot be read (400; 413 past 16 MiB; lone UTF-16 surrogates included), 100001 wrong method
(400), 100003 unknown command (400), 100004 a component is unavailable (500), 100005 unexpected (500).
100000 and 100001 are always JSON.
"""


def schema_name(command: str) -> str:
    """campaign.recipients.get -> CampaignRecipientsGet."""
    return "".join(part[:1].upper() + part[1:] for part in command.replace("_", ".").split("."))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def value_schema(param: Param) -> dict[str, Any]:
    """The JSON Schema of one parameter's (or answer key's) value."""
    schema: dict[str, Any]
    if param.kind in ("string", "integer", "number", "boolean"):
        schema = {"type": param.kind}
        if param.kind == "integer":
            schema["format"] = "int64"
        if param.enum:
            schema["enum"] = list(param.enum)
    elif param.kind == "integers":
        schema = {
            "oneOf": [
                {"type": "string", "description": "comma-separated"},
                {"type": "array", "items": {"type": "integer", "format": "int64"}},
                {"type": "integer", "format": "int64"},
            ]
        }
    elif param.kind == "strings":
        item: dict[str, Any] = {"type": "string"}
        if param.enum:
            item["enum"] = list(param.enum)
        schema = {
            "oneOf": [{"type": "string", "description": "comma-separated"}, {"type": "array", "items": item}]
        }
    elif param.kind == "json":
        schema = {"type": "string", "contentMediaType": JSON}
    elif param.kind == "object":
        schema = object_schema(param.fields)
    elif param.kind == "array":
        schema = {"type": "array", "items": object_schema(param.fields) if param.fields else {}}
    else:
        schema = {}
    if param.format:
        schema["format"] = param.format
    if param.description:
        schema["description"] = param.description
    if param.default is not None:
        schema["default"] = param.default
    return schema


def any_case(pattern: str) -> str:
    """A family's lower-case pattern as a JSON Schema pattern that matches any case (JSON Schema has no
    flags): each ASCII letter outside a bracket expression becomes [xX]; anchored at both ends."""
    out, inside = [], False
    for char in pattern:
        if char == "[":
            inside = True
        elif char == "]":
            inside = False
        out.append(f"[{char}{char.upper()}]" if char.isascii() and char.isalpha() and not inside else char)
    return "^" + "".join(out) + "$"


def object_schema(fields: Iterable[Param], *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    fields = tuple(fields)
    schema: dict[str, Any] = {"type": "object", "properties": {**(extra or {})}}
    schema["properties"].update({field.name: value_schema(field) for field in fields if not field.family})
    families = {any_case(field.family): value_schema(field) for field in fields if field.family}
    if families:
        schema["patternProperties"] = families
    required = [field.name for field in fields if field.required]
    if required:
        schema["required"] = required
    return schema


def _credentials(command: Command) -> dict[str, Any]:
    texts = {
        "APIKey": "A user's API key" + (", or an admin's" if command.scope != "user" else ""),
        "AdminAPIKey": "An admin's API key",
        "SessionID": "A session from user.login" + (" or admin.login" if command.scope != "user" else ""),
    }
    return {name: {"type": "string", "description": texts[name]} for name in CREDENTIALS[command.scope]}


def parameters_schema(command: Command) -> dict[str, Any]:
    common = {
        "ResponseFormat": {
            "type": "string",
            "enum": ["JSON", "XML"],
            "default": "JSON",
            "description": "Exactly XML (case-sensitive) for an XML answer",
        },
        **_credentials(command),
    }
    schema = object_schema(command.params, extra=common)
    schema["description"] = _command_text(command)
    schema["x-legacy-command"] = _legacy_extension(command)
    return schema


def call_schema(command: Command) -> dict[str, Any]:
    return {
        "allOf": [
            _ref(f"{schema_name(command.name)}Parameters"),
            {
                "type": "object",
                "properties": {"Command": {"type": "string", "const": command.name}},
                "required": ["Command"],
            },
        ],
    }


def answer_schema(command: Command) -> dict[str, Any]:
    envelope_keys = {"Success": {"const": True}, "ErrorCode": {"const": 0}}
    schema = object_schema(command.returns, extra=envelope_keys)
    schema["required"] = ["Success", "ErrorCode", *schema.get("required", [])]
    return schema


def error_codes(command: Command) -> list[dict[str, Any]]:
    """The command's own codes with their texts (a code without a fixed text says what went wrong)."""
    codes = sorted({*command.codes.values(), *command.texts})
    return [{"code": code, "text": command.texts.get(code, "")} for code in codes]


def error_schema(command: Command) -> dict[str, Any]:
    codes = [entry["code"] for entry in error_codes(command)]
    single = {"type": "integer", "enum": [*codes, *AUTH_CODES]}
    listed = {"type": "array", "items": {"type": "integer", "enum": codes} if codes else {"type": "integer"}}
    code: dict[str, Any]
    if command.shape == "list":
        code = {"oneOf": [listed, {"type": "integer", "enum": list(AUTH_CODES)}]}
    elif command.shape == "int":
        code = single
    else:
        code = {"oneOf": [listed, single]}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "Success": {"const": False},
            "ErrorCode": code,
            "ErrorText": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        },
        "required": ["Success", "ErrorCode", "ErrorText"],
    }
    if command.errors_list:
        schema["properties"]["Errors"] = _ref("ErrorList")
        schema["required"].append("Errors")
    return schema


def _command_text(command: Command) -> str:
    who = {
        "none": "No credentials.",
        "optional": "No credentials needed; a user's credentials that are sent are checked and acted on.",
        "user": "User credentials.",
        "admin": "Admin credentials.",
        "user_or_admin": "User or admin credentials.",
    }[command.scope]
    parts = [f"`{command.name}`: {command.summary}.", who]
    if command.permission:
        parts.append(f"Permission `{command.permission}`.")
    if command.rate_limit:
        count, seconds = command.rate_limit
        parts.append(f"At most {count} calls per {seconds:g} s per credential (then 429).")
    codes = error_codes(command)
    if codes:
        shape = {
            "list": "an ascending list",
            "int": "one int (the first failing check)",
            "mixed": "a list for bad parameters, an int otherwise",
        }[command.shape]
        listing = "; ".join(f"{entry['code']} {entry['text']}".strip() for entry in codes)
        parts.append(f"Errors, as {shape}: {listing}.")
    return " ".join(parts)


def _legacy_extension(command: Command) -> dict[str, Any]:
    return {
        "name": command.name,
        "scope": command.scope,
        "permission": command.permission,
        "errorShape": command.shape,
        "errors": error_codes(command),
        "rateLimit": {"requests": command.rate_limit[0], "seconds": command.rate_limit[1]}
        if command.rate_limit
        else None,
        "methods": sorted(command.methods),
    }


def _security(command: Command) -> list[dict[str, list[str]]]:
    return [{name: []} for name in CREDENTIALS[command.scope]]


def _body(schema: dict[str, Any], object_names: Iterable[str]) -> dict[str, Any]:
    # Form bodies carry objects and arrays in bracket notation (deepObject), as PHP parsed them.
    encoding = {name: {"style": "deepObject", "explode": True} for name in object_names}
    form: dict[str, Any] = {"schema": schema}
    if encoding:
        form["encoding"] = encoding
    return {"required": True, "content": {JSON: {"schema": schema}, FORM: form, MULTIPART: form}}


def _nested(command: Command) -> list[str]:
    return [p.name for p in command.params if p.kind in ("object", "array")]


def _responses(answer: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "The command's answer: its success keys, or its error codes (Success false)",
            "content": {JSON: {"schema": answer}, XML: {"schema": {"type": "string"}}},
        },
        "400": {"$ref": "#/components/responses/BadRequest"},
        "413": {"$ref": "#/components/responses/TooLarge"},
        # The command's own limit, or failed logins (throttled per username and client address).
        "429": {"$ref": "#/components/responses/RateLimited"},
        "500": {"$ref": "#/components/responses/Failure"},
    }
    return responses


def _v1_operation(command: Command, method: str) -> dict[str, Any]:
    name = schema_name(command.name)
    answer = {"oneOf": [_ref(f"{name}Answer"), _ref(f"{name}Error")]}
    operation: dict[str, Any] = {
        "operationId": name[:1].lower() + name[1:],
        "summary": command.summary,
        "description": _command_text(command),
        "tags": [command.name.split(".")[0]],
        "responses": _responses(answer),
        "x-legacy-command": _legacy_extension(command),
    }
    if command.scope != "none":
        operation["security"] = ([{}] if command.scope == "optional" else []) + _security(command)
    if method == "get":
        operation["parameters"] = [
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "schema": value_schema(param),
            }
            for param in command.params
        ]
    else:
        operation["requestBody"] = _body(_ref(f"{name}Parameters"), _nested(command))
    return operation


def _api_php(commands: list[Command]) -> dict[str, Any]:
    calls = {command.name: f"#/components/schemas/{schema_name(command.name)}Call" for command in commands}
    answers = [_ref(f"{schema_name(command.name)}{kind}") for command in commands for kind in ("Answer", "Error")]
    nested = sorted({name for command in commands for name in _nested(command)})
    body = {
        "oneOf": [{"$ref": ref} for ref in calls.values()],
        "discriminator": {"propertyName": "Command", "mapping": calls},
    }
    post = {
        "operationId": "callCommand",
        "summary": "Run the legacy command named by Command",
        "description": "Each command's parameters, answer and errors are the components named after it "
        "(`<Name>Parameters`, `<Name>Answer`, `<Name>Error`).",
        "tags": ["legacy"],
        "requestBody": _body(body, nested),
        "responses": _responses({"anyOf": answers}),
        "security": [{}, *({name: []} for name in ("APIKey", "AdminAPIKey", "SessionID"))],
    }
    getters = [command for command in commands if "GET" in command.methods]
    get_params = {param.name: param for command in getters for param in command.params}
    get = {
        "operationId": "callCommandByQuery",
        "summary": "Run a command that answers GET, its parameters in the query string",
        "tags": ["legacy"],
        "parameters": [
            {
                "name": "Command",
                "in": "query",
                "required": True,
                "schema": {"type": "string", "enum": [command.name for command in getters]},
            },
            *({"name": name, "in": "query", "schema": value_schema(param)} for name, param in get_params.items()),
        ],
        "responses": _responses(
            {"anyOf": [_ref(f"{schema_name(c.name)}{kind}") for c in getters for kind in ("Answer", "Error")]}
        ),
        "security": [{name: []} for name in ("APIKey", "SessionID")],
    }
    return {"post": post, "get": get}


def _hard_failure(codes: list[int], text: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "Success": {"const": False},
            "ErrorCode": {"type": "integer", "enum": codes},
            "ErrorText": {"type": "string"},
            "Errors": _ref("ErrorList"),
        },
        "required": ["Success", "ErrorCode", "ErrorText"],
    }
    return {"description": text, "content": {JSON: {"schema": schema}, XML: {"schema": {"type": "string"}}}}


def _components(commands: list[Command]) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "ErrorList": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"Code": {"type": "integer"}, "Message": {"type": "string"}},
                "required": ["Code", "Message"],
            },
        },
    }
    for command in commands:
        name = schema_name(command.name)
        schemas[f"{name}Parameters"] = parameters_schema(command)
        schemas[f"{name}Call"] = call_schema(command)
        schemas[f"{name}Answer"] = answer_schema(command)
        schemas[f"{name}Error"] = error_schema(command)
    rate_limited = _hard_failure([RATE_LIMITED], "Rate limit exceeded (code 429, Retry-After header)")
    rate_limited["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
    return {
        "schemas": schemas,
        "responses": {
            "BadRequest": _hard_failure(
                [envelope.INVALID_JSON, envelope.INVALID_METHOD, envelope.UNKNOWN_COMMAND],
                "The body or a parameter cannot be read (100000), wrong method (100001), unknown command (100003)",
            ),
            "TooLarge": _hard_failure([envelope.INVALID_JSON], "A body larger than 16 MiB (100000)"),
            "RateLimited": rate_limited,
            "Failure": _hard_failure(
                [envelope.COMPONENT_FAILED, envelope.UNEXPECTED_FAULT],
                "A component is unavailable (100004), or an unexpected fault (100005)",
            ),
        },
        "securitySchemes": {
            name: {
                "type": "apiKey",
                "in": "query",
                "name": name,
                "description": f"{text}; usually sent as a body parameter beside Command, which works the same",
            }
            for name, text in (
                ("APIKey", "A user's API key (or, on admin commands, an admin's)"),
                ("AdminAPIKey", "An admin's API key"),
                ("SessionID", "A session from user.login or admin.login"),
            )
        },
    }


def document(commands: Mapping[str, Command], public_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every command in the table, served from `public_url`."""
    rows = sorted(commands.values(), key=lambda command: command.name)
    paths: dict[str, Any] = {"/api.php": _api_php(rows)}
    for command in rows:
        if command.v1_alias:
            paths[f"/api/v1/{command.name}"] = {"post": _v1_operation(command, "post")}
    for (path, method), name in sorted(V1_PATHS.items()):
        command = commands[name]
        paths.setdefault(f"/api/v1/{path}", {})[method.lower()] = _v1_operation(command, method.lower())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Herald legacy API", "version": "1", "description": DESCRIPTION},
        "servers": [{"url": public_url}],
        "paths": paths,
        "components": _components(rows),
    }
