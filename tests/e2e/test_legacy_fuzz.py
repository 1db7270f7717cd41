"""A property-based fuzz test of the legacy endpoint, driven by the OpenAPI document it serves.

Hypothesis builds each command's calls from the served document's `<Name>Parameters` schemas, with real
credentials and the IDs of real objects (so handlers run past authentication and reach the services), and
mixes in hostile values: lone surrogates, huge and fractional numbers, nested objects where text is
expected, NUL characters, long strings. Whatever it sends, the answer is never a 5xx and always a legacy
envelope; a success has exactly the keys the document promises, and an error only the codes it lists.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.conftest import Api, System
from tests.e2e.edge_helpers import api_from, own_translator
from translator.commands.registry import all_commands
from translator.identity import IdentityStore
from translator.openapi import document

pytestmark = pytest.mark.asyncio(loop_scope="session")

OPENAPI_PATH = "/api/openapi.json"
PASSWORD = "fuzz-password"
# `make test` runs the same 2,200 + 300 cases every time (derandomized: a failure is reproducible);
# HERALD_FUZZ_EXAMPLES=20000 explores that many new ones per test.
EXPLORE = int(os.environ.get("HERALD_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=EXPLORE or examples,
        derandomize=not EXPLORE,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


@dataclass(repr=False)
class World:
    """The served document and a user, an admin and some of the user's objects to aim calls at."""

    document: dict[str, Any]
    user_key: str
    user_session: str
    admin_key: str
    username: str
    ids: dict[str, int] = field(default_factory=dict)
    validators: dict[str, Draft202012Validator] = field(default_factory=dict)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("World(...)")  # hypothesis prints its arguments; the document is 200 kB

    def schema(self, name: str) -> dict[str, Any]:
        schema: dict[str, Any] = self.document["components"]["schemas"][name]
        return schema

    def validator(self, name: str) -> Draft202012Validator:
        if name not in self.validators:
            root = {"$ref": f"#/components/schemas/{name}", "components": self.document["components"]}
            self.validators[name] = Draft202012Validator(root)
        return self.validators[name]


async def _seed(api: Api, key: str) -> dict[str, int]:
    """IDs of one of each object the commands name, by kind: campaign, tag, email, list, subscriber, segment."""
    ids: dict[str, int] = {}

    async def made(command: str, id_key: str, **params: Any) -> None:
        body = await api.call(command, key, **params)
        assert body["Success"] is True, body
        ids[id_key.removesuffix("ID").lower()] = int(body[id_key])

    await made("campaign.create", "CampaignID", CampaignName="fuzz target")
    await made("tag.create", "TagID", Tag="fuzz target")
    await made("email.create", "EmailID")
    await made("list.create", "ListID", SubscriberListName="fuzz target")
    list_id = ids["list"]
    body = await api.call(
        "subscriber.create",
        key,
        ListID=list_id,
        EmailAddress="fuzz@example.com",
        SubscriptionDate="2025-01-02",
        SubscriptionIP="203.0.113.5",
    )
    ids["subscriber"] = int(body["SubscriberInformation"]["SubscriberID"])
    await made("segment.create", "SegmentID", SubscriberListID=list_id, SegmentName="all", SegmentOperator="and")
    return ids


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_api(system: System) -> AsyncIterator[Api]:
    """A translator of the fuzz test's own: the failed logins and credential-free calls it makes count
    against its own in-memory limits, not against the shared translator's other tests call."""
    async with own_translator(system, {}) as base_url, api_from(base_url, "127.0.0.1") as api:
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(fuzz_api: Api, identity: IdentityStore) -> World:
    api = fuzz_api
    status, content_type, text = await api.raw("GET", OPENAPI_PATH)
    assert (status, content_type) == (200, "application/json")
    username = f"fuzz-{uuid.uuid4().hex[:10]}"
    user = await identity.create_user(username, PASSWORD, permissions=["*"])
    admin = await identity.create_admin(f"fuzz-admin-{uuid.uuid4().hex[:10]}", PASSWORD)
    login = await api.call("user.login", "", Username=username, Password=PASSWORD)
    ids = await _seed(api, user["APIKey"])
    return World(json.loads(text), user["APIKey"], login["SessionID"], admin["AdminAPIKey"], username, ids)


