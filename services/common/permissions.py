"""Who may call which RPC: the one table from full RPC name to what the principal token must grant.

Every RPC needs what its legacy command needs (the `permission=` and `scope=` of the command's row in
translator/commands), so that a token minted for a narrow job stays as narrow over gRPC as it is
through the translator. The CallInterceptor (services/common/grpcutil.py) checks the table right after
verifying the token; an RPC missing from it is refused. docs/legacy-mapping.md shows the table
(`python tools/permissions_doc.py` renders it there; a test checks that it is current).

Four kinds of requirement:
- a legacy permission (`Campaign.Create`): granted by that permission or "*" in the token;
- any principal: the legacy command names no permission (tags, email content, unsubscribe);
- admin: the legacy command takes admin credentials only, or the data is every user's;
- internal: the RPC has no legacy command of its own and exists for Herald's processes (statistics for
  a campaign view, a campaign's audience, tracking events); "*" does not grant it.

An admin passes everything. A token a Herald process minted for its own work on a user's behalf (the
`svc` claim, auth.service_token) passes everything but the admin RPCs, still scoped to that user's
data: the RPC the process is serving was checked against the caller's own token, and what the process
calls downstream to do it is decided by Herald's code, not by the caller. Outside callers never get such
a token: the translator mints tokens without it for legacy callers, and so does `herald token mint`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind

ALL_PERMISSIONS = "*"
PERMISSION_DENIED = "PERMISSION_DENIED"


class Access(enum.Enum):
    PERMISSION = "permission"
    ANY = "any"
    ADMIN = "admin"
    INTERNAL = "internal"


@dataclass(frozen=True)
class Requirement:
    """What a principal needs to call one RPC, and the legacy commands that call it (for the docs)."""

    access: Access
    permission: str = ""
    commands: tuple[str, ...] = ()
    note: str = ""

    def allows(self, principal: Principal) -> bool:
        if principal.is_admin:
            return True
        if self.access is Access.ADMIN:
            return False
        if principal.service:
            return True
        if self.access is Access.INTERNAL:
            return False
        if self.access is Access.ANY:
            return True
        return ALL_PERMISSIONS in principal.permissions or self.permission in principal.permissions

    def describe(self) -> str:
        """What the requirement asks for, in the words of the docs and of the denial's message."""
        return {
            Access.PERMISSION: f"`{self.permission}`",
            Access.ANY: "any principal",
            Access.ADMIN: "admin",
            Access.INTERNAL: "internal",
        }[self.access]


def needs(permission: str, *commands: str, note: str = "") -> Requirement:
    return Requirement(Access.PERMISSION, permission, commands, note)


def anyone(*commands: str, note: str = "") -> Requirement:
    return Requirement(Access.ANY, "", commands, note)


def admin_only(*commands: str, note: str = "") -> Requirement:
    return Requirement(Access.ADMIN, "", commands, note)


def internal(note: str) -> Requirement:
    return Requirement(Access.INTERNAL, "", (), note)


