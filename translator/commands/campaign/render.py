"""A campaign as the legacy client reads it (campaign.get, campaigns.get), and which views of it to ask for."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import json_format, timestamp_pb2
from herald.campaign.v1 import campaign_pb2

from services.common.protojson import plain_json
from translator.commands import Param, instant
from translator.commands.campaign.legacy import SCHEDULE_NAMES, STATUS_NAMES, WINNER_NAMES

# The optional parts both campaign.get and campaigns.get answer on request.
EXTRAS_PARAMS = (
    Param("RetrieveTags", "boolean", "Add Tags [{TagID, Tag}]", default=False),
    Param("SplitABTestStatistics", "boolean", "Add per-variation figures", default=False),
)


def zone_of(name: str) -> ZoneInfo:
    """The stored IANA zone (the service validated it); UTC when none was given."""
    return ZoneInfo(name) if name else ZoneInfo("UTC")


def csv(values: Iterable[int]) -> str:
    return ",".join(str(value) for value in values)


def schedule_fields(campaign: campaign_pb2.Campaign) -> dict[str, Any]:
    """SendDate/SendTime are in SendTimeZone: the scheduled moment for Future, else when sending started."""
    schedule = campaign.schedule
    detail = schedule.WhichOneof("detail")
    recursive = schedule.recursive
    fields: dict[str, Any] = {
        "ScheduleType": SCHEDULE_NAMES.get(campaign.schedule_type, "Not Scheduled"),
        "SendDate": "",
        "SendTime": "",
        "SendTimeZone": "",
        "ScheduleRecDaysOfWeek": csv(recursive.days_of_week),
        "ScheduleRecDaysOfMonth": csv(recursive.days_of_month),
        "ScheduleRecMonths": csv(recursive.months),
        "ScheduleRecHours": csv(recursive.hours),
        "ScheduleRecMinutes": csv(recursive.minutes),
        "ScheduleRecSendMaxInstance": recursive.max_instances,
    }
    moment: timestamp_pb2.Timestamp | None = None
    zone_name = ""
    if detail == "future":
        moment, zone_name = schedule.future.send_time, schedule.future.time_zone or "UTC"
    else:
        if detail == "recursive":
            zone_name = recursive.time_zone or "UTC"
        if campaign.HasField("send_time"):
            moment, zone_name = campaign.send_time, zone_name or "UTC"
    fields["SendTimeZone"] = zone_name
    if moment is not None:
        local = moment.ToDatetime(tzinfo=UTC).astimezone(zone_of(zone_name))
        fields["SendDate"], fields["SendTime"] = local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")
    return fields


def sources_text(sources: Iterable[campaign_pb2.RecipientSource]) -> str:
    return ",".join(f"{source.list_id}:{source.segment_id}" for source in sources)


def rules_text(targeting: campaign_pb2.Targeting) -> str:
    if not targeting.HasField("rules_bundle") or not targeting.rules_bundle.fields:
        return ""
    return json.dumps(plain_json(json_format.MessageToDict(targeting.rules_bundle)), separators=(",", ":"))


def render_campaign(campaign: campaign_pb2.Campaign) -> dict[str, Any]:
    """Every stored field of a campaign under its legacy name."""
    auto_resend = campaign.auto_resend
    split_test = campaign.split_test
    return {
        "CampaignID": campaign.campaign_id,
        "CampaignName": campaign.name,
        "CampaignStatus": STATUS_NAMES.get(campaign.status, "Draft"),
        "CampaignStatusReason": campaign.status_reason,
        "RelOwnerUserID": campaign.owner_user_id,
        "RelEmailID": campaign.email_id,
        **schedule_fields(campaign),
        "SendStartDateTime": instant(campaign.send_time),
        "SendFinishDateTime": instant(campaign.send_finish_time),
        "CreateDateTime": instant(campaign.create_time),
        "UpdateDateTime": instant(campaign.update_time),
        "OriginalCampaignID": campaign.original_campaign_id,
        "RecipientListsAndSegments": sources_text(campaign.targeting.included),
        "Exclude_RecipientListsAndSegments": sources_text(campaign.targeting.excluded),
        "RulesJsonBundle": rules_text(campaign.targeting),
        "AutoResendEnabled": auto_resend.enabled,
        "AutoResendWaitDays": auto_resend.wait_days,
        "AutoResendSubject": auto_resend.subject,
        "AutoResendPreHeaderText": auto_resend.preheader_text,
        "ABTesting": {
            "Enabled": bool(campaign.variations),
            "Variations": [{"EmailID": v.email_id, "Weight": v.weight} for v in campaign.variations],
        },
        "SplitTest": (
            {
                "SplitTestID": split_test.split_test_id,
                "TestSize": split_test.test_size_percent,
                "TestDuration": split_test.test_duration_hours,
                "Winner": WINNER_NAMES.get(split_test.winner, ""),
            }
            if campaign.HasField("split_test")
            else None
        ),
        "ApprovalUserExplanation": campaign.approval_user_explanation,
        "GoogleAnalyticsDomains": campaign.google_analytics_domains,
        "PublishOnRSS": "Enabled" if campaign.publish_on_rss else "Disabled",
        "S2SEnabled": campaign.s2s_enabled,
    }


def statistics_fields(statistics: campaign_pb2.CampaignStatistics) -> dict[str, int | str]:
    # The ratios are of the recipients whose send ended (Sent + Failed; not Deferred): a relay that refuses
    # an address at RCPT makes it Failed, not Sent, and it bounced all the same (docs/bounces.md).
    attempted = statistics.total_sent + statistics.total_failed
    return {
        "TotalRecipients": statistics.total_recipients,
        "TotalSent": statistics.total_sent,
        "TotalFailed": statistics.total_failed,
        "TotalDeferred": statistics.total_deferred,
        "TotalOpens": statistics.total_opens,
        "UniqueOpens": statistics.unique_opens,
        "TotalClicks": statistics.total_clicks,
        "UniqueClicks": statistics.unique_clicks,
        "TotalHardBounces": statistics.total_hard_bounces,
        "TotalSoftBounces": statistics.total_soft_bounces,
        "HardBounceRatio": percentage(statistics.total_hard_bounces, attempted),
        "SoftBounceRatio": percentage(statistics.total_soft_bounces, attempted),
        "TotalSPAMComplaints": statistics.total_spam_complaints,
        "TotalUnsubscriptions": statistics.total_unsubscriptions,
    }


# The statistics keys RetrieveStatistics adds to a campaign (campaign.get, each campaigns.get row).
STATISTICS_RETURNS = (
    Param("TotalRecipients", "integer", "Recipients queued"),
    Param("TotalSent", "integer", "Recipients the mail server accepted"),
    Param("TotalFailed", "integer", "Recipients that could not be sent to"),
    Param("TotalDeferred", "integer", "Recipients answered with a temporary failure, waiting for a retry"),
    Param("TotalOpens", "integer", "Opens, every one"),
    Param("UniqueOpens", "integer", "Recipients who opened"),
    Param("TotalClicks", "integer", "Clicks, every one"),
    Param("UniqueClicks", "integer", "Recipients who clicked"),
    Param("TotalHardBounces", "integer", "Recipients whose address hard-bounced"),
    Param("TotalSoftBounces", "integer", "Recipients whose address soft-bounced"),
    Param("HardBounceRatio", "string", "Hard-bounced recipients in % of those sent or failed, two decimals"),
    Param("SoftBounceRatio", "string", "Soft-bounced recipients in % of those sent or failed, two decimals"),
    Param("TotalSPAMComplaints", "integer", "Recipients who reported the message as spam"),
    Param(
        "TotalUnsubscriptions",
        "integer",
        "Recipients who unsubscribed through the message, subscriber.unsubscribe naming the campaign, or a complaint",
    ),
)


def percentage(part: int, whole: int) -> str:
    """`part` in % of `whole` with two decimals, rounded half up, at most "100.00"; "0.00" when `whole` is 0."""
    if whole <= 0:
        return "0.00"
    ratio = min(Decimal(part) * 100 / Decimal(whole), Decimal(100))
    return str(ratio.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Extras:
    """Which optional parts of a campaign the legacy caller asked for."""

    statistics: bool = False
    tags: bool = False
    variation_statistics: bool = False
    domains: bool = False

    @property
    def full_view(self) -> bool:
        return self.statistics or self.tags or self.variation_statistics

    @property
    def breakdowns(self) -> bool:
        """Whether per-variation or per-domain figures are rendered (see render_with_extras)."""
        return self.variation_statistics or (self.statistics and self.domains)


def render_with_extras(campaign: campaign_pb2.Campaign, extras: Extras) -> dict[str, Any]:
    row = render_campaign(campaign)
    statistics = campaign.statistics
    if extras.statistics:
        row.update(statistics_fields(statistics))
        if extras.domains:
            row["RecipientDomains"] = [
                {
                    "Domain": d.domain,
                    "TotalRecipients": d.total_recipients,
                    "TotalSent": d.total_sent,
                    "TotalFailed": d.total_failed,
                    "TotalDeferred": d.total_deferred,
                }
                for d in statistics.domains
            ]
    if extras.tags:
        row["Tags"] = [{"TagID": tag.tag_id, "Tag": tag.name} for tag in campaign.tags]
    if extras.variation_statistics:
        winner = statistics.split_test.winner_email_id
        row["SplitABTestStatistics"] = [
            {
                "EmailID": v.email_id,
                # True for the variation a split test chose; false for all while none was chosen.
                "Winner": winner != 0 and v.email_id == winner,
                "TotalRecipients": v.total_recipients,
                "TotalSent": v.total_sent,
                "TotalFailed": v.total_failed,
                "TotalDeferred": v.total_deferred,
                "UniqueOpens": v.unique_opens,
                "UniqueClicks": v.unique_clicks,
            }
            for v in statistics.variations
        ]
    return row


def view_of(full: bool) -> campaign_pb2.CampaignView.ValueType:
    return campaign_pb2.CAMPAIGN_VIEW_FULL if full else campaign_pb2.CAMPAIGN_VIEW_BASIC


def statistics_view_of(extras: Extras) -> campaign_pb2.StatisticsView.ValueType:
    # The breakdowns make delivery read every queue row of the campaign; totals come from its counters.
    return campaign_pb2.STATISTICS_VIEW_FULL if extras.breakdowns else campaign_pb2.STATISTICS_VIEW_TOTALS