async def test_the_openapi_document_is_served_at_api_openapi_json(api: Api, system: System) -> None:
    status, content_type, text = await api.raw("GET", OPENAPI_PATH)
    assert (status, content_type) == (200, "application/json")
    # The document of the very command table the server runs, with the server's public URL.
    assert json.loads(text) == json.loads(json.dumps(document(all_commands(), system.base_url)))


# --- Values -----------------------------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(
    [
        "\ud800",
        "a\udfffb",
        "\x00",
        "x\x00y",
        "",
        " ",
        "\t\n",
        "x" * 5000,
        "\u202egnp.exe",
        "\U0001f600",
        "' OR 1=1 --",
        "<![CDATA[]]>",
        "]]>",
        "%Subscriber:FirstName%",
        "{{ Subscriber:",
        " 7 ",
        "1e3",
        "0x1F",
        "-1",
        "9" * 40,
        "null",
        "[]",
        "{}",
        "*",
        "1:0,2:3",
    ]
)
HOSTILE_NUMBERS = st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 0.5, -0.0, 1e308])
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
HOSTILE = HOSTILE_TEXT | HOSTILE_NUMBERS | ANY_JSON
RULES = st.sampled_from(
    [
        '[[{"type": "fields", "field_id": "EmailAddress", "operator": "contains", "value": "example"}]]',
        '[[{"type": "tags", "operator": "has this tag", "value": "1"}]]',
        "[[]]",
        "[]",
        '[[{"type": "fields"}]]',
        "not json",
        '{"operator": "and", "criteria": []}',
    ]
)
PLAIN_TEXT = st.sampled_from(
    ["fuzz", "Draft", "Ready", "Immediate", "Future", "2030-01-01", "10:00:00", "UTC", "a@example.com", "and"]
)


def values(world: World, schema: dict[str, Any], depth: int = 0, name: str = "") -> st.SearchStrategy[Any]:
    """Values the schema allows, and one time in six one it does not."""
    if depth >= 3:
        return HOSTILE
    fitting = _fitting(world, schema, depth, name)
    return st.integers(0, 5).flatmap(lambda roll: HOSTILE if roll == 0 else fitting)


def _ids_for(world: World, name: str) -> list[int]:
    """The seeded IDs a parameter most likely names (RelEmailID: the email), else all of them."""
    kind = name.lower().removesuffix("ids").removesuffix("id").removeprefix("rel").removeprefix("subscriber")
    kind = {"": "subscriber", "s": "subscriber", "campaigns": "campaign", "tags": "tag", "lists": "list"}.get(
        kind, kind
    )
    return [world.ids[kind]] if kind in world.ids else sorted(world.ids.values())


def _fitting(world: World, schema: dict[str, Any], depth: int, name: str = "") -> st.SearchStrategy[Any]:
    if "oneOf" in schema:
        return st.one_of([_fitting(world, option, depth, name) for option in schema["oneOf"]])
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "string":
        if schema.get("contentMediaType") == "application/json":
            return RULES | ANY_JSON.map(json.dumps)
        return PLAIN_TEXT | st.text(max_size=20) | st.sampled_from([str(i) for i in _ids_for(world, name)])
    if kind == "integer":
        return st.sampled_from(_ids_for(world, name)) | st.integers(min_value=-3, max_value=50)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans() | st.sampled_from(["yes", "on", "0", "1", 1, 0])
    if kind == "array":
        return st.lists(values(world, schema.get("items", {}), depth + 1, name), max_size=4)
    if kind == "object":
        return objects(world, schema, depth + 1)
    return ANY_JSON


