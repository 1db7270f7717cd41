"""DKIM end to end: a sending domain added over gRPC or with `herald dkim`, a campaign from it through the real send path, and every captured message verified by dkimpy against the published record (a resolver stands in for DNS)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Sequence

import grpc
import psycopg
import pytest
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from tests.conftest import ROOT, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    Received,
    User,
    assert_each_received_once,
    audience,
    started_campaign,
    wait_for_status,
)
from tests.unit.dkim_dns import signature_tags, verified

pytestmark = pytest.mark.asyncio(loop_scope="session")


def signing_domain() -> str:
    return f"mail-{uuid.uuid4().hex[:10]}.example"


def stub(herald: DeliveryHerald) -> tuple[grpc.aio.Channel, delivery_pb2_grpc.DeliveryServiceStub]:
    channel = grpc.aio.insecure_channel(herald.system.grpc_target("delivery"))
    return channel, delivery_pb2_grpc.DeliveryServiceStub(channel)


async def campaign_from(herald: DeliveryHerald, user: User, sender: str, count: int) -> list[Received]:
    """Sends a campaign whose From is `sender` to `count` new subscribers; the messages the recorder received."""
    recipients, subscribers, list_id = await audience(herald, user, count)
    campaign_id = await started_campaign(herald, user, [list_id], name=f"From {sender}", sender=sender)
    assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=60) == "Sent"
    assert_each_received_once(herald.recorder, recipients, [person.email for person in subscribers])
    return herald.recorder.messages_to(recipients)


def assert_signed(messages: Sequence[Received], domain: str, selector: str, record: dict[str, str]) -> None:
    """Every message carries one DKIM-Signature of the domain that verifies against `record` and covers RFC 8058's pair."""
    assert messages
    for received in messages:
        assert received.raw.count(b"DKIM-Signature:") == 1, received.raw[:300]
        assert verified(received.raw, record), f"signature of {received.recipient} does not verify"
        tags = signature_tags(received.raw)
        assert (tags["d"], tags["s"], tags["a"], tags["c"]) == (domain, selector, "rsa-sha256", "relaxed/relaxed")
        covered = set(tags["h"].split(":"))
        assert {
            "list-unsubscribe",
            "list-unsubscribe-post",
            "from",
            "to",
            "subject",
            "date",
            "message-id",
        } <= covered
        # The header the signature covers is really there, not only named in h=.
        assert received.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"


