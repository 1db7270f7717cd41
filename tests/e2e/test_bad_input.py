"""Bad input at the legacy edge: unreadable bodies answer 100000 in the envelope with HTTP 400, readable ones
their command's answer, and nothing a client sends answers 5xx."""

from __future__ import annotations

import asyncio
import gzip
import json
import xml.etree.ElementTree as ElementTree
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest

from tests.conftest import Api, System, User
from tests.e2e.edge_helpers import api_from

pytestmark = pytest.mark.asyncio(loop_scope="session")


def assert_unreadable(status: int, content_type: str, text: str) -> dict[str, Any]:
    assert (status, content_type) == (400, "application/json"), text
    body: dict[str, Any] = json.loads(text)
    assert body["Success"] is False and body["ErrorCode"] == 100000, body
    assert body["Errors"] == [{"Code": 100000, "Message": body["ErrorText"]}]
    return body


async def campaign_names(api: Api, user: User) -> list[str]:
    body = await api.call("campaigns.get", user.api_key)
    return [row["CampaignName"] for row in body["Campaigns"]]


async def raw_http(system: System, request: bytes) -> tuple[int, bytes]:
    """Sends bytes no HTTP client library would (a non-ASCII header); returns the status and the body."""
    address = urlsplit(system.base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return int(head.split(b" ", 2)[1]), await reader.readexactly(length)
    finally:
        writer.close()


# --- Lone surrogates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CampaignName", r"a\ud800b"),
        ("CampaignName", r"\udfff"),
        ("Tag", r"a\udfffb"),
        ("NotAParameter", r"\ud800"),
    ],
)
async def test_a_lone_surrogate_in_a_json_string_is_invalid_json(
    api: Api, user: User, name: str, value: str
) -> None:
    # Written by hand: json.dumps would never produce an unpaired escape from a Python string.
    body = (
        f'{{"Command": "campaign.create", "APIKey": "{user.api_key}", "CampaignName": "ok", "{name}": "{value}"}}'
    )
    status, content_type, text = await api.raw(
        "POST", "/api.php", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert "surrogate" in assert_unreadable(status, content_type, text)["ErrorText"]
    assert await campaign_names(api, user) == []


@pytest.mark.parametrize("credential", ["APIKey", "SessionID", "AdminAPIKey"])
async def test_a_lone_surrogate_as_a_credential_is_invalid_json(api: Api, credential: str) -> None:
    body = f'{{"Command": "tags.get", "{credential}": "\\ud800"}}'.encode()
    status, content_type, text = await api.raw(
        "POST", "/api.php", data=body, headers={"Content-Type": "application/json"}
    )
    assert_unreadable(status, content_type, text)


async def test_a_lone_surrogate_in_an_object_key_is_invalid_json(api: Api, user: User) -> None:
    body = f'{{"Command": "tags.get", "APIKey": "{user.api_key}", "Nested": {{"\\udabc": 1}}}}'.encode()
    status, content_type, text = await api.raw(
        "POST", "/api.php", data=body, headers={"Content-Type": "application/json"}
    )
    assert_unreadable(status, content_type, text)


async def test_a_paired_surrogate_escape_is_one_character(api: Api, user: User) -> None:
    body = f'{{"Command": "campaign.create", "APIKey": "{user.api_key}", "CampaignName": "a\\ud83d\\ude00b"}}'
    status, _, text = await api.raw(
        "POST", "/api.php", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert status == 200 and json.loads(text)["Success"] is True
    assert await campaign_names(api, user) == ["a\U0001f600b"]


async def test_a_lone_surrogate_inside_a_json_string_parameter_is_a_malformed_parameter(
    api: Api, user: User
) -> None:
    created = await api.call("list.create", user.api_key, SubscriberListName="people")
    rules = '[[{"type": "fields", "field_id": "EmailAddress", "operator": "is", "value": "\\ud800"}]]'
    body = await api.call(
        "segment.create",
        user.api_key,
        SubscriberListID=created["ListID"],
        SegmentName="odd",
        SegmentOperator="and",
        RulesJson=rules,
    )
    assert body["Success"] is False and body["ErrorCode"] == [5]


async def test_a_form_value_decoding_to_a_lone_surrogate_never_reaches_a_service(api: Api, user: User) -> None:
    # UTF-7 is a charset Python knows, and "+2AA-" is a lone surrogate in it.
    form = f"Command=tag.create&APIKey={user.api_key}&Tag=%2B2AA-".encode()
    status, content_type, text = await api.raw(
        "POST",
        "/api.php",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-7"},
    )
    assert_unreadable(status, content_type, text)
    assert (await api.call("tags.get", user.api_key))["Tags"] == []


# --- Content types and charsets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/xml",
        "application/octet-stream",
        "application/x-www-form-urlencoded",  # what `curl -d '{...}'` sends
        "application/json; charset=utf-8",
    ],
)
async def test_a_json_body_is_read_whatever_the_content_type_says(
    api: Api, user: User, content_type: str | None
) -> None:
    body = json.dumps({"Command": "tag.create", "APIKey": user.api_key, "Tag": "typed"}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    async with api.session.post(
        api.base_url + "/api.php",
        data=body,
        headers=headers,
        skip_auto_headers=() if content_type else ("Content-Type",),
    ) as response:
        assert response.status == 200
        answer = await response.json(content_type=None)
    assert answer["Success"] is True and isinstance(answer["TagID"], int)


@pytest.mark.parametrize(
    ("encoding", "declared"),
    [("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"), ("latin-1", "iso-8859-1"), ("utf-16", None)],
)
async def test_a_json_body_is_decoded_with_its_declared_charset(
    api: Api, user: User, encoding: str, declared: str | None
) -> None:
    text = json.dumps(
        {"Command": "campaign.create", "APIKey": user.api_key, "CampaignName": "Zoë"}, ensure_ascii=False
    )
    content_type = f"application/json; charset={declared}" if declared else "application/json"
    # Without a charset a UTF-16 body is told by its byte-order mark (Python's utf-16 writes one).
    status, _, answer = await api.raw(
        "POST", "/api.php", data=text.encode(encoding), headers={"Content-Type": content_type}
    )
    assert status == 200 and json.loads(answer)["Success"] is True, answer
    assert await campaign_names(api, user) == ["Zoë"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json; charset=bogus-charset", b'{"Command": "tags.get"}'),
        ("application/json; charset=utf-16", b'{"Command": "tags.get"}'),  # odd length: not UTF-16
        ("application/json; charset=hex", b'{"Command": "tags.get"}'),  # a codec, but not a text encoding
        ("application/json", b'{"Command": "tags.get", "Tag": "\xff"}'),  # not UTF-8
        ("application/x-www-form-urlencoded; charset=bogus-charset", b"Command=tags.get"),
    ],
)
async def test_an_undecodable_body_or_an_unknown_charset_is_unreadable(
    api: Api, content_type: str, body: bytes
) -> None:
    status, answer_type, text = await api.raw(
        "POST", "/api.php", data=body, headers={"Content-Type": content_type}
    )
    assert_unreadable(status, answer_type, text)