def objects(world: World, schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with a random selection of the schema's properties (required ones usually there)."""
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, property_schema in properties.items():
            if draw(st.integers(0, 9)) < (9 if name in required else 3):
                result[name] = draw(values(world, property_schema, depth, name))
        if draw(st.integers(0, 9)) == 0:
            result[draw(st.text(min_size=1, max_size=10))] = draw(HOSTILE)
        return result

    return build()


# --- Calls ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    command: str
    path: str
    params: dict[str, Any]
    encoding: str  # json, form or multipart
    xml: bool


def commands_of(world: World) -> list[tuple[str, str]]:
    """(command, path) for every command at /api.php and at its /api/v1 path, from the document."""
    mapping = world.document["paths"]["/api.php"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    calls = [(command, "/api.php") for command in mapping["discriminator"]["mapping"]]
    for path, operations in world.document["paths"].items():
        if path.startswith("/api/v1/") and "post" in operations:
            calls.append((operations["post"]["x-legacy-command"]["name"], path))
    return sorted(calls)


def credentials(world: World, scope: str) -> st.SearchStrategy[dict[str, Any]]:
    """Credentials the command's scope accepts, one time in five others (missing, forged, hostile, wrong)."""
    user = [{"APIKey": world.user_key}, {"SessionID": world.user_session}]
    admin = [{"AdminAPIKey": world.admin_key}, {"APIKey": world.admin_key}]
    accepted = {"user": user, "admin": admin, "user_or_admin": user + admin, "none": [{}], "optional": [{}, *user]}
    real = accepted[scope]
    other = st.sampled_from(
        [{}, {"APIKey": "AAAA-BBBB-CCCC-DDDD"}, {"SessionID": "no-such-session"}, *user, *admin]
    )
    wrong = other | st.fixed_dictionaries({"APIKey": HOSTILE})
    return st.integers(0, 4).flatmap(lambda roll: wrong if roll == 0 else st.sampled_from(real))


@st.composite
def calls(draw: st.DrawFn, world: World) -> Call:
    command, path = draw(st.sampled_from(commands_of(world)))
    parameters_schema = world.schema(_schema_name(world, command) + "Parameters")
    params = draw(objects(world, parameters_schema))
    for credential in ("APIKey", "AdminAPIKey", "SessionID"):
        params.pop(credential, None)
    if command.endswith(".login"):
        params.setdefault("Username", draw(st.sampled_from([world.username, "nobody"])))
        params.setdefault("Password", draw(st.sampled_from([PASSWORD, "wrong"])))
    else:
        params.update(draw(credentials(world, parameters_schema["x-legacy-command"]["scope"])))
    if path == "/api.php":
        params["Command"] = draw(st.sampled_from([command, command.upper()]))
    if draw(st.integers(0, 9)) == 0:
        params["ResponseFormat"] = "XML"
    xml = params.get("ResponseFormat") == "XML"
    encoding = draw(st.sampled_from(["json"] * 6 + ["form", "multipart"]))
    return Call(command, path, params, encoding, xml)


def _schema_name(world: World, command: str) -> str:
    ref: str = world.document["paths"]["/api.php"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "discriminator"
    ]["mapping"][command]
    return ref.rsplit("/", 1)[1].removesuffix("Call")


def form_fields(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A JSON value as PHP-style bracketed form fields."""
    if isinstance(value, dict):
        return [
            pair
            for key, item in value.items()
            for pair in form_fields(item, f"{prefix}[{key}]" if prefix else str(key))
        ]
    if isinstance(value, list):
        return [pair for index, item in enumerate(value) for pair in form_fields(item, f"{prefix}[{index}]")]
    if value is None:
        return [(prefix, "")]
    if isinstance(value, bool):
        return [(prefix, "1" if value else "0")]
    return [(prefix, str(value))]


def _unfit_for_a_part_header(name: str) -> bool:
    # aiohttp's client writes other names as name*=utf-8''..., which its own writer then refuses.
    return not all(" " <= char <= "~" and char not in '"\\' for char in name)


def encode(text: str) -> bytes:
    # A lone surrogate cannot be UTF-8; a careless client sends the bytes CESU-8 would.
    return text.encode("utf-8", "surrogatepass")


async def send(api: Api, call: Call) -> tuple[int, str, str]:
    url = api.base_url + call.path
    if call.encoding == "json":
        data: Any = json.dumps(call.params).encode()
        headers = {"Content-Type": "application/json"}
    elif call.encoding == "form":
        pairs = [(encode(name), encode(value)) for name, value in form_fields(call.params)]
        data, headers = urlencode(pairs).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    elif any(_unfit_for_a_part_header(name) for name, _ in form_fields(call.params)):
        # Part names aiohttp's client cannot write (control characters, non-ASCII): sent as a
        # urlencoded form instead.
        return await send(api, dataclasses.replace(call, encoding="form"))
    else:
        data = aiohttp.FormData()
        for name, value in form_fields(call.params):
            if value == encode(value).decode("utf-8", "replace"):
                data.add_field(name, value)
            else:  # a lone surrogate: the raw bytes, as a file part
                data.add_field(name, io.BytesIO(encode(value)), filename="value.txt")
        headers = {}
    async with api.session.post(url, data=data, headers=headers) as response:
        return response.status, response.content_type, await response.text()


def _outcome(text: str, content_type: str) -> str:
    if content_type == "text/xml":
        return "XML answer"
    body = json.loads(text)
    if body["Success"]:
        return "success"
    return "credentials refused" if body["ErrorCode"] in (99998, 99999) else "command error"


def check_answer(world: World, call: Call, status: int, content_type: str, text: str) -> None:
    assert status < 500, text
    assert "Traceback" not in text
    if content_type == "text/xml":
        assert call.xml, text
        root = ElementTree.fromstring(text.encode())
        assert root.tag == "response" and root.find("Success") is not None and root.find("ErrorCode") is not None
        return
    assert content_type == "application/json", text
    body = json.loads(text)
    assert isinstance(body["Success"], bool), body
    code = body["ErrorCode"]
    assert isinstance(code, int) or (isinstance(code, list) and all(isinstance(c, int) for c in code)), body
    if status == 400:
        assert code in (100000, 100001, 100003), body
        return
    if status == 413:
        assert code == 100000
        return
    if status == 429:
        assert code == 429
        return
    assert status == 200, body
    name = _schema_name(world, call.command)
    kind = "Answer" if body["Success"] else "Error"
    errors = sorted(world.validator(name + kind).iter_errors(body), key=str)
    assert not errors, (call.command, body, [e.message for e in errors[:3]])
    if body["Success"]:
        declared = set(world.schema(name + "Answer")["properties"])
        assert set(body) <= declared, (call.command, set(body) - declared)


@fuzz_settings(2200)
@given(data=st.data())
async def test_every_legacy_command_answers_an_envelope_whatever_it_is_sent(
    fuzz_api: Api, world: World, data: st.DataObject
) -> None:
    call = data.draw(calls(world))
    status, content_type, text = await send(fuzz_api, call)
    check_answer(world, call, status, content_type, text)
    # --hypothesis-show-statistics shows how far the calls got: handlers must be reached, not just auth.
    event(f"HTTP {status}" if status != 200 else _outcome(text, content_type))


CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-16",
        "application/json; charset=bogus",
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-7",
        "multipart/form-data",
        "multipart/form-data; boundary=b",
    ]
)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(encode),
    st.dictionaries(st.text(max_size=10), ANY_JSON, max_size=5).map(lambda value: json.dumps(value).encode()),
    st.sampled_from(
        [b"--b\r\n", b'--b\r\nContent-Disposition: form-data; name="Command"\r\n\r\ntags.get', b"a=%ff&b"]
    ),
)


@fuzz_settings(300)
@given(body=BODIES, content_type=CONTENT_TYPES, path=st.sampled_from(["/api.php", "/api/v1/campaign.create"]))
async def test_any_body_under_any_content_type_answers_an_envelope(
    fuzz_api: Api, body: bytes, content_type: str | None, path: str
) -> None:
    api = fuzz_api
    headers = {"Content-Type": content_type} if content_type else {}
    skip = () if content_type else ("Content-Type",)
    async with api.session.post(
        api.base_url + path, data=body, headers=headers, skip_auto_headers=skip
    ) as response:
        status, answer_type, text = response.status, response.content_type, await response.text()
    assert status in (200, 400) and answer_type == "application/json", text
    answer = json.loads(text)
    assert isinstance(answer["Success"], bool) and "ErrorCode" in answer
    if status == 400:
        assert answer["ErrorCode"] in (100000, 100003)