RPC_PERMISSIONS: Mapping[str, Requirement] = {
    # herald.campaign.v1.CampaignService
    "/herald.campaign.v1.CampaignService/CreateCampaign": needs("Campaign.Create", "campaign.create"),
    "/herald.campaign.v1.CampaignService/GetCampaign": needs(
        "Campaign.Get", "campaign.get", "campaign.recipients.get"
    ),
    "/herald.campaign.v1.CampaignService/BatchGetCampaigns": needs(
        "Campaigns.Get", note="`campaigns.get` of given ids; the tag service asks it on `tag.assigntocampaigns`"
    ),
    "/herald.campaign.v1.CampaignService/ListCampaigns": needs("Campaigns.Get", "campaigns.get"),
    "/herald.campaign.v1.CampaignService/CopyCampaign": needs("Campaign.Create", "campaign.copy"),
    "/herald.campaign.v1.CampaignService/DeleteCampaigns": needs("Campaign.Delete", "campaigns.delete"),
    "/herald.campaign.v1.CampaignService/UpdateCampaign": needs("Campaign.Update", "campaign.update"),
    "/herald.campaign.v1.CampaignService/PauseCampaign": needs("Campaign.Update", "campaign.pause"),
    "/herald.campaign.v1.CampaignService/ResumeCampaign": needs("Campaign.Update", "campaign.resume"),
    "/herald.campaign.v1.CampaignService/CancelCampaign": needs("Campaign.Update", "campaign.cancel"),
    "/herald.campaign.v1.CampaignService/ApproveCampaign": admin_only("campaign.approve"),
    "/herald.campaign.v1.CampaignService/CreateSplitTest": needs("Campaign.Create", "splittest.create"),
    "/herald.campaign.v1.CampaignService/RetryFailedRecipients": admin_only("admin.campaign.retryfailed"),
    "/herald.campaign.v1.CampaignService/WatchCampaign": needs(
        "Campaign.Get", note="gRPC only: a campaign's progress"
    ),
    # herald.campaign.v1.EmailService: the fact sheet names no permission for the email commands.
    "/herald.campaign.v1.EmailService/CreateEmail": anyone("email.create"),
    "/herald.campaign.v1.EmailService/GetEmail": anyone(
        "email.get", note="`email.update` with a SenderDomain (the email's owner and stored From)"
    ),
    "/herald.campaign.v1.EmailService/ListEmails": anyone("emails.get"),
    "/herald.campaign.v1.EmailService/UpdateEmail": anyone("email.update"),
    "/herald.campaign.v1.EmailService/DeleteEmail": anyone("email.delete"),
    "/herald.campaign.v1.EmailService/SendEmailPreview": anyone("email.emailpreview"),
    # herald.campaign.v1.TemplateService: what email.create/email.update copy in Template mode, which name no
    # permission either.
    "/herald.campaign.v1.TemplateService/CreateTemplate": anyone(note="`herald template create`; a user's own"),
    "/herald.campaign.v1.TemplateService/GetTemplate": anyone(note="`herald template show`; a user's own"),
    "/herald.campaign.v1.TemplateService/ListTemplates": anyone(
        note="`herald template list`; a user's own (an admin names another user, or lists everyone's)"
    ),
    "/herald.campaign.v1.TemplateService/UpdateTemplate": anyone(note="`herald template update`; a user's own"),
    "/herald.campaign.v1.TemplateService/DeleteTemplate": anyone(note="`herald template delete`; a user's own"),
    # herald.tag.v1.TagService: the tag commands name no permission, except (un)assigning.
    "/herald.tag.v1.TagService/ListTags": anyone("tags.get"),
    "/herald.tag.v1.TagService/GetTag": anyone(note="one tag of `tags.get`; read by `campaigns.archive.geturl`"),
    "/herald.tag.v1.TagService/CreateTag": anyone("tag.create"),
    "/herald.tag.v1.TagService/UpdateTag": anyone("tag.update"),
    "/herald.tag.v1.TagService/DeleteTags": anyone("tags.delete"),
    "/herald.tag.v1.TagService/AssignTag": needs("Campaigns.Get", "tag.assigntocampaigns"),
    "/herald.tag.v1.TagService/UnassignTag": needs("Campaigns.Get", "tag.unassignfromcampaigns"),
    "/herald.tag.v1.TagService/BatchGetCampaignTags": internal(
        "the tags of a campaign view (`campaign.get` RetrieveTags, `campaigns.get`) and of the archive pages"
    ),
    "/herald.tag.v1.TagService/ListTaggedCampaigns": internal("the Tags filter of `campaigns.get`"),
    "/herald.tag.v1.TagService/SetArchiveTemplate": needs("Campaigns.Get", "campaigns.archive.geturl"),
    # herald.audience.v1.AudienceService
    "/herald.audience.v1.AudienceService/CreateList": needs("List.Create", "list.create"),
    "/herald.audience.v1.AudienceService/GetList": needs("List.Get", "list.get"),
    "/herald.audience.v1.AudienceService/ListLists": needs("Lists.Get", "lists.get"),
    "/herald.audience.v1.AudienceService/DeleteLists": needs("List.Delete", "lists.delete"),
    "/herald.audience.v1.AudienceService/CreateSubscriber": needs("Subscribers.Import", "subscriber.create"),
    "/herald.audience.v1.AudienceService/GetSubscriber": needs("Subscribers.Get", "subscriber.get"),
    "/herald.audience.v1.AudienceService/ListSubscribers": needs("Subscribers.Get", "subscribers.get"),
    "/herald.audience.v1.AudienceService/SubscribeSubscriber": anyone(
        "subscriber.subscribe", note="the public subscription form; the legacy command takes no credentials"
    ),
    "/herald.audience.v1.AudienceService/UnsubscribeSubscribers": anyone(
        "subscriber.unsubscribe", note="the legacy command takes no credentials at all"
    ),
    "/herald.audience.v1.AudienceService/ConfirmSubscription": internal(
        "the confirm link of a double opt-in confirmation email (the translator's /t/confirm)"
    ),
    "/herald.audience.v1.AudienceService/RejectSubscription": internal(
        "the reject link of a double opt-in confirmation email (the translator's /t/reject)"
    ),
    "/herald.audience.v1.AudienceService/DeleteSubscribers": needs("Subscribers.Delete", "subscribers.delete"),
    "/herald.audience.v1.AudienceService/CreateSegment": needs("Segment.Create", "segment.create"),
    "/herald.audience.v1.AudienceService/ListSegments": needs("Segments.Get", "segments.get"),
    "/herald.audience.v1.AudienceService/DeleteSegments": needs("Segments.Delete", "segments.delete"),
    "/herald.audience.v1.AudienceService/CreateCustomField": needs("CustomField.Create", "customfield.create"),
    "/herald.audience.v1.AudienceService/GetCustomField": needs(
        "CustomFields.Get", note="one field of `customfields.get`"
    ),
    "/herald.audience.v1.AudienceService/ListCustomFields": needs("CustomFields.Get", "customfields.get"),
    "/herald.audience.v1.AudienceService/UpdateCustomField": needs("CustomField.Update", "customfield.update"),
    "/herald.audience.v1.AudienceService/DeleteCustomFields": needs("CustomFields.Delete", "customfields.delete"),
    "/herald.audience.v1.AudienceService/AddSuppressions": needs(
        "Subscribers.Import", note="legacy clients suppress addresses by importing them (AddToSuppressionList)"
    ),
    "/herald.audience.v1.AudienceService/CreateImport": needs("Subscribers.Import", "subscribers.import.post"),
    "/herald.audience.v1.AudienceService/StreamImport": needs(
        "Subscribers.Import", note="`subscribers.import.post` for a file of any size (`herald subscribers import`)"
    ),
    "/herald.audience.v1.AudienceService/GetImport": needs("Subscribers.Import", "subscribers.import.get"),
    "/herald.audience.v1.AudienceService/CountRecipients": internal(
        "a campaign's audience: `campaign.recipients.get` (the translator) and sending (delivery)"
    ),
    "/herald.audience.v1.AudienceService/StreamRecipients": internal(
        "a campaign's audience: `campaign.recipients.get` (the translator) and sending (delivery)"
    ),
    "/herald.audience.v1.AudienceService/CheckTargeting": internal(
        "the lists and segments `campaign.update` sets (the campaign service, RULINGS 15)"
    ),
    # herald.delivery.v1.DeliveryService
    "/herald.delivery.v1.DeliveryService/BatchGetCampaignStatistics": internal(
        "the statistics of a campaign view (`campaign.get` RetrieveStatistics, `campaigns.get`)"
    ),
    "/herald.delivery.v1.DeliveryService/RetryFailedRecipients": admin_only(
        "admin.campaign.retryfailed", note="called by the campaign service with the admin's token"
    ),
    "/herald.delivery.v1.DeliveryService/RecordTrackingEvents": internal(
        "the translator's open, click and unsubscribe endpoints"
    ),
    "/herald.delivery.v1.DeliveryService/RecordUnsubscriptions": internal(
        "`subscriber.unsubscribe` with a CampaignID (the translator): the campaign's TotalUnsubscriptions"
    ),
    "/herald.delivery.v1.DeliveryService/ListQueuedRecipients": internal(
        "a campaign's queue rows, for operators (admins) and tests"
    ),
    "/herald.delivery.v1.DeliveryService/ListCapturedMessages": admin_only(
        note="the local mail capture holds every user's mail (the translator's /mail pages)"
    ),
    "/herald.delivery.v1.DeliveryService/GetCapturedMessage": admin_only(
        note="the local mail capture holds every user's mail (the translator's /mail pages)"
    ),
    "/herald.delivery.v1.DeliveryService/RecordBounces": internal(
        "the bounce receiver (DSNs, plain-text bounces, ARF) and the translator's provider webhooks"
    ),
    "/herald.delivery.v1.DeliveryService/CreateSendingDomain": anyone(
        note="`herald dkim add`; a user's own domains (an admin names another user)"
    ),
    "/herald.delivery.v1.DeliveryService/ListSendingDomains": anyone(
        note="a user's own domains (an admin names another user); `email.update` with a SenderDomain (the "
        "translator, as the email's owner)"
    ),
    "/herald.delivery.v1.DeliveryService/DeleteSendingDomain": anyone(
        note="a user's own domains (an admin names another user)"
    ),
    "/herald.delivery.v1.DeliveryService/StreamDeliveryEvents": needs(
        "Campaign.Get", note="gRPC only: per-recipient events of the caller's campaigns"
    ),
    # herald.delivery.v1.EventWebhookService: a user's own endpoints, which receive that user's campaign events.
    "/herald.delivery.v1.EventWebhookService/CreateWebhookEndpoint": needs(
        "Campaign.Get",
        note="gRPC only (`herald webhooks create`): the caller's own endpoint for its campaign events",
    ),
    "/herald.delivery.v1.EventWebhookService/GetWebhookEndpoint": needs(
        "Campaign.Get", note="gRPC only: the caller's own endpoints"
    ),
    "/herald.delivery.v1.EventWebhookService/ListWebhookEndpoints": needs(
        "Campaign.Get", note="gRPC only: the caller's own endpoints"
    ),
    "/herald.delivery.v1.EventWebhookService/DeleteWebhookEndpoint": needs(
        "Campaign.Get", note="gRPC only: the caller's own endpoints"
    ),
    "/herald.delivery.v1.EventWebhookService/EnableWebhookEndpoint": needs(
        "Campaign.Get", note="gRPC only: the caller's own endpoints"
    ),
    "/herald.delivery.v1.EventWebhookService/ListWebhookAttempts": needs(
        "Campaign.Get", note="gRPC only: the delivery log of the caller's own endpoints"
    ),
    "/herald.delivery.v1.EventWebhookService/RotateWebhookSecret": needs(
        "Campaign.Get", note="gRPC only: a new signing secret for the caller's own endpoint"
    ),
}


