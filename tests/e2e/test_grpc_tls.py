"""gRPC TLS and deadlines through the real path: a legacy client's command crosses a translator whose gRPC clients
use TLS (trustme certificates) to a tag service replica that serves TLS, on the test system's database and NATS;
a service that never answers ends a legacy command with the documented "component unavailable" answer.

Only the processes the test needs are started (one tag replica, one translator), not a second Herald.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
import trustme
from herald.tag.v1 import tag_pb2, tag_pb2_grpc

from services.common import grpc_config
from services.common.config import Settings
from tests.conftest import ROOT, Api, System, User, free_port, grpc_metadata, stop_process
from tests.e2e.edge_helpers import own_translator

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """HERALD_GRPC_TLS_* naming a trustme CA and a certificate it issued for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("grpc-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (folder / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    (folder / "key.pem").write_bytes(cert.private_key_pem.bytes())
    (folder / "ca.pem").write_bytes(ca.cert_pem.bytes())
    return {
        "HERALD_GRPC_TLS_CERT_FILE": str(folder / "cert.pem"),
        "HERALD_GRPC_TLS_KEY_FILE": str(folder / "key.pem"),
        "HERALD_GRPC_TLS_CA_FILE": str(folder / "ca.pem"),
    }


@dataclass
class TlsTag:
    """`herald serve tag` with TLS on, a replica of the test system's tag service."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def listening(self) -> str:
        """Its address once it listens (it starts while the test starts its translator)."""
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the TLS tag service did not start")
            await asyncio.sleep(0.1)
        return self.address


@pytest.fixture(scope="module")
def tls_tag(system: System, tls_env: dict[str, str]) -> Iterator[TlsTag]:
    port = free_port()
    env = {**system.env, **tls_env, "HERALD_TAG_GRPC_PORT": str(port), "HERALD_TAG_METRICS_PORT": "0"}
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "tag"], env=env, cwd=ROOT)
    try:
        yield TlsTag(process, port)
    finally:
        stop_process(process)


class _Silent(grpc.GenericRpcHandler):
    """Takes every call and never answers it."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        async def never(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await asyncio.sleep(3600)
            return b""

        return grpc.unary_unary_rpc_method_handler(never)


async def silent_server(settings: Settings) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Silent(),))
    port = grpc_config.add_port(server, "127.0.0.1:0", settings)
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def silent_campaign(tls_env: dict[str, str]) -> AsyncIterator[str]:
    settings = Settings(
        grpc_tls_cert_file=tls_env["HERALD_GRPC_TLS_CERT_FILE"],
        grpc_tls_key_file=tls_env["HERALD_GRPC_TLS_KEY_FILE"],
        grpc_tls_ca_file=tls_env["HERALD_GRPC_TLS_CA_FILE"],
    )
    server, address = await silent_server(settings)
    try:
        yield address
    finally:
        await server.stop(None)


async def test_legacy_commands_cross_tls_and_a_silent_service_answers_component_unavailable(
    api: Api,
    user: User,
    system: System,
    tls_env: dict[str, str],
    tls_tag: TlsTag,
    silent_campaign: str,
) -> None:
    tag = await api.call("tag.create", user.api_key, Tag="over-tls")
    assert tag["Success"] is True, tag
    settings = {
        **tls_env,
        "HERALD_TAG_ADDR": tls_tag.address,
        "HERALD_CAMPAIGN_ADDR": silent_campaign,
        "HERALD_GRPC_READ_TIMEOUT_SECONDS": "1.5",
    }
    async with own_translator(system, settings) as base_url:
        tls_api = Api(api.session, base_url)
        await tls_tag.listening()
        body = await tls_api.call("tags.get", user.api_key)
        assert body["Tags"] == [{"TagID": tag["TagID"], "Tag": "over-tls", "RelOwnerUserID": user.user_id}]
        started = time.monotonic()
        status, body = await tls_api.post({"Command": "campaign.get", "APIKey": user.api_key, "CampaignID": 1})
        assert 1.5 <= time.monotonic() - started < 8
    assert (status, body["Success"], body["ErrorCode"]) == (500, False, 100004), body
    assert body["ErrorText"] == "A required server component is unavailable"


async def test_the_tls_tag_service_refuses_plaintext(system: System, user: User, tls_tag: TlsTag) -> None:
    async with grpc.aio.insecure_channel(await tls_tag.listening()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tag_pb2_grpc.TagServiceStub(channel).ListTags(
                tag_pb2.ListTagsRequest(), metadata=grpc_metadata(system, user.user_id), timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
