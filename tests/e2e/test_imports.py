"""Subscriber imports end to end: subscribers.import.post / .get over legacy HTTP, the background job, the streaming CLI."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from aiohttp import web
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from tests.conftest import ROOT, Api, System, User, free_port, grpc_metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")

V1 = "/api/v1/subscribers.import"


async def create_list(api: Api, user: User, name: str = "Imports") -> int:
    body = await api.call("list.create", user.api_key, SubscriberListName=name)
    assert body["Success"] is True, body
    list_id: int = body["ListID"]
    return list_id


async def create_field(api: Api, user: User, list_id: int, name: str, **settings: Any) -> int:
    body = await api.call(
        "customfield.create",
        user.api_key,
        SubscriberListID=list_id,
        FieldName=name,
        **{"FieldType": "Single line", **settings},
    )
    assert body["Success"] is True, body
    field_id: int = body["CustomFieldID"]
    return field_id


def import_params(user: User, list_id: Any, **csv: Any) -> dict[str, Any]:
    """A valid subscribers.import.post body; `csv` overrides ImportFrom.CSV entries (None removes one)."""
    source: dict[str, Any] = {
        "Data": "a@example.com\n",
        "FieldTerminator": ",",
        "EscapedBy": '"',
        "MappedFields": {"FIELD1": "EmailAddress"},
    }
    source.update(csv)
    return {
        "APIKey": user.api_key,
        "ListID": list_id,
        "AddToGlobalSuppressionList": False,
        "AddToSuppressionList": False,
        "UpdateDuplicates": False,
        "TriggerActions": False,
        "Tags": [],
        "ImportFrom": {"CSV": {k: v for k, v in source.items() if v is not None}},
    }


async def start_import(api: Api, body: dict[str, Any]) -> int:
    status, answer = await api.post(body, path=V1)
    assert status == 200 and answer.get("ImportType") == "async", answer
    import_id: int = answer["ImportID"]
    return import_id


async def import_job(api: Api, user: User, list_id: int, import_id: int) -> dict[str, Any]:
    status, _, text = await api.raw("GET", f"{V1}?APIKey={user.api_key}&ListID={list_id}&ImportID={import_id}")
    body = json.loads(text)
    assert status == 200 and body["Success"] is True, body
    job: dict[str, Any] = body["ImportJob"]
    return job


async def finished_job(api: Api, user: User, list_id: int, import_id: int, within: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        job = await import_job(api, user, list_id, import_id)
        if job["ImportStatus"] in ("Completed", "Failed") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.1)


async def post_code(api: Api, body: dict[str, Any]) -> Any:
    status, answer = await api.post({"Command": "subscribers.import.post", **body})
    assert status == 200 and answer["Success"] is False, answer
    assert answer["Errors"] == [
        {"Code": c, "Message": t} for c, t in zip(answer["ErrorCode"], answer["ErrorText"], strict=True)
    ]
    return answer["ErrorCode"]


def assert_totals_add_up(job: dict[str, Any]) -> None:
    assert job["TotalSubscribers"] == job["TotalImported"] + job["TotalDuplicates"] + job["TotalFailed"], job


@pytest_asyncio.fixture(loop_scope="session")
async def csv_server() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server whose /<name> answers files[name] (imports fetch their URL from it)."""
    files: dict[str, bytes] = {}

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            return web.Response(status=404)
        return web.Response(body=files[name], content_type="text/csv")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", files
    await runner.cleanup()