def authorize(method: str, principal: Principal) -> None:
    """Raises PERMISSION_DENIED (with ErrorInfo metadata naming what was missing) unless the principal may call."""
    requirement = RPC_PERMISSIONS.get(method)
    if requirement is None:
        raise DomainError(
            ErrorKind.PERMISSION,
            PERMISSION_DENIED,
            f"{method} is not in the permission table, so nobody may call it",
            metadata={"rpc": method, "requires": "unlisted"},
        )
    if requirement.allows(principal):
        return
    metadata = {"rpc": method, "requires": requirement.access.value}
    if requirement.access is Access.PERMISSION:
        metadata["permission"] = requirement.permission
    name = method.rsplit("/", 1)[-1]
    message = {
        Access.PERMISSION: f"{name} requires the permission {requirement.permission}",
        Access.ADMIN: f"{name} requires an admin",
        Access.INTERNAL: f"{name} is internal: only Herald's own services (or an admin) may call it",
    }[requirement.access]
    raise DomainError(ErrorKind.PERMISSION, PERMISSION_DENIED, message, metadata=metadata)


DOC_BEGIN = "<!-- rpc-permissions:begin (tools/permissions_doc.py renders services/common/permissions.py) -->"
DOC_END = "<!-- rpc-permissions:end -->"


def with_table(doc: str) -> str:
    """The document with the table rendered between DOC_BEGIN and DOC_END (ValueError without them)."""
    start, end = doc.index(DOC_BEGIN) + len(DOC_BEGIN), doc.index(DOC_END)
    return f"{doc[:start]}\n{markdown_table()}{doc[end:]}"


def markdown_table() -> str:
    """The table as docs/legacy-mapping.md shows it: one row per RPC, in the table's order."""
    lines = ["| RPC | requires | legacy command / why |", "|---|---|---|"]
    for method, requirement in RPC_PERMISSIONS.items():
        service, name = method.lstrip("/").split("/")
        why = ", ".join(f"`{command}`" for command in requirement.commands)
        if requirement.note:
            why = f"{why}; {requirement.note}" if why else requirement.note
        lines.append(f"| `{service.rsplit('.', 1)[-1]}/{name}` | {requirement.describe()} | {why} |")
    return "\n".join(lines) + "\n"
