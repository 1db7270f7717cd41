"""The local mail capture of `herald run` (no SMTP_URL): real SMTP in, rows in delivery.captured_messages, the /mail pages out.

Also the SMTP connection pool the workers send with, against the same capture: every message
arrives, over as few sessions as the pool allows.
"""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import grpc
import psycopg
import pytest
import pytest_asyncio
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.grpcutil import decode_error
from services.delivery.smtp import SmtpConnectionPool, SmtpTarget
from tests.conftest import Api, System, grpc_metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")

HOSTILE_SUBJECT = '<script>alert("subject")</script> & <b>bold</b>'
HOSTILE_HTML = (
    '<html><body><h1 id="greeting">Hello &amp; welcome</h1>'
    "<script>document.title='pwned'</script>"
    '<img src="x" onerror="alert(1)"><p>"quoted" text</p></body></html>'
)


@pytest_asyncio.fixture(loop_scope="session")
async def sql(system: System) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        yield conn


def campaign_message(sender: str, recipient: str, subject: str, message_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = "<https://herald.example/t/u/token123>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content("Hello in plain text.\nSecond line with <angle> brackets.")
    message.add_alternative(HOSTILE_HTML, subtype="html")
    return message


async def captured_ids(sql: psycopg.AsyncConnection[tuple[object, ...]], sender: str) -> list[int]:
    cursor = await sql.execute(
        "SELECT captured_message_id FROM delivery.captured_messages WHERE envelope_from = %s "
        "ORDER BY captured_message_id",
        (sender,),
    )
    return [int(str(row[0])) for row in await cursor.fetchall()]


async def test_a_message_sent_over_smtp_is_listed_and_rendered_with_everything_escaped(
    system: System, api: Api, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    sender = f"news-{uuid.uuid4().hex[:8]}@sender.example"
    recipient = "reader@example.org"
    message_id = make_msgid(domain="herald.test")
    await aiosmtplib.send(
        campaign_message(sender, recipient, HOSTILE_SUBJECT, message_id),
        hostname="127.0.0.1",
        port=system.smtp_capture_port,
        start_tls=False,
    )
    [captured_id] = await captured_ids(sql, sender)

    status, content_type, listing = await api.raw("GET", "/mail")
    assert (status, content_type) == (200, "text/html")
    assert f'href="/mail/{captured_id}"' in listing
    assert html.escape(HOSTILE_SUBJECT) in listing
    assert "<script>" not in listing
    assert html.escape(sender) in listing and recipient in listing

    async with api.session.get(f"{system.base_url}/mail/{captured_id}") as response:
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "<script>" not in page
    assert f"<h1>{html.escape(HOSTILE_SUBJECT)}</h1>" in page
    assert html.escape(message_id) in page
    assert "List-Unsubscribe" in page and "https://herald.example/t/u/token123" in page
    assert "List-Unsubscribe=One-Click" in page
    # The HTML part is inside a sandboxed srcdoc frame, escaped once so the browser restores it there.
    frame = re.search(r'<iframe [^>]*sandbox="([^"]*)"[^>]*srcdoc="([^"]*)"', page)
    assert frame is not None
    assert "allow-scripts" not in frame.group(1) and "allow-same-origin" not in frame.group(1)
    assert html.unescape(frame.group(2)).strip() == HOSTILE_HTML
    assert html.escape("Second line with <angle> brackets.") in page

    status, content_type, raw = await api.raw("GET", f"/mail/{captured_id}/raw")
    assert (status, content_type) == (200, "text/plain")
    assert f"Message-ID: {message_id}" in raw


async def test_unknown_and_malformed_message_ids_are_404(api: Api) -> None:
    for path in ("/mail/999999999999", "/mail/0", "/mail/abc", "/mail/-1", "/mail/99999999999999999999"):
        status, content_type, _ = await api.raw("GET", path)
        assert (status, content_type) == (404, "text/html"), path
    status, _, _ = await api.raw("GET", "/mail?page_token=not-a-token")
    assert status == 404


async def test_the_listing_is_newest_first_and_pages(
    system: System, api: Api, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    sender = f"pages-{uuid.uuid4().hex[:8]}@sender.example"
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=system.smtp_capture_port, start_tls=False) as client:
        for number in range(3):
            message = campaign_message(
                sender, f"r{number}@example.org", f"Paging {sender} #{number}", make_msgid()
            )
            await client.send_message(message)
    ids = await captured_ids(sql, sender)
    assert len(ids) == 3
    _, _, listing = await api.raw("GET", "/mail")
    positions = [listing.index(f"Paging {sender} #{number}") for number in range(3)]
    assert positions[2] < positions[1] < positions[0]

    # Through the API: pages of one, newest first, every message exactly once.
    metadata = grpc_metadata(system, 0, is_admin=True)
    async with grpc.aio.insecure_channel(system.grpc_target("delivery")) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        seen: list[int] = []
        token = ""
        for _ in range(3):
            page = await stub.ListCapturedMessages(
                delivery_pb2.ListCapturedMessagesRequest(page_size=1, page_token=token), metadata=metadata
            )
            seen += [m.captured_message_id for m in page.captured_messages]
            token = page.next_page_token
            assert page.total_size >= 3
        assert seen == sorted(seen, reverse=True) and len(set(seen)) == 3
        assert seen[0] >= max(ids)


async def test_only_an_admin_may_read_the_capture(system: System) -> None:
    async with grpc.aio.insecure_channel(system.grpc_target("delivery")) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        for call, request in (
            (stub.ListCapturedMessages, delivery_pb2.ListCapturedMessagesRequest()),
            (stub.GetCapturedMessage, delivery_pb2.GetCapturedMessageRequest(captured_message_id=1)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request, metadata=grpc_metadata(system, 12345))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            failure = decode_error(caught.value)
            assert (failure.reason, failure.metadata["requires"]) == ("PERMISSION_DENIED", "admin")


async def test_the_pool_sends_200_messages_over_4_reused_sessions(
    system: System, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    sender = f"pool-{uuid.uuid4().hex[:8]}@sender.example"
    target = SmtpTarget("127.0.0.1", system.smtp_capture_port)
    async with SmtpConnectionPool(target, size=4, max_messages_per_connection=1000) as pool:
        replies = await asyncio.gather(
            *(
                pool.send(
                    sender,
                    f"reader{number}@example.org",
                    campaign_message(sender, f"reader{number}@example.org", f"#{number}", make_msgid()).as_bytes(),
                )
                for number in range(200)
            )
        )
        assert pool.connections_opened == 4
    assert {reply.code for reply in replies} == {250}
    cursor = await sql.execute(
        "SELECT count(*), count(DISTINCT session_id), count(DISTINCT envelope_to[1]) "
        "FROM delivery.captured_messages WHERE envelope_from = %s",
        (sender,),
    )
    assert await cursor.fetchone() == (200, 4, 200)


async def test_the_pool_opens_a_new_session_after_the_per_session_message_limit(
    system: System, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    sender = f"limit-{uuid.uuid4().hex[:8]}@sender.example"
    async with SmtpConnectionPool(
        SmtpTarget("127.0.0.1", system.smtp_capture_port), size=1, max_messages_per_connection=10
    ) as pool:
        for number in range(25):
            await pool.send(sender, f"r{number}@example.org", b"Subject: limit\r\n\r\nbody\r\n")
    cursor = await sql.execute(
        "SELECT count(*) FROM delivery.captured_messages WHERE envelope_from = %s GROUP BY session_id ORDER BY 1",
        (sender,),
    )
    assert [row[0] for row in await cursor.fetchall()] == [5, 10, 10]
