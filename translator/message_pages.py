"""The pages a sent message links to besides tracking: its web view and its report-abuse link.

- `GET /t/view/<token>?e=<email id>` (%Link:WebBrowser%): the campaign's email (for an A/B campaign
  the variation the recipient got, signed with the token) rendered for the recipient the token was
  signed for (their subscriber fields and their list as audience has them now; their unsubscribe and
  report-abuse links signed again), under its send date and, once the campaign is Sent, a link back to
  the archive of each of its tags. A campaign or email deleted since is the same 404 as a bad token.
- `GET /t/abuse/<token>` (%Link:ReportAbuse%) asks for confirmation, since mail scanners follow links;
  `POST /t/abuse/<token>` records a complaint in delivery (RecordBounces, kind complaint, source
  report_abuse_link), which suppresses the address and unsubscribes it from the list like a provider's
  complaint. The event key names the recipient, so reporting twice records one complaint.

Tokens are the tracking tokens of services/common/tracking.py (kinds "view" and "abuse").
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc
import structlog
from aiohttp import web
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import campaign_pb2, email_pb2
from herald.delivery.v1 import delivery_pb2
from herald.tag.v1 import tag_pb2

from services.common.grpcutil import decode_error
from services.common.personalization import (
    HashedIds,
    legacy_instant,
    list_snapshot,
    list_values,
    render_personalization,
)
from services.common.subscriber_statuses import SUBSCRIBER_STATUS_NAMES
from services.common.tracking import (
    InvalidTrackingToken,
    TrackedRecipient,
    TrackingLinks,
    tracking_key,
    verify_tracking,
)
from translator import archive
from translator.commands import Stubs
from translator.identity import IdentityStore
from translator.tracking import EVENTS, invalid_link, page, try_again_later

log = structlog.get_logger()

_SERVICE_TIMEOUT_SECONDS = 10.0
REPORT_ABUSE_DIAGNOSTIC = "reported as abuse with the message's report-abuse link"


class _Gone(Exception):
    """What the page would show no longer exists (or never did for this token): answered like a bad link."""


def abuse_report(recipient: TrackedRecipient) -> delivery_pb2.BounceReport:
    """The complaint a confirmed report-abuse link records; keyed by recipient, so it is recorded once."""
    return delivery_pb2.BounceReport(
        campaign_id=recipient.campaign_id,
        recipient_id=recipient.recipient_id,
        kind_hint=delivery_pb2.BOUNCE_KIND_COMPLAINT,
        source=delivery_pb2.BOUNCE_SOURCE_REPORT_ABUSE_LINK,
        diagnostic=REPORT_ABUSE_DIAGNOSTIC,
        event_key=f"report-abuse:{recipient.campaign_id}:{recipient.recipient_id}",
    )


def _instant(message: Any, field_name: str) -> str:
    """A Timestamp field with presence as a date tag's value; "" when unset."""
    moment = getattr(message, field_name).ToDatetime(UTC) if message.HasField(field_name) else None
    return legacy_instant(moment)


def subscriber_values(subscriber: audience_pb2.Subscriber | None, hashed_ids: HashedIds) -> dict[str, str]:
    """The `Subscriber:` personalization values of a web view (none when the subscriber is gone)."""
    if subscriber is None:
        return {}
    values = {
        "Subscriber:EmailAddress": subscriber.email_address,
        "Subscriber:FirstName": subscriber.first_name,
        "Subscriber:LastName": subscriber.last_name,
        "Subscriber:SubscriberID": str(subscriber.subscriber_id),
        "Subscriber:Status": SUBSCRIBER_STATUS_NAMES.get(subscriber.status, ""),
        "Subscriber:SubscriptionDate": _instant(subscriber, "subscription_time"),
        "Subscriber:SubscriptionIP": subscriber.subscription_ip,
        "Subscriber:OptInDate": _instant(subscriber, "opt_in_time"),
        "Subscriber:HashedSubscriberID": hashed_ids.subscriber(subscriber.subscriber_id),
    }
    for key, value in subscriber.custom_fields.items():
        values[f"Subscriber:CustomField{key}" if key.isdigit() else f"Subscriber:{key}"] = value
    return values