async def test_an_import_answers_at_once_and_its_job_reports_every_row(api: Api, user: User) -> None:
    list_id = await create_list(api, user)
    town = await create_field(api, user, list_id, "Town")
    data = "ann@example.com,Ann,Lee,Paris\nbo@Example.ORG,Bo,,\n"
    body = import_params(
        user,
        list_id,
        Data=data,
        MappedFields={"FIELD1": "EmailAddress", "FIELD2": "FirstName", "FIELD3": "LastName", "FIELD4": str(town)},
    )
    status, answer = await api.post(body, path=V1)
    assert status == 200
    assert answer == {"Success": True, "ErrorCode": 0, "ImportID": answer["ImportID"], "ImportType": "async"}
    job = await finished_job(api, user, list_id, answer["ImportID"])
    assert set(job) >= {
        "ImportID",
        "ImportDate",
        "FinishedAt",
        "ImportStatus",
        "FailedData",
        "TotalSubscribers",
        "TotalImported",
        "TotalDuplicates",
        "TotalFailed",
    }
    assert job["ImportStatus"] == "Completed" and job["FailureReason"] == ""
    assert (job["TotalSubscribers"], job["TotalImported"], job["TotalDuplicates"], job["TotalFailed"]) == (
        2,
        2,
        0,
        0,
    )
    assert len(job["ImportDate"]) == 19 and len(job["FinishedAt"]) == 19
    # The same job through /api.php, as a POST.
    again = await api.call("subscribers.import.get", user.api_key, ListID=list_id, ImportID=answer["ImportID"])
    assert set(again) == {"Success", "ErrorCode", "ImportJob"} and again["ImportJob"] == job
    got = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="bo@example.org")
    assert got["Success"] is True, got
    info = got["SubscriberInformation"]
    assert info["EmailAddress"] == "bo@example.org"


async def test_the_report_names_each_rejected_row_and_why(
    api: Api, user: User, csv_server: tuple[str, dict[str, bytes]]
) -> None:
    base_url, files = csv_server
    files["messy.csv"] = (
        b"ann@example.com,Ann\n"  # 1 imported
        b"not-an-address,Bad\n"  # 2 bad address
        b"ANN@example.com,Again\n"  # 3 duplicate of row 1 within the file
        b"caf\xe9@example.com,Enc\n"  # 4 not UTF-8
        b"short@example.com\n"  # 5 missing column
        b"long@example.com,a,b\n"  # 6 extra column
        b",Nobody\n"  # 7 no address
        b"zoe@example.com,Zoe\n"  # 8 imported
    )
    list_id = await create_list(api, user)
    body = import_params(
        user,
        list_id,
        Data=None,
        URL=f"{base_url}/messy.csv",
        MappedFields={"FIELD1": "EmailAddress", "FIELD2": "FirstName"},
    )
    job = await finished_job(api, user, list_id, await start_import(api, body))
    assert job["ImportStatus"] == "Completed", job
    assert (job["TotalSubscribers"], job["TotalImported"], job["TotalDuplicates"], job["TotalFailed"]) == (
        8,
        2,
        1,
        5,
    )
    assert_totals_add_up(job)
    failed = {row["RowNumber"]: row for row in job["FailedData"]}
    assert sorted(failed) == [2, 3, 4, 5, 6, 7]
    assert failed[2]["Reason"].startswith("invalid email address") and failed[2]["Data"] == "not-an-address,Bad\n"
    assert failed[3]["Reason"] == "duplicate: ANN@example.com is already in row 1 of the file"
    assert failed[4]["Reason"].startswith("not valid UTF-8") and "\\xe9" in failed[4]["Data"]
    assert failed[5]["Reason"] == "too few fields (1, expected 2)"
    assert failed[6]["Reason"] == "too many fields (3, expected 2)"
    assert failed[7]["Reason"] == "missing email address"


