"""The gRPC servicer of herald.audience.v1.AudienceService: the flow of each RPC; proto conversions are in messages, the SQL in store, the rules in domain and rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import grpc
import structlog
from google.protobuf import empty_pb2, json_format, struct_pb2
from herald.audience.v1 import audience_pb2, audience_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.audience import custom_fields, domain, messages, rules, store
from services.audience.domain import (
    MailingList,
    SegmentRecord,
    SubscriberRecord,
)
from services.audience.emails import EmailDirectory
from services.common import auth, events
from services.common.errors import DomainError, ErrorKind, Violations
from services.common.event_signing import EventSigner
from services.common.outbox import Outbox, UnitOfWork
from services.common.protojson import plain_json

log = structlog.get_logger()

PENDING = "Opt-In Pending"

# How many rows one query of a recipient stream reads; messages carry chunk_size of them.
STREAM_FETCH = 20_000
# A pending subscriber is sent at most one confirmation email in this time (a form sent twice sends one).
CONFIRMATION_EVERY = timedelta(hours=1)


class ImportHandler(Protocol):
    """The import RPCs (services/audience/imports.py), which this servicer delegates to."""

    async def create(
        self, request: audience_pb2.CreateImportRequest, principal: auth.Principal
    ) -> audience_pb2.Import: ...

    async def stream(
        self, request_iterator: AsyncIterator[audience_pb2.StreamImportRequest], principal: auth.Principal
    ) -> audience_pb2.Import: ...

    async def get(
        self, request: audience_pb2.GetImportRequest, principal: auth.Principal
    ) -> audience_pb2.Import: ...


async def _definitions(conn: AsyncConnection, list_ids: Sequence[int]) -> dict[int, SegmentRecord]:
    return {segment.segment_id: segment for segment in await store.segments_of_lists(conn, list_ids)}


def _segment_definitions(records: Mapping[int, SegmentRecord]) -> dict[int, rules.SegmentDefinition]:
    return {segment_id: record.definition() for segment_id, record in records.items()}


class AudienceService(audience_pb2_grpc.AudienceServiceServicer):
    """Lists, subscribers, segments, suppression and targeting, every call scoped to the principal's user."""

    def __init__(
        self,
        engine: AsyncEngine,
        emails: EmailDirectory,
        imports: ImportHandler,
        outbox: Outbox,
        opt_in_signer: EventSigner,
    ) -> None:
        self._engine = engine
        self._emails = emails
        self._imports = imports
        self._outbox = outbox
        self._opt_in_signer = opt_in_signer
        self._fields = custom_fields.CustomFields(engine)

    # --- lists ------------------------------------------------------------------------------------------

    async def CreateList(
        self, request: audience_pb2.CreateListRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.List:
        principal = auth.principal()
        bundled = request.HasField("confirmation_email")
        opt_in = messages.enum_name(messages.OPT_IN_NAMES, request.opt_in_mode)
        if opt_in is None:
            opt_in_mode = "?"  # not a mode: validate_new_list names it
        elif bundled:
            opt_in_mode = "Double"  # a confirmation email means double opt-in, whatever opt_in_mode says
        else:
            opt_in_mode = opt_in or "Single"
        new = domain.NewList(
            name=request.name,
            description=request.description,
            opt_in_mode=opt_in_mode,
            sender_name=request.sender_name,
            sender_email_address=request.sender_email_address,
            sender_company=request.sender_company,
            sender_address=request.sender_address,
        )
        violations = Violations()
        try:
            new = domain.validate_new_list(new)
        except DomainError as exc:
            violations.items.extend(exc.violations)
        confirmation = None
        if bundled:
            email = request.confirmation_email
            confirmation = domain.ConfirmationEmail(
                subject=email.subject,
                from_name=email.from_name,
                from_email=email.from_email,
                content_type=messages.CONTENT_TYPE_NAMES.get(email.content_type, "?"),
                html_content=email.html_content,
                plain_content=email.plain_content,
                mode=messages.MODE_NAMES.get(email.mode, "?"),
                template_id=email.template_id,
            )
            domain.check_confirmation_email(confirmation, violations)
        violations.raise_if_any()
        if confirmation is not None and (parts := domain.missing_confirm_link_parts(confirmation)):
            # As the email service of old refused an opt-in email without it: the email is not created.
            raise domain.confirmation_email_failed(f"the {' and '.join(parts)} content has no %Link:Confirm%")
        owner = domain.owner_of_new(principal, "lists")
        if not bundled:
            async with self._engine.begin() as conn:
                created = await store.inserted_list(conn, owner, new)
            log.info("list created", list_id=created.list_id)
            return messages.list_message(created)
        email_id = 0
        try:
            # The list's row stays uncommitted while the email is made: if that fails, the
            # rollback leaves no list behind (the bundled create is atomic).
            async with self._engine.begin() as conn:
                created = await store.inserted_list(conn, owner, new)
                email_id = await self._emails.created_confirmation_email(
                    request.confirmation_email, created.list_id
                )
                created = await store.list_with_confirmation_email(conn, created.list_id, email_id)
        except BaseException:
            if email_id:
                await self._emails.delete_email(email_id)
            raise
        log.info("list created", list_id=created.list_id, confirmation_email_id=email_id)
        return messages.list_message(created)

    async def GetList(
        self, request: audience_pb2.GetListRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.List:
        domain.validate_list_id(request.list_id)
        async with self._engine.connect() as conn:
            found = await store.list_by_id(
                conn, request.list_id, domain.owner_scope(auth.principal()), counted=True
            )
        if found is None:
            raise domain.list_not_found(request.list_id)
        return messages.list_message(found)

    async def ListLists(
        self, request: audience_pb2.ListListsRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.ListListsResponse:
        domain.check_page(request.page_size, request.skip)
        async with self._engine.connect() as conn:
            found, total = await store.lists_page(
                conn,
                domain.owner_scope(auth.principal()),
                page_size=request.page_size,
                skip=request.skip,
                order_by=messages.LIST_ORDER.get(request.order_by, "list_id"),
                descending=request.descending,
                search=request.search.strip(),
                archived=messages.ARCHIVED.get(request.archived, False),
            )
        return audience_pb2.ListListsResponse(
            lists=[messages.list_message(item) for item in found], total_size=total
        )

    async def DeleteLists(
        self, request: audience_pb2.DeleteListsRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        list_ids = domain.validate_ids(request.list_ids, "list_ids", domain.LIST_IDS_REQUIRED)
        async with self._engine.begin() as conn:
            deleted = await store.deleted_list_count(conn, list_ids, domain.owner_scope(auth.principal()))
        log.info("lists deleted", requested=len(list_ids), deleted=deleted)
        return empty_pb2.Empty()

    # --- subscribers ------------------------------------------------------------------------------------

    async def _owned_list(self, conn: AsyncConnection, list_id: int, where: str = "list_id") -> MailingList:
        found = await store.list_by_id(conn, list_id, domain.owner_scope(auth.principal()))
        if found is None:
            raise domain.list_not_found(list_id, where)
        return found

    async def CreateSubscriber(
        self, request: audience_pb2.CreateSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.Subscriber:
        given = request.subscriber
        violations = Violations()
        new = domain.validate_new_subscriber(
            list_id=given.list_id,
            email_address=given.email_address,
            first_name=given.first_name,
            last_name=given.last_name,
            custom_fields=dict(given.custom_fields),
            status=messages.enum_name(messages.STATUS_NAMES, given.status),
            bounce_type=messages.enum_name(messages.BOUNCE_NAMES, given.bounce_type),
            subscription_date=messages.instant(given, "subscription_time"),
            subscription_ip=given.subscription_ip,
            unsubscription_date=messages.instant(given, "unsubscription_time"),
            unsubscription_ip=given.unsubscription_ip,
            optin_date=messages.instant(given, "opt_in_time"),
            source=given.source,
            source_ref=given.source_ref,
            violations=violations,
        )
        enforce = request.enforce_required_fields
        mailing_list = None
        problem = None
        if given.list_id > 0:
            async with self._engine.connect() as conn:
                mailing_list = await store.list_by_id(conn, given.list_id, domain.owner_scope(auth.principal()))
                if mailing_list is not None:
                    checked = await custom_fields.field_values(
                        conn,
                        given.list_id,
                        new.custom_fields,
                        enforce=enforce,
                        form=False,
                        except_key=new.email_key,
                        lock=False,
                    )
                    problem = checked.problem
        if mailing_list is not None:
            domain.check_list_rules(new, mailing_list, violations)
        custom_fields.raise_if_any(violations, problem, prefix="subscriber.")
        if mailing_list is None:
            raise domain.list_not_found(given.list_id, "subscriber.list_id")
        if request.opt_in_confirmation_email_id:
            await self._emails.require_email(request.opt_in_confirmation_email_id)
        if request.validate_only:
            async with self._engine.connect() as conn:
                existing = await store.existing_subscriber(conn, new.list_id, new.email_key)
            if existing is not None:
                domain.duplicate_verdict(existing[1], request.update_if_duplicate, request.update_if_unsubscribed)
            return audience_pb2.Subscriber()
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            # The key-share lock keeps a concurrent DeleteLists from removing the list under the insert.
            if await store.list_by_id(conn, new.list_id, domain.owner_scope(auth.principal()), lock=True) is None:
                raise domain.list_not_found(new.list_id, "subscriber.list_id")
            # Checked again under the lock of the list's unique values: this is the verdict that counts.
            checked = await custom_fields.field_values(
                conn,
                new.list_id,
                new.custom_fields,
                enforce=enforce,
                form=False,
                except_key=new.email_key,
                lock=True,
            )
            custom_fields.raise_if_any(Violations(), checked.problem, prefix="subscriber.")
            new = replace(new, custom_fields=checked.values)
            # A new subscriber gets the list fields' defaults for the values not given; an update keeps its own.
            fresh = replace(new, custom_fields={**checked.defaults, **checked.values})
            subscriber_id = await store.inserted_subscriber_id(conn, mailing_list.owner_user_id, fresh)
            if subscriber_id is None:
                existing = await store.existing_subscriber(conn, new.list_id, new.email_key)
                if existing is None:  # deleted between the insert and the lookup: add it after all
                    subscriber_id = await store.inserted_subscriber_id(conn, mailing_list.owner_user_id, fresh)
                else:
                    domain.duplicate_verdict(
                        existing[1], request.update_if_duplicate, request.update_if_unsubscribed
                    )
                    subscriber_id = await store.updated_subscriber_id(conn, existing[0], new)
            if subscriber_id is None:
                raise domain.subscriber_exists()
            record = await self._subscriber_with_segments(conn, new.list_id, subscriber_id=subscriber_id)
            confirm = not request.HasField("send_confirmation_email") or request.send_confirmation_email
            if record.status == PENDING and mailing_list.opt_in_mode == "Double" and confirm:
                email_id = request.opt_in_confirmation_email_id or mailing_list.confirmation_email_id
                await self._request_confirmation(work, mailing_list, record, email_id, datetime.now(UTC))
        log.info("subscriber added", list_id=new.list_id, subscriber_id=subscriber_id)
        return messages.subscriber_message(record)

    async def SubscribeSubscriber(
        self, request: audience_pb2.SubscribeSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.Subscriber:
        violations = Violations()
        if request.list_id <= 0:
            violations.add("list_id", domain.LIST_ID_REQUIRED, "list_id is required")
        address, key = domain.check_email(request.email_address, violations)
        ip_address = request.ip_address.strip()
        if not ip_address:
            violations.add("ip_address", domain.IP_ADDRESS_REQUIRED, "ip_address is required")
        elif not domain.is_ip_address(ip_address):
            violations.add("ip_address", domain.IP_ADDRESS_INVALID, "ip_address is not an IPv4 or IPv6 address")
        given = domain.check_custom_fields(dict(request.custom_fields), violations)
        now = datetime.now(UTC)
        async with self._outbox.unit_of_work() as work:
            conn = work.conn
            mailing_list = None
            if request.list_id > 0:
                mailing_list = await store.list_by_id(
                    conn, request.list_id, domain.owner_scope(auth.principal()), lock=True
                )
                if mailing_list is None:
                    violations.add("list_id", domain.LIST_NOT_FOUND, f"list {request.list_id} not found")
            problem = None
            if mailing_list is not None:
                checked = await custom_fields.field_values(
                    conn,
                    mailing_list.list_id,
                    given,
                    enforce=request.enforce_required_fields,
                    form=True,
                    except_key=key,
                    lock=True,
                )
                problem = checked.problem
            custom_fields.raise_if_any(violations, problem)
            if mailing_list is None:  # a missing list is one of the violations just raised
                raise domain.list_not_found(request.list_id)
            if request.validate_only:
                return audience_pb2.Subscriber()
            double = mailing_list.opt_in_mode == "Double"
            new = domain.NewSubscriber(
                list_id=mailing_list.list_id,
                email_address=address,
                email_key=key,
                custom_fields={**checked.defaults, **checked.values},
                status="Opt-In Pending" if double else "Subscribed",
                subscription_date=now,
                subscription_ip=ip_address,
                # Subscribing through the form is the opt-in of a single opt-in list.
                optin_date=None if double else now,
                source=domain.normalise_source(request.source),
                source_ref=request.source_ref.replace("\x00", "")[: domain.MAX_SOURCE_REF],
            )
            inserted = await store.inserted_subscriber_id(conn, mailing_list.owner_user_id, new)
            duplicate = inserted is None
            if inserted is not None:
                subscriber_id = inserted
            else:
                existing = await store.existing_subscriber(conn, mailing_list.list_id, key)
                # Already on the list: nothing changes (an unsubscription is not undone by a call without
                # credentials), and the answer (9) says no more than that, whatever the status. Only a
                # subscriber still waiting for its confirmation is sent it again (the form sent twice), at
                # most once an hour; the answer is the same duplicate.
                if not double or existing is None or existing[1] != PENDING:
                    raise domain.subscriber_exists()
                subscriber_id = existing[0]
            record = await store.subscriber_by(conn, mailing_list.list_id, subscriber_id=subscriber_id)
            if record is None:  # inserted or locked in this very transaction
                raise domain.subscriber_not_found()
            if double:
                await self._request_confirmation(
                    work, mailing_list, record, mailing_list.confirmation_email_id, now
                )
        if duplicate:  # raised once the confirmation request (if any) has committed
            raise domain.subscriber_exists()
        log.info(
            "subscriber subscribed",
            list_id=mailing_list.list_id,
            subscriber_id=subscriber_id,
            status=record.status,
        )
        return messages.subscriber_message(record)

    async def _request_confirmation(
        self, work: UnitOfWork, mailing_list: MailingList, record: SubscriberRecord, email_id: int, now: datetime
    ) -> None:
        """Asks delivery, with the change that made the subscriber pending, to send it the confirmation email:
        at most once per CONFIRMATION_EVERY per subscriber."""
        context = {"list_id": mailing_list.list_id, "subscriber_id": record.subscriber_id}
        if not email_id:
            log.warning("double opt-in list without a confirmation email: none sent", **context)
            return
        requested = await store.claimed_confirmation_time(work.conn, record.subscriber_id, now, CONFIRMATION_EVERY)
        if requested is None:
            log.info("opt-in confirmation already sent within the hour", **context)
            return
        event = audience_pb2.OptInConfirmationRequestedEvent(
            owner_user_id=mailing_list.owner_user_id,
            list_id=mailing_list.list_id,
            subscriber_id=record.subscriber_id,
            email_address=record.email_address,
            first_name=record.first_name,
            last_name=record.last_name,
            email_id=email_id,
            subscription_ip=record.subscription_ip,
        )
        event.request_time.FromDatetime(requested)
        if record.subscription_date is not None:
            event.subscription_time.FromDatetime(record.subscription_date)
        if record.optin_date is not None:
            event.opt_in_time.FromDatetime(record.optin_date)
        key = f"{record.subscriber_id}:{event.request_time.ToMicroseconds()}"
        work.publish(events.OPT_IN_CONFIRMATION_REQUESTED, event, key=key, signer=self._opt_in_signer)
        log.info("opt-in confirmation requested", email_id=email_id, **context)

    async def ConfirmSubscription(
        self, request: audience_pb2.ConfirmSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.Subscriber:
        """The confirm link: Opt-In Pending → Subscribed; a subscriber already Subscribed is answered as is."""
        ip_address = request.ip_address.strip()
        if ip_address and not domain.is_ip_address(ip_address):
            ip_address = ""
        async with self._engine.begin() as conn:
            await self._owned_list(conn, request.list_id)
            now = datetime.now(UTC)
            await store.confirmed_subscriber_id(conn, request.list_id, request.subscriber_id, ip_address, now)
            record = await store.subscriber_by(conn, request.list_id, subscriber_id=request.subscriber_id)
        if record is None or record.status != "Subscribed":
            raise domain.subscriber_not_found()
        log.info("subscription confirmed", list_id=request.list_id, subscriber_id=request.subscriber_id)
        return messages.subscriber_message(record)

    async def RejectSubscription(
        self, request: audience_pb2.RejectSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """The reject link: a pending subscriber is removed, one already gone is answered the same (the link works
        twice); a subscriber that confirmed (or left) since is NOT_FOUND, and stays as it is."""
        async with self._engine.begin() as conn:
            await self._owned_list(conn, request.list_id)
            removed = await store.rejected_count(conn, request.list_id, request.subscriber_id)
            if not removed and await store.subscriber_by(
                conn, request.list_id, subscriber_id=request.subscriber_id
            ):
                raise domain.subscriber_not_found()
        log.info(
            "subscription rejected", list_id=request.list_id, subscriber_id=request.subscriber_id, removed=removed
        )
        return empty_pb2.Empty()

    async def _subscriber_with_segments(
        self, conn: AsyncConnection, list_id: int, *, subscriber_id: int = 0, key: str = ""
    ) -> SubscriberRecord:
        record = await store.subscriber_by(conn, list_id, subscriber_id=subscriber_id, key=key)
        if record is None:
            raise domain.subscriber_not_found("subscriber_id" if subscriber_id else "email_address")
        segment_records = await _definitions(conn, [list_id])
        inside = await store.segments_containing(
            conn,
            record.subscriber_id,
            _segment_definitions(segment_records),
            {segment_id: r.name for segment_id, r in segment_records.items()},
        )
        return SubscriberRecord(**{**record.__dict__, "segments": inside})

    async def GetSubscriber(
        self, request: audience_pb2.GetSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.Subscriber:
        violations = Violations()
        if request.list_id <= 0:
            violations.add("list_id", domain.LIST_ID_REQUIRED, "list_id is required")
        if request.subscriber_id <= 0 and not request.email_address.strip():
            violations.add(
                "subscriber_id", domain.SUBSCRIBER_SELECTOR_REQUIRED, "subscriber_id or email_address is required"
            )
        violations.raise_if_any()
        async with self._engine.connect() as conn:
            await self._owned_list(conn, request.list_id)
            record = await self._subscriber_with_segments(
                conn,
                request.list_id,
                subscriber_id=request.subscriber_id,
                key=domain.email_key(request.email_address),
            )
        return messages.subscriber_message(record)

    async def ListSubscribers(
        self, request: audience_pb2.ListSubscribersRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.ListSubscribersResponse:
        domain.validate_list_id(request.list_id)
        domain.check_page(request.page_size, request.skip)
        status = messages.enum_name(messages.STATUS_NAMES, request.status)
        bounce_type = messages.enum_name(messages.BOUNCE_NAMES, request.bounce_type)
        violations = Violations()
        if status is None:
            violations.add("status", domain.STATUS_INVALID, "status is not a subscriber status")
        if bounce_type is None:
            violations.add("bounce_type", domain.BOUNCE_TYPE_INVALID, "bounce_type is not a bounce type")
        if request.segment_id < 0:
            violations.add("segment_id", domain.SEGMENT_ID_INVALID, "segment_id must not be negative")
        violations.raise_if_any()
        async with self._engine.connect() as conn:
            # Checked in the legacy code order: the list, then the segment, then the search field.
            await self._owned_list(conn, request.list_id)
            segment_records = await _definitions(conn, [request.list_id]) if request.segment_id else {}
            definitions = _segment_definitions(segment_records)
            segment = None
            if request.segment_id:
                segment = definitions.get(request.segment_id)
                if segment is None or segment.list_id != request.list_id:
                    raise domain.segment_not_found(request.segment_id)
            search_column = "email_address"
            if request.search_field.strip():
                search_column = domain.search_column(request.search_field)
            found, total = await store.subscribers_page(
                conn,
                request.list_id,
                status=status or "",
                bounce_type=bounce_type or "",
                segment=segment,
                segment_definitions=definitions,
                suppressed_only=request.suppressed_only,
                search_column=search_column,
                keyword=request.search_keyword,
                order_column=domain.order_column(request.order_by),
                descending=request.descending,
                page_size=request.page_size,
                skip=request.skip,
            )
        return audience_pb2.ListSubscribersResponse(
            subscribers=[messages.subscriber_message(item) for item in found], total_size=total
        )

    async def UnsubscribeSubscribers(
        self, request: audience_pb2.UnsubscribeSubscribersRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.UnsubscribeSubscribersResponse:
        violations = Violations()
        if request.list_id <= 0:
            violations.add("list_id", domain.LIST_ID_REQUIRED, "list_id is required")
        selection = domain.Selection()
        try:
            selection = domain.unsubscribe_selection(
                request.subscriber_id,
                request.email_address,
                messages.rules_of(request, "rules"),
                request.rules_operator,
                request.ip_address,
            )
        except DomainError as exc:
            violations.items.extend(exc.violations)
        violations.raise_if_any()
        single = selection.criteria is None
        async with self._engine.begin() as conn:
            mailing_list = await self._owned_list(conn, request.list_id)
            definitions = _segment_definitions(await _definitions(conn, [request.list_id]))
            if single:
                statuses = await store.selected_statuses(
                    conn, request.list_id, selection, definitions, lock=not request.preview
                )
                if not statuses:
                    raise domain.subscriber_not_found("email_address" if selection.email_key else "subscriber_id")
                if all(status == "Unsubscribed" for status in statuses):
                    raise DomainError(
                        ErrorKind.PRECONDITION,
                        domain.SUBSCRIBER_ALREADY_UNSUBSCRIBED,
                        "the subscriber has already unsubscribed",
                    )
            if request.preview:
                count = await store.unsubscribable_count(conn, request.list_id, selection, definitions)
                return audience_pb2.UnsubscribeSubscribersResponse(unsubscribed_count=count)
            unsubscribed = await store.unsubscribed_subscribers(
                conn, request.list_id, selection, definitions, request.ip_address
            )
            if request.add_to_suppression:
                keys = [key for _, key in unsubscribed]
                await store.added_suppression_count(conn, mailing_list.owner_user_id, keys)
        log.info("subscribers unsubscribed", list_id=request.list_id, count=len(unsubscribed))
        response = audience_pb2.UnsubscribeSubscribersResponse(unsubscribed_count=len(unsubscribed))
        if request.include_unsubscribed:
            response.unsubscribed.extend(
                audience_pb2.UnsubscribedSubscriber(subscriber_id=subscriber_id, email_address=key)
                for subscriber_id, key in sorted(unsubscribed)
            )
        return response

    async def DeleteSubscribers(
        self, request: audience_pb2.DeleteSubscribersRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.DeleteSubscribersResponse:
        violations = Violations()
        if request.list_id <= 0:
            violations.add("list_id", domain.LIST_ID_REQUIRED, "list_id is required")
        selection = domain.Selection()
        raw_rules = messages.rules_of(request, "rules")
        if request.subscriber_ids:
            if any(subscriber_id <= 0 for subscriber_id in request.subscriber_ids):
                violations.add(
                    "subscriber_ids", domain.SUBSCRIBER_IDS_INVALID, "subscriber_ids must be positive integers"
                )
            selection = domain.Selection(subscriber_ids=tuple(domain.unique_ids(request.subscriber_ids)))
        elif raw_rules is not None:
            try:
                selection = domain.rules_selection(raw_rules, request.rules_operator)
            except DomainError as exc:
                violations.items.extend(exc.violations)
        else:
            violations.add(
                "subscriber_ids", domain.SUBSCRIBER_SELECTOR_REQUIRED, "subscriber_ids or rules is required"
            )
        violations.raise_if_any()
        async with self._engine.begin() as conn:
            mailing_list = await self._owned_list(conn, request.list_id)
            definitions = _segment_definitions(await _definitions(conn, [request.list_id]))
            if request.suppressed:
                count = await store.unsuppressed_count(
                    conn, mailing_list.owner_user_id, request.list_id, selection, definitions
                )
            else:
                count = await store.deleted_subscriber_count(conn, request.list_id, selection, definitions)
        log.info("subscribers deleted", list_id=request.list_id, suppressed=request.suppressed, count=count)
        return audience_pb2.DeleteSubscribersResponse(deleted_count=count)

    # --- segments ---------------------------------------------------------------------------------------

    async def CreateSegment(
        self, request: audience_pb2.CreateSegmentRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.Segment:
        given = request.segment
        new = domain.validate_new_segment(
            list_id=given.list_id,
            name=given.name,
            operator=given.operator,
            raw_rules=messages.rules_of(given, "rules") or [],
            randomness=given.randomness,
            audience_size=given.randomness_audience_size,
        )
        async with self._engine.begin() as conn:
            mailing_list = await store.list_by_id(
                conn, new.list_id, domain.owner_scope(auth.principal()), lock=True
            )
            if mailing_list is None:
                raise domain.list_not_found(new.list_id, "segment.list_id")
            domain.check_segment_references(new.criteria, await _definitions(conn, [new.list_id]))
            created = await store.inserted_segment(conn, mailing_list.owner_user_id, new)
        log.info("segment created", list_id=new.list_id, segment_id=created.segment_id)
        return messages.segment_message(created)

    async def ListSegments(
        self, request: audience_pb2.ListSegmentsRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.ListSegmentsResponse:
        domain.validate_list_id(request.list_id)
        async with self._engine.connect() as conn:
            await self._owned_list(conn, request.list_id)
            records = await _definitions(conn, [request.list_id])
            definitions = _segment_definitions(records)
            chosen = [r for r in records.values() if request.segment_id in (0, r.segment_id)]
            if request.include_totals:
                chosen = [
                    SegmentRecord(
                        **{
                            **r.__dict__,
                            "subscriber_count": await store.member_count(
                                conn, definitions[r.segment_id], definitions
                            ),
                        }
                    )
                    for r in chosen
                ]
        order = request.order_by
        key: Any
        if order == audience_pb2.SEGMENT_ORDER_FIELD_SEGMENT_ID:
            key = lambda r: (r.segment_id,)  # noqa: E731
        elif order == audience_pb2.SEGMENT_ORDER_FIELD_OPERATOR:
            key = lambda r: (r.operator, r.segment_id)  # noqa: E731
        elif order == audience_pb2.SEGMENT_ORDER_FIELD_SUBSCRIBER_COUNT:
            key = lambda r: (r.subscriber_count, r.segment_id)  # noqa: E731
        else:
            key = lambda r: (r.name.casefold(), r.segment_id)  # noqa: E731
        chosen.sort(key=key, reverse=request.descending)
        return audience_pb2.ListSegmentsResponse(segments=[messages.segment_message(r) for r in chosen])

    async def DeleteSegments(
        self, request: audience_pb2.DeleteSegmentsRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        segment_ids = domain.validate_ids(request.segment_ids, "segment_ids", domain.SEGMENT_IDS_REQUIRED)
        async with self._engine.begin() as conn:
            deleted = await store.deleted_segment_count(conn, segment_ids, domain.owner_scope(auth.principal()))
        log.info("segments deleted", requested=len(segment_ids), deleted=deleted)
        return empty_pb2.Empty()

    # --- custom fields (services/audience/custom_fields.py) -----------------------------------------------

    async def CreateCustomField(
        self, request: audience_pb2.CreateCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.CustomField:
        return await self._fields.create_field(request, auth.principal())

    async def GetCustomField(
        self, request: audience_pb2.GetCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.CustomField:
        return await self._fields.get_field(request, auth.principal())

    async def ListCustomFields(
        self, request: audience_pb2.ListCustomFieldsRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.ListCustomFieldsResponse:
        return await self._fields.list_fields(request, auth.principal())

    async def UpdateCustomField(
        self, request: audience_pb2.UpdateCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.CustomField:
        return await self._fields.update_field(request, auth.principal())

    async def DeleteCustomFields(
        self, request: audience_pb2.DeleteCustomFieldsRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        return await self._fields.delete_fields(request, auth.principal())

    # --- suppression ------------------------------------------------------------------------------------

    async def AddSuppressions(
        self, request: audience_pb2.AddSuppressionsRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.AddSuppressionsResponse:
        keys = domain.suppression_keys(list(request.email_addresses))
        owner = domain.owner_of_new(auth.principal(), "a suppression list")
        async with self._engine.begin() as conn:
            added = await store.added_suppression_count(conn, owner, keys)
        log.info("suppressions added", requested=len(keys), added=added)
        return audience_pb2.AddSuppressionsResponse(added_count=added)

    # --- imports (services/audience/imports.py) ----------------------------------------------------------

    async def CreateImport(
        self, request: audience_pb2.CreateImportRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.Import:
        return await self._imports.create(request, auth.principal())

    async def StreamImport(
        self, request_iterator: AsyncIterator[audience_pb2.StreamImportRequest], context: grpc.aio.ServicerContext
    ) -> audience_pb2.Import:
        return await self._imports.stream(request_iterator, auth.principal())

    async def GetImport(
        self, request: audience_pb2.GetImportRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.Import:
        return await self._imports.get(request, auth.principal())

    # --- recipients -------------------------------------------------------------------------------------

    async def _recipient_query(self, conn: AsyncConnection, targeting: domain.Targeting) -> store.RecipientQuery:
        """The query of a checked spec: every list must be the caller's, every segment one of its list's."""
        owned = await store.lists_by_id(conn, targeting.list_ids(), domain.owner_scope(auth.principal()))
        named: list[tuple[str, int, int]] = [("included", s.list_id, s.segment_id) for s in targeting.included]
        named += [("excluded", s.list_id, s.segment_id) for s in targeting.excluded]
        if targeting.bundle is not None:
            named += [("rules_bundle.criteria", c.list_id, 0) for c in targeting.bundle.criteria]
        for where, list_id, _ in named:
            if list_id not in owned:
                raise domain.list_not_found(list_id, f"{where}.list_id")
        records = await _definitions(conn, list(owned))
        for where, list_id, segment_id in named:
            if segment_id and (segment_id not in records or records[segment_id].list_id != list_id):
                raise domain.segment_not_found(segment_id, f"{where}.segment_id")
        return store.RecipientQuery(targeting, _segment_definitions(records))

    @staticmethod
    def _targeting(
        included: Sequence[audience_pb2.ListSegment],
        excluded: Sequence[audience_pb2.ListSegment],
        bundle: struct_pb2.Struct | None,
    ) -> domain.Targeting:
        raw_bundle = plain_json(json_format.MessageToDict(bundle)) if bundle is not None else {}
        return domain.validate_targeting(
            [(s.list_id, s.segment_id) for s in included],
            [(s.list_id, s.segment_id) for s in excluded],
            raw_bundle,
        )

    async def CountRecipients(
        self, request: audience_pb2.CountRecipientsRequest, context: grpc.aio.ServicerContext
    ) -> audience_pb2.CountRecipientsResponse:
        targeting = self._targeting(
            request.included, request.excluded, request.rules_bundle if request.HasField("rules_bundle") else None
        )
        async with self._engine.connect() as conn:
            query = await self._recipient_query(conn, targeting)
            total = await store.recipient_count(conn, query)
        return audience_pb2.CountRecipientsResponse(total=total)

    async def CheckTargeting(
        self, request: audience_pb2.CheckTargetingRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        spec = request.targeting
        targeting = self._targeting(
            spec.included, spec.excluded, spec.rules_bundle if spec.HasField("rules_bundle") else None
        )
        principal = auth.principal()
        owner = (request.owner_user_id or None) if principal.is_admin else principal.user_id
        async with self._engine.connect() as conn:
            owned = await store.lists_by_id(conn, targeting.list_ids(), owner)
            records = await _definitions(conn, list(owned))
        problems = domain.unowned_sources(targeting, owned, {sid: r.list_id for sid, r in records.items()})
        if problems:
            raise domain.sources_not_found(problems)
        return empty_pb2.Empty()

    async def StreamRecipients(
        self, request: audience_pb2.StreamRecipientsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audience_pb2.StreamRecipientsResponse]:
        spec = request.targeting
        targeting = self._targeting(
            spec.included, spec.excluded, spec.rules_bundle if spec.HasField("rules_bundle") else None
        )
        chunk = domain.chunk_size(request.chunk_size)
        remaining = request.limit if request.limit > 0 else None
        after = max(request.after_subscriber_id, 0)
        async with self._engine.connect() as conn:
            query = await self._recipient_query(conn, targeting)
            # Personalization names custom fields by id or alias and shows a default for a missing value.
            fields = await store.fields_of_lists(conn, targeting.list_ids())
            await conn.rollback()
            while remaining is None or remaining > 0:
                fetch = max(STREAM_FETCH, chunk) if remaining is None else min(max(STREAM_FETCH, chunk), remaining)
                rows = await store.recipient_rows(conn, query, after, fetch)
                # Each read is its own short transaction: a slow client holds no snapshot open.
                await conn.rollback()
                if not rows:
                    return
                for start in range(0, len(rows), chunk):
                    yield messages.recipients_message(rows[start : start + chunk], fields)
                after = rows[-1][0]
                if remaining is not None:
                    remaining -= len(rows)
                if len(rows) < fetch:
                    return
