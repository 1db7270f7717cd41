"""The TemplateService servicer: turns requests into template rules and store queries, and templates back into protos."""

from __future__ import annotations

import grpc
import structlog
from google.protobuf import empty_pb2
from herald.campaign.v1 import template_pb2, template_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.campaign import template_domain, template_store
from services.campaign.template_domain import FIELDS, Template
from services.common import auth, field_masks, grpcutil

log = structlog.get_logger()


def template_to_proto(template: Template) -> template_pb2.Template:
    return template_pb2.Template(
        template_id=template.template_id,
        owner_user_id=template.owner_user_id,
        name=template.name,
        subject=template.subject,
        preheader_text=template.preheader_text,
        html_content=template.html_content,
        plain_content=template.plain_content,
        create_time=grpcutil.timestamp(template.created_at),
        update_time=grpcutil.timestamp(template.updated_at),
    )


def _values(template: template_pb2.Template, paths: list[str]) -> dict[str, object]:
    """The request's values by path; a path that names no field gets None, for the rules to refuse."""
    return {path: getattr(template, path) if path in FIELDS else None for path in paths}


class TemplateService(template_pb2_grpc.TemplateServiceServicer):
    """Every method works within the caller's templates (an admin's: everyone's); DomainError becomes a status in
    the CallInterceptor."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def CreateTemplate(
        self, request: template_pb2.CreateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.Template:
        owner_user_id = template_domain.owner_of_new_template(auth.principal())
        template = template_domain.new_template(owner_user_id, _values(request.template, list(FIELDS)))
        async with self._engine.begin() as conn:
            saved = await template_store.insert_template(conn, template)
        structlog.contextvars.bind_contextvars(template_id=saved.template_id)
        log.info("template created")
        return template_to_proto(saved)

    async def GetTemplate(
        self, request: template_pb2.GetTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.Template:
        template_domain.validate_template_id(request.template_id)
        structlog.contextvars.bind_contextvars(template_id=request.template_id)
        async with self._engine.connect() as conn:
            template = await template_store.template_by_id(
                conn, request.template_id, template_domain.owner_scope(auth.principal())
            )
        if template is None:
            raise template_domain.template_not_found(request.template_id)
        return template_to_proto(template)

    async def ListTemplates(
        self, request: template_pb2.ListTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.ListTemplatesResponse:
        owner = template_domain.list_owner(auth.principal(), request.owner_user_id)
        page = template_domain.page_of(request.page_size, request.page_token)
        with_bodies = request.view == template_pb2.TEMPLATE_VIEW_FULL
        async with self._engine.connect() as conn:
            # One more than the page holds tells whether another page follows.
            found = await template_store.templates_after(
                conn, owner, page.after_id, page.size + 1, with_bodies=with_bodies
            )
        shown = found[: page.size]
        more = len(found) > page.size
        return template_pb2.ListTemplatesResponse(
            templates=[template_to_proto(template) for template in shown],
            next_page_token=template_domain.next_page_token(shown[-1].template_id) if more else "",
        )

    async def UpdateTemplate(
        self, request: template_pb2.UpdateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.Template:
        given = request.template
        paths = template_domain.update_paths(
            [field_masks.snake_case(path) for path in request.update_mask.paths],
            [name for name in FIELDS if getattr(given, name)],
        )
        update = template_domain.prepare_update(given.template_id, _values(given, paths))
        structlog.contextvars.bind_contextvars(template_id=update.template_id)
        owner = template_domain.owner_scope(auth.principal())
        async with self._engine.begin() as conn:
            current = None
            if update.template_id > 0:
                current = await template_store.template_by_id(conn, update.template_id, owner, for_update=True)
            template = template_domain.updated_template(update, current)
            saved = await template_store.update_template(conn, template)
        if saved is None:  # only if the locked row vanished, which the lock prevents
            raise template_domain.template_not_found(update.template_id)
        return template_to_proto(saved)

    async def DeleteTemplate(
        self, request: template_pb2.DeleteTemplateRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        template_domain.validate_template_id(request.template_id)
        structlog.contextvars.bind_contextvars(template_id=request.template_id)
        async with self._engine.begin() as conn:
            deleted = await template_store.delete_template(
                conn, request.template_id, template_domain.owner_scope(auth.principal())
            )
        if deleted is None:
            raise template_domain.template_not_found(request.template_id)
        log.info("template deleted")
        return empty_pb2.Empty()