async def test_update_duplicates_updates_existing_subscribers_or_counts_them(api: Api, user: User) -> None:
    list_id = await create_list(api, user)
    # A column may name its field by alias (case-insensitively), as subscriber.create's CustomFields may.
    city = str(await create_field(api, user, list_id, "City", MergeTagAlias="City"))
    mapping = {"FIELD1": "EmailAddress", "FIELD2": "FirstName", "FIELD3": "city"}
    first = import_params(
        user, list_id, Data="a@example.com,Ann,Paris\nb@example.com,Bo,Rome\n", MappedFields=mapping
    )
    job = await finished_job(api, user, list_id, await start_import(api, first))
    assert (job["TotalImported"], job["TotalUpdated"], job["TotalDuplicates"]) == (2, 0, 0)

    data = "a@example.com,Annie,\nc@example.com,Cy,Oslo\n"
    skip = import_params(user, list_id, Data=data, MappedFields=mapping)
    job = await finished_job(api, user, list_id, await start_import(api, skip))
    assert (job["TotalSubscribers"], job["TotalImported"], job["TotalUpdated"], job["TotalDuplicates"]) == (
        2,
        1,
        0,
        1,
    )
    got = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="a@example.com")
    assert got["SubscriberInformation"]["FirstName"] == "Ann"

    update = {**import_params(user, list_id, Data=data, MappedFields=mapping), "UpdateDuplicates": "yes"}
    job = await finished_job(api, user, list_id, await start_import(api, update))
    assert (job["TotalSubscribers"], job["TotalImported"], job["TotalUpdated"], job["TotalDuplicates"]) == (
        2,
        2,
        2,
        0,
    )
    got = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="a@example.com")
    info = got["SubscriberInformation"]
    # Names and custom fields are updated; an empty value keeps what the subscriber had.
    assert info["FirstName"] == "Annie" and info["CustomFields"] == {city: "Paris"}, info
    got = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="c@example.com")
    assert got["SubscriberInformation"]["CustomFields"] == {city: "Oslo"}


async def test_suppression_flags_put_the_imported_addresses_on_the_suppression_list(api: Api, user: User) -> None:
    list_id = await create_list(api, user)
    body = {**import_params(user, list_id, Data="s@example.com\n"), "AddToSuppressionList": True}
    job = await finished_job(api, user, list_id, await start_import(api, body))
    assert job["TotalImported"] == 1
    got = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="s@example.com")
    assert got["Suppressed"] is True, got


async def test_progress_shows_while_a_big_import_runs(api: Api, user: User) -> None:
    list_id = await create_list(api, user)
    rows = 160_000
    data = "".join(f"p{i}@example.com\n" for i in range(rows))
    import_id = await start_import(api, import_params(user, list_id, Data=data))
    seen: list[tuple[str, int]] = []
    # The command allows 100 requests a minute per user: at most 96 polls in 48 s, however slow the machine.
    deadline = time.monotonic() + 48
    while time.monotonic() < deadline:
        job = await import_job(api, user, list_id, import_id)
        seen.append((job["ImportStatus"], job["TotalSubscribers"]))
        assert_totals_add_up(job)
        if job["ImportStatus"] == "Completed":
            break
        await asyncio.sleep(0.5)
    assert seen[-1] == ("Completed", rows)
    counts = [count for _, count in seen]
    assert counts == sorted(counts)
    assert any(status == "Running" and 0 < count < rows for status, count in seen), seen[:50]


