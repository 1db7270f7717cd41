"""How Herald's gRPC clients call (services/common/grpc_config.py): reads retried after UNAVAILABLE and writes not,
a default deadline per call kind, keepalive pings that Herald's servers accept, and TLS from trustme certificates.

A grpc.aio server on a free local port runs the real CallInterceptor, with the keepalive options and credentials
that `grpcutil.serve` gives every service, in front of handlers registered under real Herald method names; the
clients are the channels `grpcutil.channel` gives every Herald process, in both of its forms (the services'
interceptor, the translator's MeasuredChannel).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pydantic
import pytest
import trustme
from herald.tag.v1 import tag_pb2, tag_pb2_grpc

from services import cli_calls
from services.common import auth, grpc_config, grpcutil, permissions
from services.common.config import Settings
from services.common.grpcutil import CallInterceptor

SECRET = "unit-test-secret-unit-test-secret"
GET_TAG = "/herald.tag.v1.TagService/GetTag"
CREATE_TAG = "/herald.tag.v1.TagService/CreateTag"
STREAM = "/herald.campaign.v1.CampaignService/WatchCampaign"
# Minted when the module is collected, which in `make test` is many minutes before these tests run: a day's life.
TOKEN = auth.mint_token(auth.Principal(user_id=7, is_admin=False, permissions=frozenset({"*"})), SECRET, 86_400)
METADATA = (("authorization", f"Bearer {TOKEN}"),)
CHANNEL_KINDS = ["service channel", "translator channel"]


@dataclass
class Served:
    """What the test server was asked: calls per method; `fail_first` methods answer UNAVAILABLE once."""

    behavior: str = "answer"  # answer | fail_first | never
    calls: dict[str, int] = field(default_factory=dict)
    stream_pause: float = 0.0

    def handlers(self) -> grpc.GenericRpcHandler:
        served = self

        def unary(method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
            async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                served.calls[method] = served.calls.get(method, 0) + 1
                if served.behavior == "never":
                    await asyncio.sleep(3600)
                if served.behavior == "fail_first" and served.calls[method] == 1:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
                return tag_pb2.Tag(tag_id=1, name="answered").SerializeToString()

            return handle

        async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            await asyncio.sleep(served.stream_pause)
            yield b""

        class Handlers(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
                if details.method == STREAM:
                    return grpc.unary_stream_rpc_method_handler(stream)
                if details.method in (GET_TAG, CREATE_TAG):
                    return grpc.unary_unary_rpc_method_handler(unary(details.method))
                return None

        return Handlers()


async def start_server(served: Served, settings: Settings, options: list[tuple[str, Any]] | None = None) -> Any:
    """A server as grpcutil.serve makes it (its options and credentials), on a free port; (server, port)."""
    server = grpc.aio.server(
        interceptors=[CallInterceptor("tag", SECRET)],
        options=grpc_config.server_options(settings) if options is None else options,
    )
    server.add_generic_rpc_handlers((served.handlers(),))
    port = grpc_config.add_port(server, "127.0.0.1:0", settings)
    await server.start()
    return server, port


def herald_channel(kind: str, port: int, settings: Settings) -> grpc.aio.Channel:
    return grpcutil.channel(f"127.0.0.1:{port}", forward_principal=kind == "service channel", settings=settings)


def test_every_rpc_has_a_kind_and_only_reads_are_retried() -> None:
    rpcs = grpc_config.herald_rpcs()
    assert set(rpcs) == set(permissions.RPC_PERMISSIONS)
    config = grpc_config.service_config(Settings())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (retried,) = config["methodConfig"]
    names = {f"/{name['service']}/{name['method']}" for name in retried["name"]}
    assert retried["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert {GET_TAG, STREAM, "/herald.campaign.v1.CampaignService/BatchGetCampaigns"} <= names
    for write in (CREATE_TAG, "/herald.audience.v1.AudienceService/StreamImport"):
        assert write not in names
    assert all(rpcs[name].read for name in names)
    assert not any(
        method.rsplit("/", 1)[1].startswith(("Create", "Update", "Delete", "Record")) for method in names
    )
    deadlines = grpc_config.Deadlines(Settings(grpc_read_timeout_seconds=4, grpc_write_timeout_seconds=9))
    assert (deadlines.default(GET_TAG), deadlines.default(CREATE_TAG), deadlines.default(STREAM)) == (4, 9, None)
    no_retries = grpc_config.service_config(Settings(grpc_retry_attempts=1))
    assert no_retries["methodConfig"] == []
    assert grpc_config.target("tag:50052") == "dns:///tag:50052"


@pytest.mark.parametrize("kind", CHANNEL_KINDS)
async def test_a_read_is_retried_after_unavailable_and_a_write_is_not(kind: str) -> None:
    settings = Settings()
    served = Served(behavior="fail_first")
    server, port = await start_server(served, settings)
    try:
        async with herald_channel(kind, port, settings) as channel:
            stub = tag_pb2_grpc.TagServiceStub(channel)
            tag = await stub.GetTag(tag_pb2.GetTagRequest(tag_id=1), metadata=METADATA)
            assert tag.name == "answered"
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.CreateTag(tag_pb2.CreateTagRequest(name="x"), metadata=METADATA)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
    assert served.calls == {GET_TAG: 2, CREATE_TAG: 1}


@pytest.mark.parametrize("kind", CHANNEL_KINDS)
async def test_a_call_to_a_server_that_never_answers_ends_at_its_kinds_deadline(kind: str) -> None:
    settings = Settings(grpc_read_timeout_seconds=0.3, grpc_write_timeout_seconds=0.6)
    server, port = await start_server(Served(behavior="never"), settings)
    try:
        async with herald_channel(kind, port, settings) as channel:
            stub = tag_pb2_grpc.TagServiceStub(channel)
            for call, request, deadline in (
                (stub.GetTag, tag_pb2.GetTagRequest(tag_id=1), 0.3),
                (stub.CreateTag, tag_pb2.CreateTagRequest(name="x"), 0.6),
            ):
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await call(request, metadata=METADATA)
                assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert deadline <= time.monotonic() - started < deadline + 1.5
    finally:
        await server.stop(None)


async def test_herald_servers_accept_the_keepalive_pings_of_herald_clients() -> None:
    """A stream that sends nothing for 5.5 s while its client pings every second. Herald's server options accept the
    pings of Herald's channel and of a pick_first channel with the same keepalive options (another team's client);
    gRPC's default enforcement (one ping per 5 minutes) answers that one with GOAWAY "too many pings" after 4 s."""
    settings = Settings(grpc_keepalive_seconds=1)
    served = Served(stream_pause=5.5)
    keepalive_only = [
        option for option in grpc_config.client_options(settings) if option[0] != "grpc.service_config"
    ]

    async def idle_stream(server_options: list[tuple[str, Any]], herald_client: bool) -> grpc.StatusCode:
        server, port = await start_server(served, settings, server_options)
        target = f"127.0.0.1:{port}"
        if herald_client:
            channel = grpcutil.channel(target, forward_principal=False, settings=settings)
        else:
            channel = grpc.aio.insecure_channel(target, options=keepalive_only)
        try:
            async with channel:
                call = channel.unary_stream(STREAM)(b"", metadata=METADATA, timeout=10)
                async for _ in call:
                    pass
                return await call.code()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            await server.stop(None)

    herald = grpc_config.server_options(settings)
    outcomes = await asyncio.gather(idle_stream(herald, True), idle_stream(herald, False), idle_stream([], False))
    assert tuple(outcomes) == (grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)


