"""A Node.js client (tests/polyglot/send.js), written with the generated SDK package and a token alone, drives a
whole send.

The SDK is built as `make sdk` builds it (tools/sdk.py package) into a temporary directory; the client
requires its compiled modules and nothing else of Herald's. It creates a list, subscribers, an email (a
lowerCamelCase mask) and a campaign, decodes the google.rpc details of two refused calls, sets the campaign
Ready (a snake_case mask), follows it through the WatchCampaign stream until Sent, and reads its statistics;
this test checks what it printed and the mail Herald's capture received.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, System, User, token_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIENT = ROOT / "tests" / "polyglot" / "send.js"


@pytest.fixture(scope="module")
def sdk_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK package as `make sdk` writes it, with its dependencies (@grpc/grpc-js, @bufbuild/protobuf) from
    sdk/node_modules, as `npm install` of the package would provide them."""
    package = tmp_path_factory.mktemp("sdk") / "herald-sdk"
    result = subprocess.run(
        [sys.executable, "tools/sdk.py", "package", str(package)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (package / "node_modules").symlink_to(ROOT / "sdk" / "node_modules")
    return package


async def run_client(env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    process = await asyncio.create_subprocess_exec(
        "node", str(CLIENT), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=150)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    steps = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    assert process.returncode is not None
    return process.returncode, steps, stderr.decode()


# Its setup builds the SDK (ts-proto and tsc, a minute or more on a busy machine) before the whole send.
@pytest.mark.timeout(600)
async def test_a_node_client_sends_a_campaign_and_watches_it_to_sent(
    system: System, user: User, sdk_package: Path
) -> None:
    domain = f"{uuid.uuid4().hex[:10]}.polyglot.example"
    recipients = [f"reader{i}@{domain}" for i in range(3)]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "NODE_PATH": "",
        "HERALD_SDK": str(sdk_package),
        "HERALD_TOKEN": token_for(system, user.user_id),
        "HERALD_CAMPAIGN_TARGET": system.grpc_target("campaign"),
        "HERALD_AUDIENCE_TARGET": system.grpc_target("audience"),
        "HERALD_RECIPIENTS": ",".join(recipients),
        "HERALD_FROM": f"news@{domain}",
    }

    code, steps, stderr = await run_client(env)

    assert code == 0, stderr
    by_step: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        by_step.setdefault(step["step"], []).append(step)
    assert sorted(s["email_address"] for s in by_step["subscriber"]) == recipients
    # A lowerCamelCase mask changed the email's fields as a snake_case one would.
    [email] = by_step["email"]
    assert (email["subject"], email["from_name"]) == ("Hello from Node", "Polyglot")
    assert email["mask"] == ["subject", "fromName", "fromEmail", "htmlContent", "plainContent"]
    # The client decoded each error's google.rpc.Status: ErrorInfo's reason and metadata, BadRequest's fields.
    wrong_path, not_sending = by_step["refused"]
    assert wrong_path["call"] == "UpdateCampaign"
    assert (wrong_path["code"], wrong_path["reason"]) == ("INVALID_ARGUMENT", "UPDATE_MASK_INVALID")
    assert (wrong_path["domain"], wrong_path["violations"]) == ("herald.campaign.v1", ["update_mask"])
    assert "name 'schedule' instead" in wrong_path["message"]
    assert not_sending["call"] == "PauseCampaign"
    assert (not_sending["code"], not_sending["reason"]) == ("FAILED_PRECONDITION", "STATUS_INVALID")
    assert not_sending["metadata"] == {"status": "CAMPAIGN_STATUS_DRAFT"}
    assert by_step["ready"][0]["status"] == "CAMPAIGN_STATUS_READY"
    assert by_step["ready"][0]["mask"] == ["status", "email_id", "schedule", "targeting"]
    progress = by_step["progress"]
    # The stream ends after the message carrying the terminal status, and says nothing after it.
    assert progress[-1]["status"] == "CAMPAIGN_STATUS_SENT"
    assert progress[-1]["total_sent"] == "3"
    assert all(p["status"] != "CAMPAIGN_STATUS_SENT" for p in progress[:-1])
    assert by_step["watched"] == [
        {"step": "watched", "messages": len(progress), "final_status": "CAMPAIGN_STATUS_SENT"}
    ]
    [statistics] = by_step["statistics"]
    campaign_id = by_step["campaign"][0]["campaign_id"]
    # int64 figures arrive as strings: the SDK is generated with forceLong=string.
    assert statistics == {
        "step": "statistics",
        "campaign_id": campaign_id,
        "status": "CAMPAIGN_STATUS_SENT",
        "total_recipients": "3",
        "total_sent": "3",
        "total_failed": "0",
    }

    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as sql:
        cursor = await sql.execute(
            "SELECT envelope_to[1], subject, raw FROM delivery.captured_messages "
            "WHERE envelope_to[1] LIKE %s ORDER BY 1",
            (f"%@{domain}",),
        )
        captured = await cursor.fetchall()
    assert [row[0] for row in captured] == recipients
    assert {row[1] for row in captured} == {"Hello from Node"}
    assert all(b"Hello Node, from a Node.js client." in bytes(row[2]) for row in captured)