async def test_import_post_error_codes(api: Api, user: User, make_user: Any) -> None:
    list_id = await create_list(api, user)
    valid = import_params(user, list_id)

    def without(*names: str) -> dict[str, Any]:
        return {k: v for k, v in valid.items() if k not in names}

    def csv(**changes: Any) -> dict[str, Any]:
        return import_params(user, list_id, **changes)

    assert await post_code(api, without("ListID")) == [1]
    assert await post_code(api, csv(FieldTerminator=None)) == [2]
    assert await post_code(api, csv(FieldTerminator=";;")) == [2]
    assert await post_code(api, without("AddToGlobalSuppressionList")) == [4]
    assert await post_code(api, without("AddToSuppressionList")) == [5]
    assert await post_code(api, without("UpdateDuplicates")) == [6]
    assert await post_code(api, without("TriggerActions")) == [7]
    assert await post_code(api, csv(MappedFields=None)) == [8]
    assert await post_code(api, {**valid, "AddToGlobalSuppressionList": "maybe"}) == [9]
    assert await post_code(api, {**valid, "AddToSuppressionList": {"x": 1}}) == [10]
    assert await post_code(api, {**valid, "UpdateDuplicates": 2}) == [11]
    assert await post_code(api, {**valid, "TriggerActions": "sometimes"}) == [12]
    assert await post_code(api, csv(MappedFields=42)) == [13]
    assert await post_code(api, csv(Data=None)) == [14]
    assert await post_code(api, csv(URL="http://127.0.0.1:1/x.csv")) == [14]  # URL and Data: one of them
    assert await post_code(api, csv(MappedFields={"FIELD1": "FirstName"})) == [15]
    assert await post_code(api, csv(EscapedBy=None)) == [16]
    assert await post_code(api, csv(MappedFields={"email": "EmailAddress"})) == [17]
    assert await post_code(api, csv(Data=None, URL=f"http://127.0.0.1:{free_port()}/gone.csv")) == [18]
    assert await post_code(api, csv(Data=None, URL="ftp://example.com/list.csv")) == [18]
    assert await post_code(api, {**valid, "ListID": 999_999_999}) == [19]
    assert await post_code(api, {**valid, "ListID": "abc"}) == [20]
    assert await post_code(api, without("Tags")) == [21]
    # Several problems at once are all named, in order.
    assert await post_code(api, {"APIKey": user.api_key}) == [1, 2, 4, 5, 6, 7, 8, 14, 16, 21]
    # Another user's list is not found; a key without Subscribers.Import is refused.
    other = await make_user()
    assert await post_code(api, {**valid, "APIKey": other.api_key}) == [19]
    weak = await make_user(permissions=["List.Create"])
    status, answer = await api.post({**valid, "APIKey": weak.api_key}, path=V1)
    assert status == 200 and answer["ErrorCode"] == 99999 and answer["Errors"][0]["Code"] == 99999


async def test_settings_herald_does_not_implement_are_refused(api: Api, user: User) -> None:
    """Issue 14: TriggerActions true and tag names promise behaviour Herald does not have; they are refused with
    their parameters' codes and a text that says so, and no import starts."""
    list_id = await create_list(api, user)
    valid = import_params(user, list_id)
    for changes, code, text in (
        ({"TriggerActions": True}, 12, "TriggerActions is not supported"),
        ({"Tags": ["vip"]}, 21, "Tags is not supported"),
        ({"Tags": "vip,new"}, 21, "Tags is not supported"),
    ):
        status, answer = await api.post({"Command": "subscribers.import.post", **valid, **changes})
        assert status == 200 and answer["ErrorCode"] == [code], answer
        assert answer["ErrorText"][0].startswith(text), answer
    both = {**valid, "TriggerActions": "yes", "Tags": ["vip"]}
    assert await post_code(api, both) == [12, 21]
    # The defaults, and blank tags, still import.
    assert await start_import(api, {**valid, "Tags": ""}) > 0


async def test_import_get_error_codes(api: Api, user: User, make_user: Any) -> None:
    list_id = await create_list(api, user)
    other_list = await create_list(api, user, "Other")
    import_id = await start_import(api, import_params(user, list_id))

    async def code(**params: Any) -> Any:
        status, _, text = await api.raw("GET", V1, params={"APIKey": user.api_key, **params})
        body = json.loads(text)
        assert status == 200 and body["Success"] is False, body
        assert [e["Code"] for e in body["Errors"]] == (
            body["ErrorCode"] if isinstance(body["ErrorCode"], list) else [body["ErrorCode"]]
        )
        return body["ErrorCode"]

    assert await code(ImportID=import_id) == [1]
    assert await code(ListID=list_id) == [2]
    assert await code() == [1, 2]
    assert await code(ListID="x", ImportID=import_id) == [3]
    assert await code(ListID=list_id, ImportID="x") == [4]
    assert await code(ListID=999_999_999, ImportID=import_id) == 5
    assert await code(ListID=other_list, ImportID=import_id) == 6
    assert await code(ListID=list_id, ImportID=999_999_999) == 7
    # Another user sees neither the list nor the import.
    stranger = await make_user()
    stranger_list = await create_list(api, stranger)
    status, body = await api.post(
        {"Command": "subscribers.import.get", "APIKey": stranger.api_key, "ListID": list_id, "ImportID": import_id}
    )
    assert body["ErrorCode"] == 5
    status, body = await api.post(
        {
            "Command": "subscribers.import.get",
            "APIKey": stranger.api_key,
            "ListID": stranger_list,
            "ImportID": import_id,
        }
    )
    assert body["ErrorCode"] == 7
    # GET serves only the import status: other commands still answer 100001.
    status, _, text = await api.raw("GET", f"/api.php?Command=list.get&APIKey={user.api_key}&ListID={list_id}")
    assert status == 400 and json.loads(text)["ErrorCode"] == 100001