class MessagePages:
    """The aiohttp handlers of /t/view and /t/abuse."""

    def __init__(self, identity: IdentityStore, stubs: Stubs, public_url: str) -> None:
        self._identity = identity
        self._stubs = stubs
        self._public_url = public_url
        secret = identity.settings.effective_token_secret()
        self._links = TrackingLinks(public_url, secret)
        self._key = tracking_key(secret)
        self._hashed_ids = HashedIds(secret)

    def _verified(self, request: web.Request, kind: str, url: str = "") -> TrackedRecipient | None:
        try:
            payload = verify_tracking(request.match_info["token"], key=self._key, url=url)
        except InvalidTrackingToken as exc:
            EVENTS.labels(kind, "invalid").inc()
            log.info("invalid message link token", kind=kind, reason=str(exc))
            return None
        if payload.kind != kind:
            EVENTS.labels(kind, "invalid").inc()
            return None
        return payload.recipient

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._identity.system_token()}"),)

    async def web_view(self, request: web.Request) -> web.Response:
        """GET /t/view/<token>: the campaign's email as this recipient received it."""
        shown = request.query.get("e", "")  # the email the recipient got, signed with the token
        recipient = self._verified(request, "view", shown) if shown == "" or shown.isdigit() else None
        if recipient is None:
            return invalid_link()
        try:
            campaign, email, subscriber, found = await self._content(recipient, int(shown or 0))
            archives = await self._archives(campaign)
        except _Gone:
            return invalid_link()
        except grpc.aio.AioRpcError as exc:
            log.error(
                "web view failed", code=exc.code().name, error=exc.details(), campaign_id=recipient.campaign_id
            )
            EVENTS.labels("view", "failed").inc()
            return try_again_later()
        values = {
            **subscriber_values(subscriber, self._hashed_ids),
            **list_values(recipient.list_id, found),
            "Campaign:CampaignID": str(campaign.campaign_id),
            "Campaign:HashedCampaignID": self._hashed_ids.campaign(campaign.campaign_id),
            "Campaign:Name": campaign.name,
            "Link:WebBrowser": self._links.web_view(recipient, email.email_id),
        }
        if recipient.list_id and recipient.subscriber_id:
            values["Link:Unsubscribe"] = self._links.unsubscribe(recipient)
            values["Link:ReportAbuse"] = self._links.report_abuse(recipient)
        title = render_personalization(email.subject, values, html_escape=False).strip() or campaign.name
        view = archive.WebView(title=title, send_date=archive.send_date(campaign), archives=archives)
        EVENTS.labels("view", "ok").inc()
        if email.html_content:
            body = render_personalization(email.html_content, values, html_escape=True)
            return archive.web_view_response(view, html_body=body)
        plain = render_personalization(email.plain_content, values, html_escape=False)
        return archive.web_view_response(view, plain_text=plain)

    async def _content(
        self, recipient: TrackedRecipient, shown_email_id: int
    ) -> tuple[campaign_pb2.Campaign, email_pb2.Email, audience_pb2.Subscriber | None, dict[str, str] | None]:
        metadata = self._metadata()
        try:
            campaign: campaign_pb2.Campaign = await self._stubs.campaign.GetCampaign(
                campaign_pb2.GetCampaignRequest(campaign_id=recipient.campaign_id),
                metadata=metadata,
                timeout=_SERVICE_TIMEOUT_SECONDS,
            )
            emails = [campaign.email_id, *(variation.email_id for variation in campaign.variations)]
            email_id = shown_email_id or next((e for e in emails if e), 0)
            if not email_id or email_id not in emails:
                raise _Gone
            email: email_pb2.Email = await self._stubs.email.GetEmail(
                email_pb2.GetEmailRequest(email_id=email_id), metadata=metadata, timeout=_SERVICE_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise _Gone from None
            raise
        if email.owner_user_id != campaign.owner_user_id or not (email.html_content or email.plain_content):
            raise _Gone
        return campaign, email, await self._subscriber(recipient), await self._list(recipient)

    async def _list(self, recipient: TrackedRecipient) -> dict[str, str] | None:
        """What the List: tags show of the recipient's list now; None when there is none."""
        if not recipient.list_id:
            return None
        try:
            found: audience_pb2.List = await self._stubs.audience.GetList(
                audience_pb2.GetListRequest(list_id=recipient.list_id),
                metadata=self._metadata(),
                timeout=_SERVICE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return list_snapshot(found)

    async def _archives(self, campaign: campaign_pb2.Campaign) -> tuple[archive.ArchiveLink, ...]:
        """The ways back to the archives that list the campaign: those of its tags, once it is Sent."""
        if campaign.status != campaign_pb2.CAMPAIGN_STATUS_SENT:
            return ()
        tagged: tag_pb2.BatchGetCampaignTagsResponse = await self._stubs.tag.BatchGetCampaignTags(
            tag_pb2.BatchGetCampaignTagsRequest(campaign_ids=[campaign.campaign_id]),
            metadata=self._metadata(),
            timeout=_SERVICE_TIMEOUT_SECONDS,
        )
        # The system token sees every user's tags: only the campaign owner's archives list the campaign.
        tags = sorted(
            (
                tag
                for entry in tagged.campaign_tags
                for tag in entry.tags
                if tag.owner_user_id == campaign.owner_user_id
            ),
            key=lambda tag: (tag.name.casefold(), tag.tag_id),
        )
        return tuple(
            archive.ArchiveLink(
                archive.tag_archive_url(self._public_url, tag.tag_id), archive.archive_title(tag.name)
            )
            for tag in tags
        )

    async def _subscriber(self, recipient: TrackedRecipient) -> audience_pb2.Subscriber | None:
        """The recipient's subscriber now; None when there is none (the view then leaves their tags empty)."""
        if not (recipient.list_id and recipient.subscriber_id):
            return None
        try:
            subscriber: audience_pb2.Subscriber = await self._stubs.audience.GetSubscriber(
                audience_pb2.GetSubscriberRequest(
                    list_id=recipient.list_id, subscriber_id=recipient.subscriber_id
                ),
                metadata=self._metadata(),
                timeout=_SERVICE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return subscriber

    async def report_abuse_form(self, request: web.Request) -> web.Response:
        """GET /t/abuse/<token>: asks for confirmation (only a POST reports)."""
        if self._verified(request, "abuse") is None:
            return invalid_link()
        return page(
            "Report abuse",
            "<h1>Report this message as abuse?</h1><p>You will be unsubscribed and receive no more messages "
            'from this sender.</p><form method="post"><button type="submit">Report abuse</button></form>',
        )

    async def report_abuse(self, request: web.Request) -> web.Response:
        """POST /t/abuse/<token>: records the complaint, then the page says it was reported."""
        recipient = self._verified(request, "abuse")
        if recipient is None:
            return invalid_link()
        try:
            answer = await self._stubs.delivery.RecordBounces(
                delivery_pb2.RecordBouncesRequest(reports=[abuse_report(recipient)]),
                metadata=self._metadata(),
                timeout=_SERVICE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            failure = decode_error(exc)
            log.error(
                "report abuse failed",
                code=failure.code.name,
                reason=failure.reason,
                error=failure.message,
                campaign_id=recipient.campaign_id,
            )
            EVENTS.labels("abuse", "failed").inc()
            return try_again_later()
        if answer.unknown_count:
            # The campaign's queue is gone (deleted): nothing left to complain about.
            EVENTS.labels("abuse", "gone").inc()
            return invalid_link()
        EVENTS.labels("abuse", "ok").inc()
        return page(
            "Reported",
            "<h1>Thank you: the message was reported as abuse</h1>"
            "<p>You are unsubscribed and will receive no more messages from this sender.</p>",
        )


def add_routes(app: web.Application, identity: IdentityStore, stubs: Stubs, public_url: str) -> None:
    """Serves the web view and report-abuse pages on `app`."""
    pages = MessagePages(identity, stubs, public_url)
    app.router.add_get("/t/view/{token}", pages.web_view)
    app.router.add_get("/t/abuse/{token}", pages.report_abuse_form)
    app.router.add_post("/t/abuse/{token}", pages.report_abuse)
