"""Templates made over gRPC for the tests that use them (email.create/email.update in Template mode, list.create)."""

from __future__ import annotations

import grpc
from herald.campaign.v1 import template_pb2, template_pb2_grpc

from tests.conftest import System, grpc_metadata


async def new_template(system: System, user_id: int, **fields: str) -> template_pb2.Template:
    """A template of the user's, with a name and an HTML body unless `fields` give others."""
    template = template_pb2.Template(name="Welcome", html_content="<p>Welcome</p>")
    for name, value in fields.items():
        setattr(template, name, value)
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        created: template_pb2.Template = await template_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            template_pb2.CreateTemplateRequest(template=template),
            metadata=grpc_metadata(system, user_id),
            wait_for_ready=True,
            timeout=30,
        )
    return created
