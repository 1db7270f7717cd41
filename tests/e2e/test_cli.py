"""The `herald` management commands, run as a subprocess against the test system's database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.conftest import ROOT, Api, System, eventually, free_port, token_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

USER_FIELDS = {"UserID", "Username", "EmailAddress", "AccountStatus", "Permissions", "Untrusted", "CreatedOn"}


async def herald(
    system: System, *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", *args],
        env={**system.env, **(env or {})},
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def failed_with(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """A failure is one JSON line on stderr, nothing on stdout, and a non-zero exit status."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    message: str = json.loads(lines[0])["Error"]
    return message


async def test_creating_a_user_twice_is_one_clear_line(system: System) -> None:
    name = f"cli-{uuid.uuid4().hex[:12]}"
    created = await herald(system, "user", "create", "--username", name, "--password", "pw")
    assert created.returncode == 0 and set(json.loads(created.stdout)) == {"UserID", "APIKey"}, created.stderr
    again = await herald(system, "user", "create", "--username", name.upper(), "--password", "pw")
    assert failed_with(again) == f"username {name.upper()!r} is taken"


async def test_a_reissued_key_replaces_the_old_one(system: System, api: Api) -> None:
    name = f"cli-{uuid.uuid4().hex[:12]}"
    created = json.loads((await herald(system, "user", "create", "--username", name, "--password", "pw")).stdout)
    old = created["APIKey"]
    assert (await api.call("tags.get", old))["Success"] is True
    result = await herald(system, "user", "reissue-key", "--username", name.upper())
    assert result.returncode == 0, result.stderr
    reissued = json.loads(result.stdout)
    assert reissued["UserID"] == created["UserID"] and reissued["Username"] == name
    assert reissued["APIKey"] != old
    assert (await api.call("tags.get", reissued["APIKey"]))["Success"] is True

    async def old_key_refused() -> bool:
        return bool((await api.call("tags.get", old))["ErrorCode"] == 99998)

    # The translator may accept the old key for as long as it caches look-ups (5 s).
    assert await eventually(old_key_refused, within=15, interval=0.5)
    by_id = await herald(system, "user", "reissue-key", "--user", str(created["UserID"]))
    assert by_id.returncode == 0 and json.loads(by_id.stdout)["UserID"] == created["UserID"]


async def test_user_list_shows_users_without_secrets(system: System) -> None:
    name = f"cli-{uuid.uuid4().hex[:12]}"
    await herald(
        system, "user", "create", "--username", name, "--password", "pw", "--permissions", "Campaign.Get,Tags.Get"
    )
    result = await herald(system, "user", "list")
    assert result.returncode == 0, result.stderr
    users = json.loads(result.stdout)
    assert all(set(row) == USER_FIELDS for row in users)
    mine = [row for row in users if row["Username"] == name]
    assert len(mine) == 1 and mine[0]["Permissions"] == ["Campaign.Get", "Tags.Get"]
    assert mine[0]["AccountStatus"] == "Active" and mine[0]["Untrusted"] is False
    assert "scrypt" not in result.stdout and "pw" not in json.dumps(mine)


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("user", "reissue-key", "--user", "999999999"), 1, "no user 999999999"),
        (("user", "reissue-key", "--username", "nobody-at-all"), 1, "no user named 'nobody-at-all'"),
        (("user", "update", "--user", "999999999", "--trusted"), 1, "no user 999999999"),
        (("token", "mint", "--admin", "999999999"), 1, "no admin 999999999"),
        (("user", "create", "--username", " ", "--password", "pw"), 1, "username and password are required"),
        (
            ("token", "mint", "--user", "1", "--ttl", "0"),
            2,
            "herald token mint: argument --ttl: 0 is not positive",
        ),
        (
            ("user", "reissue-key"),
            2,
            "herald user reissue-key: one of the arguments --user --username is required",
        ),
        (("user", "nope"), 2, "herald user: argument action: invalid choice"),
    ],
)
async def test_every_failure_is_one_line_and_a_non_zero_exit(
    system: System, args: tuple[str, ...], status: int, message: str
) -> None:
    assert failed_with(await herald(system, *args), status).startswith(message)


async def test_an_unreachable_or_wrong_database_is_one_clear_line(system: System) -> None:
    closed = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/herald"}
    assert failed_with(await herald(system, "user", "list", env=closed)).startswith("database unreachable: ")
    wrong = {"DATABASE_URL": "mysql://root@127.0.0.1/herald"}
    assert (
        failed_with(await herald(system, "user", "list", env=wrong)) == "DATABASE_URL must be a postgresql:// URL"
    )
    bad = {"HERALD_DB_POOL_SIZE": "many"}
    assert failed_with(await herald(system, "user", "list", env=bad)).startswith(
        "invalid setting HERALD_DB_POOL_SIZE"
    )


async def test_grpc_status_decodes_what_buf_curl_shows_of_an_error(system: System, user: Any) -> None:
    called = await asyncio.to_thread(
        subprocess.run,
        [
            str(ROOT / ".venv" / "bin" / "buf"),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--schema",
            str(ROOT / "protos"),
            "-H",
            f"authorization: Bearer {token_for(system, user.user_id)}",
            "-d",
            '{"name": ""}',
            f"http://{system.grpc_target('tag')}/herald.tag.v1.TagService/CreateTag",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert called.returncode != 0 and '"value"' in called.stderr, called.stderr
    result = await herald(system, "grpc-status", stdin=called.stderr)
    assert result.returncode == 0, result.stderr
    decoded = json.loads(result.stdout)
    assert decoded["code"] == "invalid_argument"
    info, bad = decoded["details"]
    assert info == {"type": "google.rpc.ErrorInfo", "reason": "TAG_NAME_REQUIRED", "domain": "herald.tag.v1"}
    assert bad["type"] == "google.rpc.BadRequest"
    assert [(v["field"], v["reason"]) for v in bad["field_violations"]] == [("name", "TAG_NAME_REQUIRED")]
    assert failed_with(await herald(system, "grpc-status", "not base64!")).startswith("not base64")
