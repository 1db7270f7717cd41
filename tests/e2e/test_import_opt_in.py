"""Imports into a double opt-in list end to end: subscribers.import.post → Opt-In Pending subscribers → one
confirmation email each over real SMTP (the `delivery_system` Herald and its recorder) → the confirm link."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import json_format
from herald.audience.v1 import audience_pb2, audience_pb2_grpc

from services.common import events
from services.common.natsutil import Subjects
from tests.conftest import grpc_metadata
from tests.e2e.delivery_helpers import DeliveryHerald, new_domain, ok
from tests.e2e.test_double_opt_in import double_list, info_of, links_in, opened

pytestmark = pytest.mark.asyncio(loop_scope="session")

V1 = "/api/v1/subscribers.import"


def import_body(api_key: str, list_id: int, data: str, **flags: Any) -> dict[str, Any]:
    return {
        "APIKey": api_key,
        "ListID": list_id,
        "AddToGlobalSuppressionList": False,
        "AddToSuppressionList": False,
        "UpdateDuplicates": False,
        "TriggerActions": False,
        "Tags": [],
        "ImportFrom": {
            "CSV": {
                "Data": data,
                "FieldTerminator": ",",
                "EscapedBy": '"',
                "MappedFields": {"FIELD1": "EmailAddress", "FIELD2": "FirstName"},
            }
        },
        **flags,
    }


async def finished_job(herald: DeliveryHerald, api_key: str, list_id: int, import_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body = await ok(herald.api, "subscribers.import.get", api_key, ListID=list_id, ImportID=import_id)
        job: dict[str, Any] = body["ImportJob"]
        if job["ImportStatus"] in ("Completed", "Failed") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.1)


async def test_an_import_into_a_double_opt_in_list_sends_each_new_subscriber_one_confirmation(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    # Already on the list (Subscribed): the import counts it as a duplicate and sends it nothing.
    await ok(
        herald.api,
        "subscriber.create",
        user.api_key,
        ListID=list_id,
        EmailAddress=f"old@{domain}",
        SubscriptionDate="2025-01-02",
        SubscriptionIP="203.0.113.9",
        OptInDate="2025-01-02",
    )
    new = [f"ann@{domain}", f"bo@{domain}", f"cy@{domain}"]
    data = f"{new[0]},Ann\n{new[1]},Bo\nANN@{domain},Again\nnot-an-address,X\nold@{domain},Old\n{new[2]},Cy\n"
    status, answer = await herald.api.post(import_body(user.api_key, list_id, data), path=V1)
    assert status == 200 and answer["ImportType"] == "async", answer
    job = await finished_job(herald, user.api_key, list_id, answer["ImportID"])
    assert job["ImportStatus"] == "Completed", job
    assert (job["TotalSubscribers"], job["TotalImported"], job["TotalDuplicates"], job["TotalFailed"]) == (
        6,
        3,
        2,
        1,
    )
    for address in new:
        info = await info_of(herald, user.api_key, list_id, address)
        assert info["SubscriberInformation"]["SubscriptionStatus"] == "Opt-In Pending", info

    assert await herald.recorder.wait_for(domain, 3, within=30) >= 3
    await asyncio.sleep(2)  # anything more (a second email, one to the old subscriber) would have come by now
    counts = herald.recorder.counts(domain)
    assert counts == {address: 1 for address in new}, counts
    [ann] = [m for m in herald.recorder.messages_to(domain) if m.recipient.lower() == new[0]]
    assert ann.header("Subject") == f"Please confirm your subscription, {new[0]}"
    links = links_in(ann.text())
    assert set(links) == {"confirm", "reject"}, ann.text()

    status, page = await opened(herald, links["confirm"])
    assert status == 200 and "confirmed" in page, page
    info = await info_of(herald, user.api_key, list_id, new[0])
    assert info["SubscriberInformation"]["SubscriptionStatus"] == "Subscribed"
    info = await info_of(herald, user.api_key, list_id, new[1])
    assert info["SubscriberInformation"]["SubscriptionStatus"] == "Opt-In Pending"

    # The import asked for Bo's confirmation just now: the form sent again within the hour sends nothing more.
    status, again = await herald.api.post(
        {"Command": "subscriber.subscribe", "ListID": list_id, "EmailAddress": new[1], "IPAddress": "198.51.100.7"}
    )
    assert status == 200 and again["ErrorCode"] == 9, again
    # Importing the same file again adds nobody and sends nothing more.
    status, answer = await herald.api.post(import_body(user.api_key, list_id, data), path=V1)
    job = await finished_job(herald, user.api_key, list_id, answer["ImportID"])
    assert (job["TotalImported"], job["TotalDuplicates"], job["TotalFailed"]) == (0, 5, 1), job
    await asyncio.sleep(2)
    assert herald.recorder.counts(domain) == counts


async def test_a_streamed_import_into_a_double_opt_in_list_sends_the_confirmations_too(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    rows = 450  # more than one delivery batch (HERALD_DELIVERY_BATCH_SIZE)
    csv = "email\n" + "".join(f"s{i}@{domain}\n" for i in range(rows))

    async def requests() -> Any:
        yield audience_pb2.StreamImportRequest(list_id=list_id, format=audience_pb2.CsvFormat(header=True))
        yield audience_pb2.StreamImportRequest(chunk=csv.encode())

    async with grpc.aio.insecure_channel(herald.system.grpc_target("audience")) as channel:
        stub = audience_pb2_grpc.AudienceServiceStub(channel)
        done = await stub.StreamImport(requests(), metadata=grpc_metadata(herald.system, user.user_id))
    assert done.status == audience_pb2.IMPORT_STATUS_COMPLETED and done.imported == rows
    assert await herald.recorder.wait_for(domain, rows, within=60) >= rows
    await asyncio.sleep(2)
    counts = herald.recorder.counts(domain)
    assert len(counts) == rows and set(counts.values()) == {1}


async def test_an_import_a_double_opt_in_list_cannot_honour_is_refused(delivery_system: DeliveryHerald) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    # Suppressed addresses could not be sent their confirmation email.
    for flag in ("AddToSuppressionList", "AddToGlobalSuppressionList"):
        body = import_body(user.api_key, list_id, f"a@{domain},A\n", **{flag: True})
        _status, answer = await herald.api.post(body, path=V1)
        assert answer["Success"] is False and answer["Errors"][0]["Code"] == 10, answer
        assert "double opt-in" in answer["Errors"][0]["Message"]
    # A double opt-in list without a confirmation email (gRPC's CreateList allows one) has nothing to send.
    async with grpc.aio.insecure_channel(herald.system.grpc_target("audience")) as channel:
        stub = audience_pb2_grpc.AudienceServiceStub(channel)
        created = await stub.CreateList(
            audience_pb2.CreateListRequest(name="Bare double", opt_in_mode=audience_pb2.OPT_IN_MODE_DOUBLE),
            metadata=grpc_metadata(herald.system, user.user_id),
        )
        bare = created.list_id

        async def requests() -> Any:
            yield audience_pb2.StreamImportRequest(list_id=bare, format=audience_pb2.CsvFormat(header=True))
            yield audience_pb2.StreamImportRequest(chunk=f"email\nb@{domain}\n".encode())

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.StreamImport(requests(), metadata=grpc_metadata(herald.system, user.user_id))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no confirmation email" in (refused.value.details() or "")
    _status, answer = await herald.api.post(import_body(user.api_key, bare, f"b@{domain},B\n"), path=V1)
    assert answer["Success"] is False and answer["Errors"][0]["Code"] == 20, answer
    assert "no confirmation email" in answer["Errors"][0]["Message"]
    got = await herald.api.call("subscriber.get", user.api_key, ListID=bare, EmailAddress=f"b@{domain}")
    assert got["Success"] is False and got["ErrorCode"] == 3, got
    await asyncio.sleep(1)
    assert herald.recorder.messages_to(domain) == []


async def test_an_unsigned_bulk_confirmation_request_on_nats_sends_nothing(
    delivery_system: DeliveryHerald,
) -> None:
    """Only audience signs an import's confirmation requests: one published by anyone else mails nobody."""
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    email_id = (await ok(herald.api, "list.get", user.api_key, ListID=list_id))["List"]["OptInConfirmationEmailID"]
    domain = new_domain()
    forged = audience_pb2.OptInConfirmationsRequestedEvent(
        owner_user_id=user.user_id,
        list_id=list_id,
        email_id=email_id,
        import_id=1,
        recipients=[
            audience_pb2.OptInConfirmationsRequestedEvent.Recipient(
                subscriber_id=n, email_address=f"victim{n}@{domain}"
            )
            for n in (1, 2)
        ],
    )
    forged.request_time.GetCurrentTime()
    payload = json.dumps(json_format.MessageToDict(forged, preserving_proto_field_name=True)).encode()
    client = await nats.connect(herald.nats.url)
    try:
        subjects = Subjects(herald.system.env["HERALD_NATS_NAMESPACE"])
        await client.jetstream().publish(subjects.event(events.OPT_IN_CONFIRMATIONS_REQUESTED), payload)
    finally:
        await client.close()
    # A real import's requests after it are sent, so the forged one was consumed (and refused) by then.
    real = new_domain()
    status, answer = await herald.api.post(import_body(user.api_key, list_id, f"real@{real},Real\n"), path=V1)
    assert status == 200, answer
    await herald.recorder.wait_for(real, 1, within=30)
    await asyncio.sleep(1)
    assert herald.recorder.messages_to(domain) == []
