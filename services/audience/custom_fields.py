"""The custom field RPCs of AudienceService (definitions of a list's or an owner's fields), and the check of a
subscriber's values against them that CreateSubscriber and SubscribeSubscriber share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import structlog
from google.protobuf import empty_pb2
from herald.audience.v1 import audience_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.audience import domain, messages, store
from services.audience.domain import CustomFieldRecord, FieldProblem, FieldSpec, FieldValues
from services.common import auth, field_masks
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations

log = structlog.get_logger()

# UpdateCustomField's mask paths → the FieldSpec attribute each sets ("list_id" and "is_global" are the field's scope).
FIELD_MASK_PATHS = {
    "name": "name",
    "type": "field_type",
    "default_value": "default_value",
    "options": "options",
    "required": "required",
    "unique": "unique",
    "validation_method": "validation_method",
    "validation_rule": "validation_rule",
    "merge_tag_alias": "merge_tag_alias",
    "visibility": "visibility",
    "first_year": "first_year",
    "last_year": "last_year",
    "is_global": "is_global",
}
# Every path UpdateCustomField accepts (an omitted mask: those the request populates).
UPDATABLE_PATHS = (*FIELD_MASK_PATHS, "list_id")


def raise_if_any(violations: Violations, problem: FieldProblem | None = None, *, prefix: str = "") -> None:
    """Raises every violation, with a custom field value's problem among them (its field path under `prefix`,
    "subscriber." for CreateSubscriber); ErrorInfo then names the field (custom_field_id, custom_field_name),
    which a subscription form shows beside its error."""
    metadata: dict[str, str] = {}
    if problem is not None:
        violations.add(prefix + problem.where, problem.reason, problem.message)
        if problem.custom_field is not None:
            metadata = {
                "custom_field_id": problem.custom_field.key,
                "custom_field_name": problem.custom_field.spec.name,
            }
    if violations:
        first = violations.items[0]
        raise DomainError(ErrorKind.INVALID, first.reason, first.description, list(violations.items), metadata)


def _kind_of(violations: Violations) -> ErrorKind:
    """The status of a request whose only problems are a missing list or field (NOT_FOUND) or a taken alias
    (CONFLICT); anything else makes it INVALID."""
    reasons = {item.reason for item in violations.items}
    if reasons <= {domain.LIST_NOT_FOUND, domain.CUSTOM_FIELD_NOT_FOUND}:
        return ErrorKind.NOT_FOUND
    if reasons == {domain.MERGE_TAG_ALIAS_TAKEN}:
        return ErrorKind.CONFLICT
    return ErrorKind.INVALID


def raise_field_request(violations: Violations) -> None:
    if violations:
        first = violations.items[0]
        raise DomainError(_kind_of(violations), first.reason, first.description, list(violations.items))


async def field_values(
    conn: AsyncConnection,
    list_id: int,
    given: Mapping[str, str],
    *,
    enforce: bool,
    form: bool,
    except_key: str,
    lock: bool,
) -> FieldValues:
    """A subscriber's custom field values checked against the definitions the list sees; with `lock`, the
    list's uniqueness checks wait for each other until the transaction ends (so two subscribers cannot
    both take a unique value that is free when each looks)."""
    fields = (await store.fields_of_lists(conn, [list_id])).get(list_id, [])
    candidates = domain.unique_candidates(fields, given, enforce=enforce, form=form)
    clashes: set[int] = set()
    if candidates:
        if lock:
            await store.lock_unique_values(conn, list_id)
        clashes = await store.clashing_field_ids(conn, list_id, candidates, except_key)
    return domain.check_values(fields, given, enforce=enforce, form=form, clashes=clashes)


class CustomFields:
    """CreateCustomField, GetCustomField, ListCustomFields, UpdateCustomField and DeleteCustomFields, each
    scoped to the principal's user (an admin's: every user's)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_field(
        self, request: audience_pb2.CreateCustomFieldRequest, principal: auth.Principal
    ) -> audience_pb2.CustomField:
        given = request.custom_field
        violations = Violations()
        spec = domain.validate_field_spec(messages.field_spec(given), violations)
        if given.list_id <= 0:
            violations.add("custom_field.list_id", domain.LIST_ID_REQUIRED, "custom_field.list_id is required")
        async with self._engine.begin() as conn:
            mailing_list = None
            if given.list_id > 0:
                mailing_list = await store.list_by_id(
                    conn, given.list_id, domain.owner_scope(principal), lock=True
                )
                if mailing_list is None:
                    violations.add(
                        "custom_field.list_id", domain.LIST_NOT_FOUND, f"list {given.list_id} not found"
                    )
            scope = None if spec.is_global else given.list_id
            if mailing_list is not None:
                await store.lock_owner_fields(conn, mailing_list.owner_user_id)
                await self._check_alias(conn, mailing_list.owner_user_id, spec, scope, 0, violations)
            raise_field_request(violations)
            if mailing_list is None:  # a missing list is one of the violations just raised
                raise domain.list_not_found(given.list_id, "custom_field.list_id")
            if request.validate_only:
                return audience_pb2.CustomField()
            created = await store.inserted_custom_field(conn, mailing_list.owner_user_id, scope, spec)
        log.info("custom field created", list_id=given.list_id, custom_field_id=created.custom_field_id)
        return messages.custom_field_message(created)

    @staticmethod
    async def _check_alias(
        conn: AsyncConnection,
        owner: int,
        spec: FieldSpec,
        scope: int | None,
        except_id: int,
        violations: Violations,
    ) -> None:
        """MERGE_TAG_ALIAS_TAKEN when a field the same lists see has the alias (the caller holds the owner's lock)."""
        already = any(item.field.endswith("merge_tag_alias") for item in violations.items)
        if spec.merge_tag_alias and not already:
            if await store.alias_in_use(conn, owner, spec.merge_tag_alias, scope, except_id=except_id):
                taken = domain.alias_taken(spec.merge_tag_alias)
                violations.items.extend(taken.violations)

    async def get_field(
        self, request: audience_pb2.GetCustomFieldRequest, principal: auth.Principal
    ) -> audience_pb2.CustomField:
        async with self._engine.connect() as conn:
            found = await store.custom_field_by_id(conn, request.custom_field_id, domain.owner_scope(principal))
        if found is None:
            raise domain.custom_field_not_found(request.custom_field_id)
        return messages.custom_field_message(found)

    async def list_fields(
        self, request: audience_pb2.ListCustomFieldsRequest, principal: auth.Principal
    ) -> audience_pb2.ListCustomFieldsResponse:
        if request.list_id < 0:
            raise domain.list_not_found(request.list_id)
        async with self._engine.connect() as conn:
            if request.list_id:
                found_list = await store.list_by_id(conn, request.list_id, domain.owner_scope(principal))
                if found_list is None:
                    raise domain.list_not_found(request.list_id)
                owner = found_list.owner_user_id
            else:
                owner = domain.owner_of_new(principal, "global custom fields")
            found = await store.custom_fields_page(
                conn,
                owner=owner,
                list_id=request.list_id or None,
                include_global=request.include_global,
                order_by=messages.FIELD_ORDER.get(request.order_by, "name"),
                descending=request.descending,
            )
        return audience_pb2.ListCustomFieldsResponse(
            custom_fields=[messages.custom_field_message(f) for f in found]
        )

    async def update_field(
        self, request: audience_pb2.UpdateCustomFieldRequest, principal: auth.Principal
    ) -> audience_pb2.CustomField:
        given = request.custom_field
        paths = set(field_masks.update_paths(request.update_mask, given, UPDATABLE_PATHS))
        unknown = sorted(paths - set(UPDATABLE_PATHS))
        if unknown:
            raise DomainError(
                ErrorKind.INVALID,
                "UPDATE_MASK_INVALID",
                f"update_mask names no field of a custom field: {', '.join(unknown)}",
                [FieldViolation("update_mask", "UPDATE_MASK_INVALID", f"unknown paths {unknown}")],
            )
        violations = Violations()
        async with self._engine.begin() as conn:
            current = await store.custom_field_by_id(
                conn, given.custom_field_id, domain.owner_scope(principal), lock=True
            )
            if current is None:
                raise domain.custom_field_not_found(given.custom_field_id, "custom_field.custom_field_id")
            await store.lock_owner_fields(conn, current.owner_user_id)
            spec = self._updated_spec(current, messages.field_spec(given), paths, violations)
            if "list_id" in paths and given.list_id > 0 and given.list_id != current.list_id:
                # The list of a field is fixed (5.9.3): another list of the caller's is refused, and a list that
                # is not theirs is not found. A global field belongs to no list, so any list of its owner's fits.
                other = await store.list_by_id(conn, given.list_id, current.owner_user_id)
                if other is None:
                    violations.add(
                        "custom_field.list_id", domain.LIST_NOT_FOUND, f"list {given.list_id} not found"
                    )
                elif current.list_id is not None:
                    violations.add(
                        "custom_field.list_id",
                        domain.LIST_CHANGE_REFUSED,
                        "a custom field cannot move to another list; create it there instead",
                    )
            scope = None if spec.is_global else current.list_id
            await self._check_alias(conn, current.owner_user_id, spec, scope, current.custom_field_id, violations)
            raise_field_request(violations)
            if request.validate_only:
                return messages.custom_field_message(current)
            updated = await store.updated_custom_field(conn, current.custom_field_id, scope, spec)
        log.info("custom field updated", custom_field_id=updated.custom_field_id)
        return messages.custom_field_message(updated)

    @staticmethod
    def _updated_spec(
        current: CustomFieldRecord, given: FieldSpec, paths: set[str], violations: Violations
    ) -> FieldSpec:
        """The current settings with the masked ones replaced, checked."""
        changes = {
            FIELD_MASK_PATHS[path]: getattr(given, FIELD_MASK_PATHS[path])
            for path in paths
            if path in FIELD_MASK_PATHS
        }
        if current.spec.is_global and changes.get("is_global") is False:
            violations.add(
                "custom_field.is_global", domain.GLOBAL_FIELD_REQUIRED, "a global field cannot become a list field"
            )
            changes.pop("is_global")
        merged = replace(current.spec, **changes)
        if "options" not in paths and merged.field_type not in domain.CHOICE_TYPES:
            merged = replace(merged, options=())  # a field that is no choice field any more keeps no options
        if "validation_rule" not in paths and merged.validation_method != "Custom":
            merged = replace(merged, validation_rule="")
        if "first_year" not in paths and "last_year" not in paths and merged.field_type != "Date field":
            merged = replace(merged, first_year=0, last_year=0)
        return domain.validate_field_spec(merged, violations)

    async def delete_fields(
        self, request: audience_pb2.DeleteCustomFieldsRequest, principal: auth.Principal
    ) -> empty_pb2.Empty:
        ids = domain.validate_ids(request.custom_field_ids, "custom_field_ids", domain.CUSTOM_FIELD_IDS_REQUIRED)
        async with self._engine.begin() as conn:
            deleted = await store.deleted_custom_field_ids(conn, ids, domain.owner_scope(principal))
        log.info("custom fields deleted", requested=len(ids), deleted=len(deleted))
        return empty_pb2.Empty()
