"""What Herald's channel configuration (services/common/grpc_config.py: service config with round_robin, retries of
reads, keepalive) costs a unary read: the CPU time per GetTag call on Herald's channel next to a channel with only
the keepalive and message-size options Herald's channels had before, both measured as the translator measures
them (MeasuredChannel), against one local server running the real CallInterceptor. Rounds alternate between the
two channels in one run; CPU time (this process: client and server) is disturbed by other load far less than
calls/s.

Run: `.venv/bin/python bench/grpc_channel.py --calls 4000 --rounds 6`
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

import argparse
import asyncio
import logging
import statistics
import time
from typing import cast

import grpc
import structlog
from herald.tag.v1 import tag_pb2, tag_pb2_grpc

from services.common import auth, grpc_config, grpcutil
from services.common.config import Settings
from services.common.grpcutil import CallInterceptor, MeasuredChannel, StreamClientInterceptor

SECRET = "bench-secret-bench-secret-bench-secret"
CONCURRENCY = 16


async def get_tag(request: tag_pb2.GetTagRequest, context: grpc.aio.ServicerContext) -> tag_pb2.Tag:
    return tag_pb2.Tag(tag_id=request.tag_id, name="bench")


async def main(calls: int, rounds: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = Settings()
    server = grpc.aio.server(
        interceptors=[CallInterceptor("tag", SECRET)], options=grpc_config.server_options(settings)
    )
    handler = grpc.unary_unary_rpc_method_handler(
        get_tag,
        request_deserializer=tag_pb2.GetTagRequest.FromString,
        response_serializer=tag_pb2.Tag.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("herald.tag.v1.TagService", {"GetTag": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    before = [("grpc.keepalive_time_ms", 30_000), ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    channels = {
        "before (no service config)": cast(
            grpc.aio.Channel,
            MeasuredChannel(
                grpc.aio.insecure_channel(target, interceptors=[StreamClientInterceptor()], options=before)
            ),
        ),
        "Herald's channel": grpcutil.channel(target, forward_principal=False, settings=settings),
    }
    token = auth.mint_token(auth.Principal(user_id=1, is_admin=False, permissions=frozenset({"*"})), SECRET, 3600)
    metadata = (("authorization", f"Bearer {token}"),)
    request = tag_pb2.GetTagRequest(tag_id=1)
    stubs = {name: tag_pb2_grpc.TagServiceStub(channel) for name, channel in channels.items()}
    for stub in stubs.values():
        for _ in range(200):
            await stub.GetTag(request, metadata=metadata, timeout=10)
    cpu: dict[str, list[float]] = {name: [] for name in stubs}
    for _ in range(rounds):
        for name, stub in stubs.items():

            async def client(stub: tag_pb2_grpc.TagServiceStub = stub) -> None:
                for _ in range(calls // CONCURRENCY):
                    await stub.GetTag(request, metadata=metadata)

            started = time.process_time()
            await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
            cpu[name].append(1e6 * (time.process_time() - started) / calls)
    for name, values in cpu.items():
        print(
            f"{name}: median {statistics.median(values):.0f} µs CPU per call; rounds {[round(v) for v in values]}"
        )
    first, second = (statistics.median(values) for values in cpu.values())
    print(f"ratio Herald's channel / before: {second / first:.3f}")
    for channel in channels.values():
        await channel.close()
    await server.stop(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