async def test_form_values_in_a_declared_charset_are_decoded_with_it(api: Api, user: User) -> None:
    form = f"Command=campaign.create&APIKey={user.api_key}&CampaignName=Zo%EB".encode()
    status, _, text = await api.raw(
        "POST",
        "/api.php",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1"},
    )
    assert status == 200 and json.loads(text)["Success"] is True
    assert await campaign_names(api, user) == ["Zoë"]


def multipart(boundary: str, *fields: tuple[str, str]) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", multipart("b", ("Command", "tags.get"))),
        ("multipart/form-data; boundary=other", multipart("b", ("Command", "tags.get"))),
        ("multipart/form-data; boundary=b", b'{"Command": "tags.get"}'),
        ("multipart/form-data; boundary=b", multipart("b", ("Command", "tags.get"))[:-10]),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="Command"\r\nContent-Type: text/plain; charset=bogus\r\n'
            b"\r\ntags.get\r\n--b--\r\n",
        ),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="Command"\r\nContent-Transfer-Encoding: rot13\r\n'
            b"\r\ntags.get\r\n--b--\r\n",
        ),
    ],
    ids=["no-boundary", "wrong-boundary", "not-multipart", "truncated", "bogus-part-charset", "bogus-transfer"],
)
async def test_an_unreadable_multipart_body_answers_100000(api: Api, content_type: str, body: bytes) -> None:
    status, answer_type, text = await api.raw(
        "POST", "/api.php", data=body, headers={"Content-Type": content_type}
    )
    assert_unreadable(status, answer_type, text)


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "multipart/form-data; boundary=x", "text/plain"]
)
async def test_random_bytes_are_an_unreadable_body(api: Api, content_type: str | None) -> None:
    noise = bytes(range(256)) * 4
    headers = {"Content-Type": content_type} if content_type else {}
    async with api.session.post(
        api.base_url + "/api.php",
        data=noise,
        headers=headers,
        skip_auto_headers=() if content_type else ("Content-Type",),
    ) as response:
        assert_unreadable(response.status, response.content_type, await response.text())


