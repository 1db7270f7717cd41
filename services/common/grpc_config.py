"""How Herald's gRPC clients and servers connect: the service config (round_robin over DNS, retries of idempotent
reads), a default deadline per call kind, keepalive on both ends, and optional TLS (docs/clients.md)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2

from services.common.config import Settings

# A unary or server-streaming RPC whose name starts with one of these verbs only reads; the protos may say so
# themselves instead (`option idempotency_level = NO_SIDE_EFFECTS;`), which wins over the name.
READ_VERBS = ("Get", "BatchGet", "List", "Count", "Check", "Watch", "Stream")

# Retried (read) calls: gRPC waits a random time up to 0.1 s before the first retry, up to 0.2 s before the
# second, doubling to at most 1 s, while the deadline lasts.
INITIAL_BACKOFF = "0.1s"
MAX_BACKOFF = "1s"
# gRPC's retry throttling: a failed call costs a token of 10, a successful one gives back 0.1; with 5 or fewer left
# a channel stops retrying, so that a service that is down is not called three times as often.
RETRY_THROTTLING = {"maxTokens": 10, "tokenRatio": 0.1}

# What a server waits for an answer to its keepalive ping, and what a client waits for the server's.
KEEPALIVE_TIMEOUT_MS = 10_000
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class Rpc:
    """One RPC of Herald's protos, as a caller must treat it."""

    service: str  # full name: herald.campaign.v1.CampaignService
    method: str  # GetCampaign
    read: bool  # no side effects: safe to retry
    streaming: bool  # client- or server-streaming: no default deadline

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"


def is_read(method: descriptor.MethodDescriptor) -> bool:
    """Whether the RPC only reads: its proto's idempotency_level if set (NO_SIDE_EFFECTS), else its verb."""
    if method.client_streaming:
        return False  # a stream of requests (StreamImport) is an upload
    level = method.GetOptions().idempotency_level
    if level != descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN:
        return bool(level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS)
    return method.name.startswith(READ_VERBS)


@lru_cache(maxsize=1)
def herald_rpcs() -> Mapping[str, Rpc]:
    """Every RPC of the generated herald.* packages, by full path (/herald.tag.v1.TagService/GetTag)."""
    import herald

    rpcs: dict[str, Rpc] = {}
    for module_info in pkgutil.walk_packages(herald.__path__, "herald."):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(module_info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpc = Rpc(
                    service.full_name,
                    method.name,
                    read=is_read(method),
                    streaming=method.client_streaming or method.server_streaming,
                )
                rpcs[rpc.path] = rpc
    return rpcs


def service_config(settings: Settings) -> dict[str, Any]:
    """The service config of every Herald channel: round_robin over every address DNS gives, and retries after
    UNAVAILABLE for the reads (never for writes, which may have been applied before the connection broke)."""
    reads = [{"service": rpc.service, "method": rpc.method} for rpc in herald_rpcs().values() if rpc.read]
    return {
        # No healthCheckConfig: its Watch stream on every connection would hold each server's graceful stop for
        # its whole grace period; a stopping server's GOAWAY already sends new calls to the other replicas.
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": reads,
                "retryPolicy": {
                    "maxAttempts": settings.grpc_retry_attempts,
                    "initialBackoff": INITIAL_BACKOFF,
                    "maxBackoff": MAX_BACKOFF,
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
        if settings.grpc_retry_attempts > 1
        else [],
        "retryThrottling": RETRY_THROTTLING,
    }


class Deadlines:
    """The default deadline of a call by its kind: a unary read's, a unary write's, none for a stream.

    Not the service config's `timeout`, which grpcio 1.85 ends early (a 3 s timeout ended calls after 1.4 to 2 s;
    grpc/grpc#34547, #40633).
    """

    def __init__(self, settings: Settings) -> None:
        self._read = settings.grpc_read_timeout_seconds
        self._write = settings.grpc_write_timeout_seconds
        self._rpcs = herald_rpcs()

    def default(self, method: str | bytes) -> float | None:
        path = method.decode() if isinstance(method, bytes) else method
        rpc = self._rpcs.get(path)
        if rpc is None:
            return self._read  # health checks, reflection
        if rpc.streaming:
            return None
        return self._read if rpc.read else self._write


def target(address: str) -> str:
    """The address as a gRPC target resolved by DNS (every address of the name, for round_robin)."""
    return address if "://" in address or address.startswith(("unix:", "ipv4:", "ipv6:")) else f"dns:///{address}"


def client_options(settings: Settings) -> list[tuple[str, Any]]:
    keepalive_ms = int(settings.grpc_keepalive_seconds * 1000)
    return [
        ("grpc.service_config", json.dumps(service_config(settings))),
        # The config above is Herald's own; DNS TXT records do not replace it.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Idle connections are checked too, so that a call never starts on a connection that died quietly.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """Keepalive enforcement that accepts the pings of clients configured like Herald's (and pings idle ones)."""
    keepalive_ms = int(settings.grpc_keepalive_seconds * 1000)
    return [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", keepalive_ms // 2),
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms // 2),
        ("grpc.http2.max_ping_strikes", 2),
        # Clients reconnect (and resolve the name again, finding new replicas) after a connection's age; its
        # calls, long streams included, finish on it first.
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"HERALD_GRPC_TLS_{variable}: cannot read {path}: {exc.strerror}") from None


def client_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials of a client (None: plaintext): the CA file's roots, and the certificate for mutual TLS."""
    if not settings.grpc_tls():
        return None
    roots = _read("CA_FILE", settings.grpc_tls_ca_file) if settings.grpc_tls_ca_file else None
    if settings.grpc_tls_cert_file:
        return grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=_read("KEY_FILE", settings.grpc_tls_key_file),
            certificate_chain=_read("CERT_FILE", settings.grpc_tls_cert_file),
        )
    return grpc.ssl_channel_credentials(root_certificates=roots)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of a server (None: plaintext); with client auth, clients must present a CA-signed certificate."""
    if not settings.grpc_tls():
        return None
    if not settings.grpc_tls_cert_file:
        raise ValueError(
            "gRPC TLS is on (HERALD_GRPC_TLS_CA_FILE is set), so a gRPC server needs HERALD_GRPC_TLS_CERT_FILE "
            "and HERALD_GRPC_TLS_KEY_FILE"
        )
    pair = (_read("KEY_FILE", settings.grpc_tls_key_file), _read("CERT_FILE", settings.grpc_tls_cert_file))
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=_read("CA_FILE", settings.grpc_tls_ca_file) if settings.grpc_tls_client_auth else None,
        require_client_auth=settings.grpc_tls_client_auth,
    )


def open_channel(
    settings: Settings,
    address: str,
    *,
    interceptors: Sequence[Any] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `address` with Herald's service config, keepalive and (when on) TLS."""
    all_options = [*client_options(settings), *options]
    credentials = client_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target(address), options=all_options, interceptors=interceptors)
    return grpc.aio.secure_channel(target(address), credentials, options=all_options, interceptors=interceptors)


def add_port(server: grpc.aio.Server, address: str, settings: Settings) -> int:
    """Listens on `address`, with TLS when it is on; the port bound (0: could not bind)."""
    credentials = server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def service_config_document() -> str:
    """The service config with the default settings, as docs/grpc-service-config.json holds it for other teams."""
    return json.dumps(service_config(Settings.model_construct()), indent=2) + "\n"