async def test_import_commands_are_rate_limited_per_key(api: Api, make_user: Any) -> None:
    user = await make_user()
    for _ in range(100):
        status, _, _ = await api.raw("GET", V1, params={"APIKey": user.api_key})
        assert status == 200
    status, _, text = await api.raw("GET", V1, params={"APIKey": user.api_key})
    body = json.loads(text)
    assert status == 429 and body["ErrorCode"] == 429 and body["Errors"][0]["Code"] == 429


async def test_the_cli_streams_a_file_and_prints_the_report(
    api: Api, user: User, system: System, tmp_path: Path
) -> None:
    list_id = await create_list(api, user)
    # The header's other columns name custom fields of the list (by ID or alias).
    await create_field(api, user, list_id, "Plan", MergeTagAlias="plan")
    rows = 20_000
    lines = ["Email,First Name,last_name,Plan"] + [f"c{i}@example.com,F{i},L{i},gold" for i in range(rows)]
    lines += ["broken,x,y,z", "c7@example.com,again,x,y"]
    path = tmp_path / "subscribers.csv"
    path.write_text("\n".join(lines) + "\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "subscribers",
        "import",
        "--list",
        str(list_id),
        str(path),
        env={**system.env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["Status"] == "Completed" and report["ListID"] == list_id
    assert (report["TotalRows"], report["Imported"], report["Duplicates"], report["Rejected"]) == (
        rows + 2,
        rows,
        1,
        1,
    )
    assert [(r["RowNumber"], r["Reason"].split(":")[0]) for r in report["RejectedRows"]] == [
        (rows + 2, "invalid email address"),
        (rows + 3, "duplicate"),
    ]
    assert "100.0%" in err.decode()
    got = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="c42@example.com")
    info = got["SubscriberInformation"]
    assert (info["FirstName"], info["LastName"]) == ("F42", "L42")
    # The import is the list owner's, though the CLI acts as an admin.
    job = await import_job(api, user, list_id, report["ImportID"])
    assert job["TotalImported"] == rows


async def test_a_streamed_import_into_another_users_list_is_refused(
    system: System, api: Api, user: User, make_user: Any
) -> None:
    list_id = await create_list(api, user)
    stranger = await make_user()

    async def requests() -> AsyncIterator[audience_pb2.StreamImportRequest]:
        yield audience_pb2.StreamImportRequest(list_id=list_id, format=audience_pb2.CsvFormat(header=True))
        yield audience_pb2.StreamImportRequest(chunk=b"email\nx@example.com\n")

    async with grpc.aio.insecure_channel(system.grpc_target("audience")) as channel:
        stub = audience_pb2_grpc.AudienceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.StreamImport(requests(), metadata=grpc_metadata(system, stranger.user_id))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        done = await stub.StreamImport(requests(), metadata=grpc_metadata(system, user.user_id))
        assert done.status == audience_pb2.IMPORT_STATUS_COMPLETED and done.imported == 1


async def test_a_job_abandoned_by_a_dead_worker_is_resumed_after_its_last_batch(
    api: Api, user: User, system: System
) -> None:
    list_id = await create_list(api, user)
    data = b"email,first_name\na@example.com,A\nb@example.com,B\nc@example.com,C\nA@example.com,again\nd@example.com,D\n"
    fmt = {"field_terminator": ",", "field_encloser": '"', "escaped_by": "", "header": True, "mapped_fields": []}
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        # What a worker that died after its first batch (rows 1-3) left behind.
        await conn.execute(
            "INSERT INTO audience.subscribers (list_id, owner_user_id, email_address, email_key, first_name, source) "
            "VALUES (%(l)s, %(o)s, 'a@example.com', 'a@example.com', 'A', 'CSVImport'), "
            "(%(l)s, %(o)s, 'b@example.com', 'b@example.com', 'B', 'CSVImport')",
            {"l": list_id, "o": user.user_id},
        )
        cursor = await conn.execute(
            "INSERT INTO audience.imports (list_id, owner_user_id, status, origin, format, claimed_by, "
            "heartbeat_at, attempts, started_at, total_rows, imported, rows_done) VALUES (%(l)s, %(o)s, "
            "'Running', 'stored', %(f)s, 'dead-worker', now() - interval '1 hour', 1, now(), 2, 2, 3) "
            "RETURNING import_id",
            {"l": list_id, "o": user.user_id, "f": json.dumps(fmt)},
        )
        row = await cursor.fetchone()
        assert row is not None
        import_id = row[0]
        await conn.execute(
            "INSERT INTO audience.import_sources (import_id, seq, data) VALUES (%s, 0, %s)", (import_id, data)
        )
    job = await finished_job(api, user, list_id, import_id, within=15)
    assert job["ImportStatus"] == "Completed", job
    # Rows 4-6: c and d are new, row 5 repeats row 2's address (written by the dead worker).
    assert (job["TotalSubscribers"], job["TotalImported"], job["TotalDuplicates"], job["TotalFailed"]) == (
        5,
        4,
        1,
        0,
    )
    assert [(r["RowNumber"], r["Reason"]) for r in job["FailedData"]] == [
        (5, "duplicate: A@example.com is already in row 2 of the file")
    ]
    metadata = grpc_metadata(system, user.user_id)
    async with grpc.aio.insecure_channel(system.grpc_target("audience")) as channel:
        stub = audience_pb2_grpc.AudienceServiceStub(channel)
        listed = await stub.ListSubscribers(
            audience_pb2.ListSubscribersRequest(list_id=list_id), metadata=metadata
        )
    assert sorted(s.email_address for s in listed.subscribers) == [f"{c}@example.com" for c in "abcd"]


async def test_each_rows_custom_values_are_checked_like_subscriber_create_enforces_them(
    api: Api, user: User, make_user: Any
) -> None:
    list_id = await create_list(api, user)
    company = await create_field(api, user, list_id, "Company", IsRequired="Yes")
    code = await create_field(api, user, list_id, "Code", IsUnique="Yes", ValidationMethod="Numbers")
    plan = await create_field(api, user, list_id, "Plan", FieldType="Drop down", OptionLabel=["basic", "pro"])
    city = await create_field(api, user, list_id, "City", DefaultValue="Berlin")
    holder = await api.call(
        "subscriber.create",
        user.api_key,
        ListID=list_id,
        EmailAddress="holder@example.com",
        SubscriptionDate="2025-01-02",
        SubscriptionIP="203.0.113.5",
        CustomFields={str(company): "Acme", str(code): "12"},
    )
    assert holder["Success"] is True, holder
    mapping = {"FIELD1": "EmailAddress", "FIELD2": str(company), "FIELD3": f"CustomField{code}", "FIELD4": "Plan"}
    # "Plan" is no field's ID or alias: the import is refused before it starts.
    body = import_params(user, list_id, Data="a@example.com,Acme,1,pro\n", MappedFields=mapping)
    assert await post_code(api, body) == [17]
    _status, answer = await api.post(body, path=V1)
    assert "'Plan' names no custom field" in answer["Errors"][0]["Message"], answer
    # Company is required: an import that maps no column to it could add nobody.
    only_code = {"FIELD1": "EmailAddress", "FIELD2": str(code)}
    _status, answer = await api.post(import_params(user, list_id, MappedFields=only_code), path=V1)
    assert answer["Errors"][0]["Code"] == 17 and "is required and no column" in answer["Errors"][0]["Message"]
    # Another user's field is no field of this list.
    stranger = await make_user()
    theirs = await create_field(api, stranger, await create_list(api, stranger), "Theirs")
    body = import_params(user, list_id, MappedFields={**mapping, "FIELD4": str(theirs)})
    assert await post_code(api, body) == [17]

    mapping["FIELD4"] = str(plan)
    data = (
        "ok@example.com,Acme,7,pro\n"  # 1 imported, gets City's default
        "empty@example.com, ,8,basic\n"  # 2 required Company empty
        "letters@example.com,Acme,x9,basic\n"  # 3 Code fails its validation (Numbers)
        "gold@example.com,Acme,10,gold\n"  # 4 not one of Plan's options
        "taken@example.com,Acme, 12 ,basic\n"  # 5 Code 12 is the holder's
        "twin@example.com,Acme,7,basic\n"  # 6 Code 7 is row 1's
        "HOLDER@example.com,Acme,12,pro\n"  # 7 the holder itself keeps its own value: a duplicate
        "plain@example.com,Acme,,\n"  # 8 optional values may be empty
    )
    job = await finished_job(
        api, user, list_id, await start_import(api, import_params(user, list_id, Data=data, MappedFields=mapping))
    )
    assert job["ImportStatus"] == "Completed", job
    assert (job["TotalSubscribers"], job["TotalImported"], job["TotalDuplicates"], job["TotalFailed"]) == (
        8,
        2,
        1,
        5,
    )
    assert_totals_add_up(job)
    failed = {row["RowNumber"]: row["Reason"] for row in job["FailedData"]}
    assert failed == {
        2: f"custom field {company} (Company) is required",
        3: f"custom field {code} (Code) failed its validation (Numbers)",
        4: f"custom field {plan} (Plan) cannot hold that value: one of 'basic', 'pro'",
        5: f"custom field {code} (Code) must be unique: another subscriber has that value",
        6: f"custom field {code} (Code) must be unique: row 1 of the file has that value",
    }, failed
    assert job["FailedData"][0]["Data"] == "empty@example.com, ,8,basic\n"
    info = (await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="ok@example.com"))[
        "SubscriberInformation"
    ]
    # Values are stored under the field's ID, and a new subscriber gets the list fields' defaults.
    assert info["CustomFields"] == {str(company): "Acme", str(code): "7", str(plan): "pro", str(city): "Berlin"}
    for address in ("empty@example.com", "taken@example.com", "twin@example.com"):
        got = await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress=address)
        assert got["Success"] is False, got

    # Updating duplicates: the holder may keep its own unique value.
    update = {
        **import_params(user, list_id, Data="holder@example.com,Acme Ltd,12,basic\n", MappedFields=mapping),
        "UpdateDuplicates": True,
    }
    job = await finished_job(api, user, list_id, await start_import(api, update))
    assert (job["TotalImported"], job["TotalUpdated"], job["TotalFailed"]) == (1, 1, 0), job
    info = (await api.call("subscriber.get", user.api_key, ListID=list_id, EmailAddress="holder@example.com"))[
        "SubscriberInformation"
    ]
    assert info["CustomFields"] == {
        str(company): "Acme Ltd",
        str(code): "12",
        str(plan): "basic",
        str(city): "Berlin",
    }


