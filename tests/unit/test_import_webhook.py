"""The import status notice (ImportStatusUpdateWebhookURL): which URLs are accepted, and that the guard keeps
private addresses out unless the operator allows them, at the check and at connection time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from herald.audience.v1 import audience_pb2

from services.audience import import_webhook
from services.common.errors import Violations
from tests.conftest import free_port


def reasons(url: str, *, allow_private: bool) -> list[str]:
    violations = Violations()
    import_webhook.check_url(url, violations, allow_private=allow_private)
    return [v.reason for v in violations.items]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "example.com/x",
        "/x",
        "http://",
        "http://u:p@example.com/",
        "https://e.com/" + "x" * 2048,
    ],
)
def test_urls_that_cannot_be_notified_are_refused(url: str) -> None:
    assert reasons(url, allow_private=True) == [import_webhook.IMPORT_WEBHOOK_URL_INVALID]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/x", "http://10.1.2.3/x", "http://[::1]/x", "http://169.254.1.1/"]
)
def test_literal_private_addresses_are_refused_unless_allowed(url: str) -> None:
    assert reasons(url, allow_private=False) == [import_webhook.IMPORT_WEBHOOK_URL_INVALID]
    assert reasons(url, allow_private=True) == []


def test_public_urls_pass() -> None:
    assert reasons("https://hooks.example.com/imports?token=abc", allow_private=False) == []


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[tuple[int, list[dict[str, object]]]]:
    got: list[dict[str, object]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, got
    await runner.cleanup()


JOB = audience_pb2.Import(
    import_id=7, list_id=3, status=audience_pb2.IMPORT_STATUS_COMPLETED, total_rows=2, imported=1, updated=1
)


async def test_a_name_resolving_to_loopback_is_not_reached_unless_allowed(
    receiver: tuple[int, list[dict[str, object]]],
) -> None:
    port, got = receiver
    started = time.monotonic()
    assert await import_webhook.notify(f"http://localhost:{port}/", JOB, allow_private=False) is False
    # Refused by the resolver: not retried (no backoff waited), nothing received.
    assert time.monotonic() - started < import_webhook.BACKOFF_SECONDS[0] and got == []
    assert await import_webhook.notify(f"http://localhost:{port}/", JOB, allow_private=True) is True
    assert got == [
        {
            "ImportID": 7,
            "ListID": 3,
            "ImportStatus": "Completed",
            "FinishedAt": "",
            "TotalSubscribers": 2,
            "TotalImported": 2,
            "TotalUpdated": 1,
            "TotalDuplicates": 0,
            "TotalFailed": 0,
            "FailureReason": "",
        }
    ]