async def test_a_body_that_is_not_what_its_content_encoding_says_is_unreadable(api: Api, user: User) -> None:
    status, content_type, text = await api.raw(
        "POST",
        "/api.php",
        data=b'{"Command": "tags.get"}',
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert_unreadable(status, content_type, text)
    packed = gzip.compress(json.dumps({"Command": "tags.get", "APIKey": user.api_key}).encode())
    status, _, text = await api.raw(
        "POST",
        "/api.php",
        data=packed,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert status == 200 and json.loads(text)["Success"] is True


# --- X-Request-Id --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    ["café".encode(), b"A\tB", b"\xe9t\xe9", b"x" * 1000, b"two words"],
    ids=["utf8", "tab", "latin1", "long", "space"],
)
async def test_a_request_id_that_is_no_printable_ascii_token_is_replaced(
    system: System, user: User, request_id: bytes
) -> None:
    body = json.dumps({"Command": "tag.create", "APIKey": user.api_key, "Tag": "traced"}).encode()
    request = (
        b"POST /api.php HTTP/1.1\r\nHost: herald\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"X-Request-Id: " + request_id + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    status, answer = await raw_http(system, request)
    assert status == 200 and json.loads(answer)["Success"] is True, answer


# --- Forms with many fields ----------------------------------------------------------------------------


async def test_a_form_with_5000_fields_answers_its_command(api: Api, user: User) -> None:
    fields = [("Command", "tag.create"), ("APIKey", user.api_key), ("Tag", "crowded")]
    fields += [(f"Extra{i}", "x") for i in range(5000)]
    status, content_type, text = await api.raw(
        "POST",
        "/api.php",
        data=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, content_type) == (200, "application/json")
    assert json.loads(text)["Success"] is True
    assert [t["Tag"] for t in (await api.call("tags.get", user.api_key))["Tags"]] == ["crowded"]


async def test_fields_past_the_first_1000_are_dropped_as_php_did(api: Api, user: User) -> None:
    fields = [("Command", "tag.create"), ("APIKey", user.api_key)]
    fields += [(f"Extra{i}", "x") for i in range(998)]
    fields += [("Tag", "too late")]
    status, _, text = await api.raw(
        "POST",
        "/api.php",
        data=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = json.loads(text)
    assert status == 200 and body["Success"] is False and body["ErrorCode"] == 1  # Tag is missing


async def test_a_multipart_form_with_1500_fields_answers_its_command(api: Api, user: User) -> None:
    form = aiohttp.FormData()
    for name, value in [("Command", "tag.create"), ("APIKey", user.api_key), ("Tag", "many parts")]:
        form.add_field(name, value)
    for i in range(1500):
        form.add_field(f"Extra{i}", "x")
    status, _, text = await api.raw("POST", "/api.php", data=form)
    assert status == 200 and json.loads(text)["Success"] is True


# --- Found by the fuzz test ----------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "password"), [("user.login", "secret-password"), ("admin.login", "x")])
async def test_a_username_with_nul_is_an_invalid_login(
    system: System, user: User, command: str, password: str
) -> None:
    # Failed logins count against the caller's address: from an address of this test's own.
    async with api_from(system.base_url, "127.0.0.41") as api:
        status, body = await api.post(
            {"Command": command, "Username": user.username + "\x00", "Password": password}
        )
    assert status == 200 and body["Success"] is False
    assert body["ErrorCode"] in ([3], 3)


async def test_a_search_term_with_nul_matches_nothing(api: Api, user: User) -> None:
    created = await api.call("list.create", user.api_key, SubscriberListName="nul search")
    body = await api.call("lists.get", user.api_key, Search="\x00")
    assert body["Success"] is True and body["TotalListCount"] == 0 and body["Lists"] == []
    body = await api.call(
        "subscribers.get",
        user.api_key,
        SubscriberListID=created["ListID"],
        SubscriberSegment="Active",
        SearchKeyword="a\x00",
    )
    assert body["Success"] is True and body["TotalSubscribers"] == 0


async def test_an_xml_answer_is_well_formed_whatever_text_it_carries(api: Api, user: User) -> None:
    created = await api.call("list.create", user.api_key, SubscriberListName="bell \x07 and escape \x1b")
    assert created["Success"] is True
    status, content_type, text = await api.raw(
        "POST", "/api.php", json={"Command": "lists.get", "APIKey": user.api_key, "ResponseFormat": "XML"}
    )
    assert (status, content_type) == (200, "text/xml")
    root = ElementTree.fromstring(text.encode())
    assert root.findtext("Lists/node_0/Name") == "bell \ufffd and escape \ufffd"