@pytest_asyncio.fixture(loop_scope="session")
async def status_receiver() -> AsyncIterator[tuple[str, list[tuple[str, Any]], list[int]]]:
    """A local HTTP server recording every POST to /<name> as (name, JSON body); it answers the statuses queued
    in the third element first (then 204), so a test can make it fail."""
    received: list[tuple[str, Any]] = []
    answers: list[int] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((request.match_info["name"], await request.json()))
        return web.Response(status=answers.pop(0) if answers else 204)

    app = web.Application()
    app.router.add_post("/{name}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", received, answers
    await runner.cleanup()


async def notices_to(received: list[tuple[str, Any]], name: str, count: int, within: float = 20) -> list[Any]:
    deadline = time.monotonic() + within
    while True:
        notices = [body for got, body in received if got == name]
        if len(notices) >= count or time.monotonic() > deadline:
            return notices
        await asyncio.sleep(0.05)


async def test_a_finished_import_posts_its_status_to_the_webhook_url(
    api: Api, user: User, status_receiver: tuple[str, list[tuple[str, Any]], list[int]]
) -> None:
    """ImportStatusUpdateWebhookURL: the finished import's status is POSTed there as JSON, with the counts
    subscribers.import.get reports; a server error is retried, and the import stands whatever the answer."""
    base, received, answers = status_receiver
    list_id = await create_list(api, user)
    data = "ann@example.com\nnot-an-address\nann@example.com\nbo@example.com\n"
    body = {**import_params(user, list_id, Data=data), "ImportStatusUpdateWebhookURL": f"{base}/done"}
    answers.append(503)  # the first attempt fails: the notice is sent again
    import_id = await start_import(api, body)
    job = await finished_job(api, user, list_id, import_id)
    assert job["ImportStatus"] == "Completed", job
    first, second = await notices_to(received, "done", 2)
    assert (
        first
        == second
        == {
            "ImportID": import_id,
            "ListID": list_id,
            "ImportStatus": "Completed",
            "FinishedAt": job["FinishedAt"],
            "TotalSubscribers": 4,
            "TotalImported": 2,
            "TotalUpdated": 0,
            "TotalDuplicates": 1,
            "TotalFailed": 1,
            "FailureReason": "",
        }
    )
    # Delivered on the second attempt: nothing more comes.
    await asyncio.sleep(1.5)
    assert len(await notices_to(received, "done", 2, within=0)) == 2
    # A receiver that keeps failing is tried three times in all, and the import stands.
    answers.extend([500, 500, 500, 500])
    again = await start_import(
        api,
        {**import_params(user, list_id, Data="dee@example.com\n"), "ImportStatusUpdateWebhookURL": f"{base}/down"},
    )
    assert (await finished_job(api, user, list_id, again))["ImportStatus"] == "Completed"
    notices = await notices_to(received, "down", 3)
    assert [notice["ImportID"] for notice in notices] == [again] * 3
    await asyncio.sleep(5)  # past the last backoff: no fourth attempt
    assert len(await notices_to(received, "down", 3, within=0)) == 3
    answers.clear()
    # Without the parameter nothing is posted.
    before = len(received)
    quiet = await start_import(api, import_params(user, list_id, Data="cy@example.com\n"))
    assert (await finished_job(api, user, list_id, quiet))["ImportStatus"] == "Completed"
    await asyncio.sleep(0.5)
    assert len(received) == before


async def test_a_webhook_url_herald_cannot_notify_is_refused_with_22(api: Api, user: User) -> None:
    list_id = await create_list(api, user)
    valid = import_params(user, list_id)
    for url in ("ftp://example.com/x", "not a url", "/relative/path", "http://user:pw@example.com/x", "x" * 5000):
        status, answer = await api.post(
            {"Command": "subscribers.import.post", **valid, "ImportStatusUpdateWebhookURL": url}
        )
        assert status == 200 and answer["ErrorCode"] == [22], (url, answer)
        assert answer["Errors"][0]["Code"] == 22
    # Nothing was stored for the refused calls; an empty URL is no webhook.
    assert await start_import(api, {**valid, "ImportStatusUpdateWebhookURL": ""}) > 0