@dataclass
class Pki:
    ca: trustme.CA
    cert_file: str
    key_file: str
    ca_file: str
    other_ca_file: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "cert.pem": b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        "key.pem": cert.private_key_pem.bytes(),
        "ca.pem": ca.cert_pem.bytes(),
        "other-ca.pem": other.cert_pem.bytes(),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return Pki(ca, *(str(folder / name) for name in files))


def tls_settings(pki: Pki, **changes: Any) -> Settings:
    values = {
        "grpc_tls_cert_file": pki.cert_file,
        "grpc_tls_key_file": pki.key_file,
        "grpc_tls_ca_file": pki.ca_file,
    }
    return Settings(**(values | changes))


async def test_a_tls_server_refuses_plaintext_and_answers_a_client_that_trusts_its_ca(pki: Pki) -> None:
    settings = tls_settings(pki)
    server, port = await start_server(Served(), settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await tag_pb2_grpc.TagServiceStub(plaintext).GetTag(
                    tag_pb2.GetTagRequest(tag_id=1), metadata=METADATA, timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        for kind in CHANNEL_KINDS:
            async with herald_channel(kind, port, settings) as channel:
                tag = await tag_pb2_grpc.TagServiceStub(channel).GetTag(
                    tag_pb2.GetTagRequest(tag_id=1), metadata=METADATA
                )
                assert tag.name == "answered"
    finally:
        await server.stop(None)


async def test_a_client_with_the_wrong_ca_fails_naming_the_certificate(pki: Pki) -> None:
    server, port = await start_server(Served(), tls_settings(pki))
    wrong = tls_settings(pki, grpc_tls_ca_file=pki.other_ca_file, tag_addr=f"127.0.0.1:{port}")
    try:
        async with herald_channel("translator channel", port, wrong) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await tag_pb2_grpc.TagServiceStub(channel).GetTag(
                    tag_pb2.GetTagRequest(tag_id=1), metadata=METADATA
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "CERTIFICATE_VERIFY_FAILED" in (refused.value.details() or "")
        # The CLI waits for a service that is not ready until its deadline, then says why it could not connect.
        wrong = wrong.model_copy(update={"grpc_read_timeout_seconds": 0.5})
        with pytest.raises(cli_calls.CallFailed) as cli_failed:
            await cli_calls.call(
                wrong, "tag", tag_pb2_grpc.TagServiceStub, TOKEN, lambda stub: stub.GetTag, tag_pb2.GetTagRequest()
            )
        assert f"tag service unreachable at 127.0.0.1:{port}" in str(cli_failed.value)
        assert "CERTIFICATE_VERIFY_FAILED" in str(cli_failed.value)
    finally:
        await server.stop(None)


async def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki) -> None:
    server, port = await start_server(Served(), tls_settings(pki, grpc_tls_client_auth=True))
    try:
        anonymous = Settings(grpc_tls_ca_file=pki.ca_file)
        async with herald_channel("translator channel", port, anonymous) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await tag_pb2_grpc.TagServiceStub(channel).GetTag(
                    tag_pb2.GetTagRequest(tag_id=1), metadata=METADATA
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        async with herald_channel("translator channel", port, tls_settings(pki)) as channel:
            tag = await tag_pb2_grpc.TagServiceStub(channel).GetTag(
                tag_pb2.GetTagRequest(tag_id=1), metadata=METADATA
            )
            assert tag.name == "answered"
    finally:
        await server.stop(None)


def test_tls_settings_that_cannot_work_are_refused(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="set together"):
        Settings(grpc_tls_cert_file=pki.cert_file)
    with pytest.raises(pydantic.ValidationError, match="HERALD_GRPC_TLS_CLIENT_AUTH needs"):
        Settings(grpc_tls_ca_file=pki.ca_file, grpc_tls_client_auth=True)
    with pytest.raises(ValueError, match="a gRPC server needs HERALD_GRPC_TLS_CERT_FILE"):
        grpc_config.server_credentials(Settings(grpc_tls_ca_file=pki.ca_file))
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=f"HERALD_GRPC_TLS_CA_FILE: cannot read {missing}"):
        grpc_config.client_credentials(Settings(grpc_tls_ca_file=missing))
    assert grpc_config.client_credentials(Settings()) is None
    assert json.loads(dict(grpc_config.client_options(Settings()))["grpc.service_config"])


def test_the_service_config_for_other_teams_is_current() -> None:
    document = Path(__file__).resolve().parents[2] / "docs" / "grpc-service-config.json"
    assert document.read_text() == grpc_config.service_config_document(), "run python tools/service_config_doc.py"


def test_a_protos_idempotency_level_wins_over_the_name() -> None:
    """`option idempotency_level` decides when the proto sets it; otherwise the verb does, and a stream of
    requests is never a read."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    levels = descriptor_pb2.MethodOptions
    file = descriptor_pb2.FileDescriptorProto(name="kinds.proto", package="kinds.v1", syntax="proto3")
    file.message_type.add(name="M")
    service = file.service.add(name="S")
    for name, level, client_streaming in (
        ("GetThing", levels.IDEMPOTENCY_UNKNOWN, False),
        ("GetAndBump", levels.IDEMPOTENT, False),
        ("Lookup", levels.NO_SIDE_EFFECTS, False),
        ("StreamUpload", levels.IDEMPOTENCY_UNKNOWN, True),
        ("Publish", levels.IDEMPOTENCY_UNKNOWN, False),
    ):
        method = service.method.add(
            name=name, input_type=".kinds.v1.M", output_type=".kinds.v1.M", client_streaming=client_streaming
        )
        method.options.idempotency_level = level
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    methods = pool.FindServiceByName("kinds.v1.S").methods_by_name
    reads = {name for name, method in methods.items() if grpc_config.is_read(method)}
    assert reads == {"GetThing", "Lookup"}