async def test_a_campaign_from_a_domain_with_a_key_is_signed_and_one_from_another_domain_is_not(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    domain = signing_domain()
    channel, delivery = stub(herald)
    async with channel:
        created = await delivery.CreateSendingDomain(
            delivery_pb2.CreateSendingDomainRequest(domain=domain.upper() + ".", selector="S2026"),
            metadata=grpc_metadata(herald.system, user.user_id),
            # The first call of a Herald that just started may come before the delivery service listens.
            wait_for_ready=True,
            timeout=60,
        )
    assert (created.domain, created.selector, created.owner_user_id) == (domain, "s2026", user.user_id)
    assert created.dns_record_name == f"s2026._domainkey.{domain}"
    assert created.dns_txt_value.startswith("v=DKIM1; k=rsa; p=")
    record = {created.dns_record_name: created.dns_txt_value}

    signed = await campaign_from(herald, user, f"news@{domain}", 30)
    assert_signed(signed, domain, "s2026", record)
    # Relaxed canonicalization: a relay that re-spaces a header field keeps the signature valid.
    respaced = signed[0].raw.replace(b"\r\nSubject: ", b"\r\nSubject:\t ", 1)
    assert respaced != signed[0].raw and verified(respaced, record)

    unsigned = await campaign_from(herald, user, f"news@other-{domain}", 5)
    assert all(b"DKIM-Signature" not in received.raw for received in unsigned)

    # Another user's campaign from the same domain is not signed with this user's key.
    stranger = await herald.new_user()
    theirs = await campaign_from(herald, stranger, f"news@{domain}", 3)
    assert all(b"DKIM-Signature" not in received.raw for received in theirs)


async def herald_cli(herald: DeliveryHerald, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", *args],
        env=herald.system.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1 and result.stdout == "", (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    message: str = json.loads(lines[0])["Error"]
    return message


async def test_herald_dkim_add_prints_the_record_that_verifies_the_mail_and_list_and_remove_manage_it(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    domain = signing_domain()
    added = await herald_cli(
        herald, "dkim", "add", "--user", str(user.user_id), "--domain", domain, "--selector", "s1"
    )
    assert added.returncode == 0, added.stderr
    printed = json.loads(added.stdout)
    assert (printed["UserID"], printed["Domain"], printed["Selector"]) == (user.user_id, domain, "s1")
    published = printed["DnsRecord"]
    assert published["Name"] == f"s1._domainkey.{domain}" and published["Type"] == "TXT"
    assert printed["ZoneFileLine"].startswith(f"s1._domainkey.{domain}. IN TXT ")
    assert "PRIVATE" not in added.stdout

    messages = await campaign_from(herald, user, f"Newsletter@{domain.upper()}", 5)
    assert_signed(messages, domain, "s1", {published["Name"]: published["Value"]})

    again = await herald_cli(
        herald, "dkim", "add", "--user", str(user.user_id), "--domain", domain, "--selector", "s2"
    )
    assert one_line_error(again) == f"the sending domain {domain} already exists"
    listed = await herald_cli(herald, "dkim", "list", "--user", str(user.user_id))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [printed]
    everyone = await herald_cli(herald, "dkim", "list")
    assert printed in json.loads(everyone.stdout)

    removed = await herald_cli(herald, "dkim", "remove", "--user", str(user.user_id), "--domain", domain)
    assert removed.returncode == 0 and json.loads(removed.stdout)["Removed"] is True, removed.stderr
    assert json.loads((await herald_cli(herald, "dkim", "list", "--user", str(user.user_id))).stdout) == []
    gone = await herald_cli(herald, "dkim", "remove", "--user", str(user.user_id), "--domain", domain)
    assert one_line_error(gone) == f"no sending domain {domain}"
    nobody = await herald_cli(herald, "dkim", "add", "--user", "999999999", "--domain", domain, "--selector", "s1")
    assert one_line_error(nobody) == "no user 999999999"
    bad = await herald_cli(
        herald, "dkim", "add", "--user", str(user.user_id), "--domain", "localhost", "--selector", "s_1"
    )
    message = one_line_error(bad)
    assert "two labels" in message and "selector" in message

    # Removed: the next campaign from the domain goes out unsigned.
    after = await campaign_from(herald, user, f"news@{domain}", 2)
    assert all(b"DKIM-Signature" not in received.raw for received in after)


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_sending_domains_are_their_owners_and_never_show_a_private_key(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    owner, stranger = await herald.new_user(), await herald.new_user()
    as_owner = grpc_metadata(herald.system, owner.user_id)
    as_stranger = grpc_metadata(herald.system, stranger.user_id)
    as_admin = grpc_metadata(herald.system, 0, is_admin=True)
    domain = signing_domain()
    channel, delivery = stub(herald)
    async with channel:
        await delivery.CreateSendingDomain(
            delivery_pb2.CreateSendingDomainRequest(domain=domain, selector="s1"),
            metadata=as_owner,
            wait_for_ready=True,
            timeout=60,
        )
        duplicate = await rpc_error(
            delivery.CreateSendingDomain(
                delivery_pb2.CreateSendingDomainRequest(domain=domain.upper(), selector="s9"), metadata=as_owner
            )
        )
        assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS

        invalid = await rpc_error(
            delivery.CreateSendingDomain(
                delivery_pb2.CreateSendingDomainRequest(domain="192.0.2.1", selector="-s"), metadata=as_owner
            )
        )
        assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT

        listing = await delivery.ListSendingDomains(delivery_pb2.ListSendingDomainsRequest(), metadata=as_owner)
        assert [entry.domain for entry in listing.sending_domains] == [domain]
        assert b"PRIVATE KEY" not in listing.SerializeToString()
        assert not any("private" in field.name for field in delivery_pb2.SendingDomain.DESCRIPTOR.fields)

        # A stranger sees nothing of it, and cannot tell it from a domain nobody has.
        theirs = await delivery.ListSendingDomains(delivery_pb2.ListSendingDomainsRequest(), metadata=as_stranger)
        assert list(theirs.sending_domains) == []
        for call in (
            delivery.ListSendingDomains(
                delivery_pb2.ListSendingDomainsRequest(owner_user_id=owner.user_id), metadata=as_stranger
            ),
            delivery.DeleteSendingDomain(
                delivery_pb2.DeleteSendingDomainRequest(domain=domain, owner_user_id=owner.user_id),
                metadata=as_stranger,
            ),
            delivery.CreateSendingDomain(
                delivery_pb2.CreateSendingDomainRequest(
                    domain=signing_domain(), selector="s1", owner_user_id=owner.user_id
                ),
                metadata=as_stranger,
            ),
        ):
            assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED
        hidden = await rpc_error(
            delivery.DeleteSendingDomain(
                delivery_pb2.DeleteSendingDomainRequest(domain=domain), metadata=as_stranger
            )
        )
        unknown = signing_domain()
        missing = await rpc_error(
            delivery.DeleteSendingDomain(
                delivery_pb2.DeleteSendingDomainRequest(domain=unknown), metadata=as_stranger
            )
        )
        assert hidden.code() == missing.code() == grpc.StatusCode.NOT_FOUND
        assert hidden.details() == missing.details().replace(unknown, domain)

        # The same domain is the stranger's own to add (only the one who publishes it gets valid signatures).
        await delivery.CreateSendingDomain(
            delivery_pb2.CreateSendingDomainRequest(domain=domain, selector="s2"), metadata=as_stranger
        )

        # An admin names the owner.
        found = await delivery.ListSendingDomains(
            delivery_pb2.ListSendingDomainsRequest(owner_user_id=owner.user_id), metadata=as_admin
        )
        assert [(entry.domain, entry.selector) for entry in found.sending_domains] == [(domain, "s1")]
        await delivery.DeleteSendingDomain(
            delivery_pb2.DeleteSendingDomainRequest(domain=domain, owner_user_id=owner.user_id), metadata=as_admin
        )
        left = await delivery.ListSendingDomains(delivery_pb2.ListSendingDomainsRequest(), metadata=as_owner)
        assert list(left.sending_domains) == []

    # At rest the private key is sealed: no PEM in the table.
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT sealed_private_key FROM delivery.sending_domains WHERE domain = %s", (domain,)
            )
        ).fetchall()
    assert len(rows) == 1 and b"PRIVATE KEY" not in bytes(rows[0][0]) and b"BEGIN" not in bytes(rows[0][0])
