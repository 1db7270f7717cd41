"""Rows for the campaign commands: create, get, update, copy, pause, resume, cancel, approve, delete, list, split tests."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import field_mask_pb2, json_format, timestamp_pb2
from herald.campaign.v1 import campaign_pb2

from services.common.protojson import plain_json
from translator.commands import (
    ERROR_TEXT,
    Args,
    Command,
    Context,
    Param,
    Problems,
    instant,
    render_error_text,
    render_nothing,
    unary,
    validate_only,
)
from translator.params import INT32_MAX, INT64_MAX, ParamError, items_of, legacy_bool, legacy_name

STATUS_NAMES = {
    campaign_pb2.CAMPAIGN_STATUS_DRAFT: "Draft",
    campaign_pb2.CAMPAIGN_STATUS_READY: "Ready",
    campaign_pb2.CAMPAIGN_STATUS_SENDING: "Sending",
    campaign_pb2.CAMPAIGN_STATUS_PAUSED: "Paused",
    campaign_pb2.CAMPAIGN_STATUS_PENDING_APPROVAL: "Pending Approval",
    campaign_pb2.CAMPAIGN_STATUS_SENT: "Sent",
    campaign_pb2.CAMPAIGN_STATUS_FAILED: "Failed",
    campaign_pb2.CAMPAIGN_STATUS_CANCELLED: "Cancelled",
}
STATUS_BY_LEGACY = {name.lower(): status for status, name in STATUS_NAMES.items()}
SCHEDULE_NAMES = {
    campaign_pb2.SCHEDULE_TYPE_NOT_SCHEDULED: "Not Scheduled",
    campaign_pb2.SCHEDULE_TYPE_IMMEDIATE: "Immediate",
    campaign_pb2.SCHEDULE_TYPE_FUTURE: "Future",
    campaign_pb2.SCHEDULE_TYPE_RECURSIVE: "Recursive",
}
SCHEDULE_BY_LEGACY = {name.lower(): schedule for schedule, name in SCHEDULE_NAMES.items()}
WINNER_NAMES = {
    campaign_pb2.WINNER_HIGHEST_OPEN_RATE: "highest_open_rate",
    campaign_pb2.WINNER_MOST_UNIQUE_CLICKS: "most_unique_clicks",
}
WINNER_BY_LEGACY = {name: winner for winner, name in WINNER_NAMES.items()}
# Legacy OrderField values that may be sorted on; anything else falls back to CampaignID.
ORDER_FIELDS = {
    "campaignid": campaign_pb2.CAMPAIGN_ORDER_FIELD_CAMPAIGN_ID,
    "campaignname": campaign_pb2.CAMPAIGN_ORDER_FIELD_NAME,
    "campaignstatus": campaign_pb2.CAMPAIGN_ORDER_FIELD_STATUS,
    "senddate": campaign_pb2.CAMPAIGN_ORDER_FIELD_SEND_TIME,
    "createdatetime": campaign_pb2.CAMPAIGN_ORDER_FIELD_CREATE_TIME,
    "updatedatetime": campaign_pb2.CAMPAIGN_ORDER_FIELD_UPDATE_TIME,
}
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
TIME_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
SOURCE_RE = re.compile(r"\s*([0-9]{1,18})\s*(?::\s*([0-9]{1,18})\s*)?")
# What "*" means for each recursive list: every value the field allows.
RECURSIVE_RANGES = {
    "schedulerecdaysofweek": range(0, 7),
    "schedulerecdaysofmonth": range(1, 32),
    "schedulerecmonths": range(1, 13),
    "schedulerechours": range(0, 24),
    "schedulerecminutes": range(0, 60),
}


# Rendering ------------------------------------------------------------------------------------


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


def statistics_fields(statistics: campaign_pb2.CampaignStatistics) -> dict[str, int]:
    return {
        "TotalRecipients": statistics.total_recipients,
        "TotalSent": statistics.total_sent,
        "TotalFailed": statistics.total_failed,
        "TotalOpens": statistics.total_opens,
        "UniqueOpens": statistics.unique_opens,
        "TotalClicks": statistics.total_clicks,
        "UniqueClicks": statistics.unique_clicks,
    }


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


# campaign.create, campaign.copy, campaigns.delete ----------------------------------------------


def create(args: Args) -> campaign_pb2.CreateCampaignRequest:
    return campaign_pb2.CreateCampaignRequest(name=args.str("campaignname", required=True))


def render_created(response: campaign_pb2.Campaign, args: Args) -> dict[str, Any]:
    return {"CampaignID": response.campaign_id}


def copy(args: Args) -> campaign_pb2.CopyCampaignRequest:
    return campaign_pb2.CopyCampaignRequest(campaign_id=args.int("campaignid", required=True, min=1))


def render_copy(response: campaign_pb2.Campaign, args: Args) -> dict[str, Any]:
    return {"NewCampaignID": response.campaign_id}


def delete(args: Args) -> campaign_pb2.DeleteCampaignsRequest:
    return campaign_pb2.DeleteCampaignsRequest(campaign_ids=args.int_list("campaigns", required=True))


# campaign.get ---------------------------------------------------------------------------------


async def get_campaign(args: Args, ctx: Context) -> dict[str, Any]:
    campaign_id = args.int("campaignid", required=True, min=1)
    extras = Extras(
        statistics=args.bool("retrievestatistics", default=False),
        tags=args.bool("retrievetags", default=False),
        variation_statistics=args.bool("splitabteststatistics", default=False),
        domains=args.bool("retrieverecipientdomains", default=True),
    )
    if args.problems:
        raise Problems(args.problems)
    get = ctx.stubs.campaign.GetCampaign
    statistics_view = statistics_view_of(extras)
    campaign = await ctx.call(
        get,
        campaign_pb2.GetCampaignRequest(
            campaign_id=campaign_id, view=view_of(extras.full_view), statistics_view=statistics_view
        ),
    )
    if not extras.full_view and campaign.HasField("send_time"):
        # CampaignThroughput is always answered; once sending started only delivery knows it. The
        # totals suffice for it (statistics_view is STATISTICS_VIEW_TOTALS here): a client polling a
        # campaign while it sends costs delivery one counters row per poll.
        campaign = await ctx.call(
            get,
            campaign_pb2.GetCampaignRequest(
                campaign_id=campaign_id, view=view_of(True), statistics_view=statistics_view
            ),
        )
    statistics = campaign.statistics
    return {
        "Campaign": render_with_extras(campaign, extras),
        "CampaignThroughput": {
            "EmailsPerSecond": statistics.emails_per_second,
            "Duration": statistics.duration_seconds,
        },
    }


# campaign.update ------------------------------------------------------------------------------


@dataclass
class Update:
    """An UpdateCampaignRequest in the making: the mask names only the fields given without a problem."""

    args: Args
    campaign: campaign_pb2.Campaign
    paths: list[str]
    current: campaign_pb2.Campaign | None = None

    def given(self, *names: str) -> bool:
        """Whether any of the parameters is present (an empty string counts: it clears the field)."""
        return any(self.args.params.raw(name) is not None for name in names)

    def problem(self, name: str, kind: str, message: str) -> None:
        self.args.problems.append(ParamError(name, "missing" if kind == "missing" else "malformed", message))

    def field(self, path: str, names: tuple[str, ...], fill: Callable[[], None]) -> None:
        """Fills one masked field from its parameters; the path is masked only when they had no problem."""
        if not self.given(*names):
            return
        before = len(self.args.problems)
        fill()
        if len(self.args.problems) == before:
            self.paths.append(path)

    def request(self, *, validate: bool = False) -> campaign_pb2.UpdateCampaignRequest:
        return campaign_pb2.UpdateCampaignRequest(
            campaign=self.campaign,
            update_mask=field_mask_pb2.FieldMask(paths=self.paths),
            validate_only=validate,
        )


def text_param(update: Update, name: str) -> str:
    value = update.args.params.raw(name)
    if value == "":
        return ""
    return update.args.str(name)


def int_param(update: Update, name: str, message: str) -> int:
    value = update.args.params.raw(name)
    if value == "":
        return 0
    before = len(update.args.problems)
    number = update.args.int(name, min=0, max=INT64_MAX)
    if len(update.args.problems) > before:
        update.args.problems[-1].message = message
    return number


def parse_ints(update: Update, name: str, code_text: str) -> list[int]:
    """A CSV of integers, a list of them, one integer, or "*" for every value the field allows."""
    value = update.args.params.raw(name)
    if value is None or value == "":
        return []
    if isinstance(value, str) and value.strip() == "*":
        return list(RECURSIVE_RANGES[name])
    items = items_of(value)
    numbers: list[int] = []
    for item in items:
        # Out-of-range values of the right form are the service's to judge (RECURSIVE_VALUE_INVALID).
        number = small_number(item)
        if number is None:
            update.problem(name, "malformed", code_text)
            return []
        numbers.append(number)
    return sorted(set(numbers))


def small_number(value: object) -> int | None:
    """A non-negative integer of at most 9 digits given as a number or a decimal string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value <= 999_999_999 else None
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        return int(value)
    return None


def fill_schedule(update: Update) -> None:
    args = update.args
    schedule = update.campaign.schedule
    if update.given("scheduletype"):
        name = legacy_name(text_param(update, "scheduletype"))
        schedule_type = SCHEDULE_BY_LEGACY.get(name)
        if schedule_type is None:
            update.problem("scheduletype", "malformed", "Invalid schedule type")
            return
    elif update.given("senddate", "sendtime", "sendtimezone"):
        schedule_type = campaign_pb2.SCHEDULE_TYPE_FUTURE
    else:
        schedule_type = campaign_pb2.SCHEDULE_TYPE_RECURSIVE
    schedule.type = schedule_type
    update.campaign.schedule_type = schedule_type
    if schedule_type not in (campaign_pb2.SCHEDULE_TYPE_FUTURE, campaign_pb2.SCHEDULE_TYPE_RECURSIVE):
        return
    zone_name = text_param(update, "sendtimezone").strip() or "UTC"
    zone: ZoneInfo | None = None
    try:
        zone = ZoneInfo(zone_name) if len(zone_name) <= 64 else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        update.problem("sendtimezone", "malformed", f"Invalid SendTimeZone {zone_name[:64]!r}")
    if schedule_type == campaign_pb2.SCHEDULE_TYPE_RECURSIVE:
        recursive = schedule.recursive
        recursive.SetInParent()
        recursive.days_of_week[:] = parse_ints(update, "schedulerecdaysofweek", "Invalid ScheduleRecDaysOfWeek")
        recursive.days_of_month[:] = parse_ints(update, "schedulerecdaysofmonth", "Invalid ScheduleRecDaysOfMonth")
        recursive.months[:] = parse_ints(update, "schedulerecmonths", "Invalid ScheduleRecMonths")
        recursive.hours[:] = parse_ints(update, "schedulerechours", "Invalid ScheduleRecHours")
        recursive.minutes[:] = parse_ints(update, "schedulerecminutes", "Invalid ScheduleRecMinutes")
        max_instances = int_param(update, "schedulerecsendmaxinstance", "Invalid ScheduleRecSendMaxInstance")
        if max_instances > INT32_MAX:
            update.problem("schedulerecsendmaxinstance", "malformed", "Invalid ScheduleRecSendMaxInstance")
        else:
            recursive.max_instances = max_instances
        recursive.time_zone = zone_name
        return
    send_date = send_time = None
    date_text = args.str("senddate", max_len=32).strip()
    if not date_text:
        update.problem("senddate", "missing", "Missing SendDate for Future schedule")
    else:
        send_date = parse_date(date_text)
        if send_date is None:
            update.problem("senddate", "malformed", "Invalid SendDate (YYYY-MM-DD)")
    time_text = args.str("sendtime", max_len=32).strip()
    if not time_text:
        update.problem("sendtime", "missing", "Missing SendTime for Future schedule")
    else:
        send_time = parse_time(time_text)
        if send_time is None:
            update.problem("sendtime", "malformed", "Invalid SendTime (HH:MM:SS)")
    if send_date is None or send_time is None or zone is None:
        return
    local = datetime.combine(send_date, send_time, tzinfo=zone)
    schedule.future.send_time.FromDatetime(local.astimezone(UTC))
    schedule.future.time_zone = zone_name


def parse_date(text: str) -> date | None:
    if not DATE_RE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_time(text: str) -> time | None:
    match = TIME_RE.fullmatch(text)
    if match is None:
        return None
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second)


def parse_sources(update: Update, name: str) -> list[campaign_pb2.RecipientSource]:
    """Sources as "ListID:SegmentID,..." (or a list of such items); a bare ListID means the whole list (segment 0)."""
    value = update.args.params.raw(name)
    items = items_of(value)
    sources: list[campaign_pb2.RecipientSource] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        match = (
            SOURCE_RE.fullmatch(str(item)) if isinstance(item, str | int) and not isinstance(item, bool) else None
        )
        if match is None or int(match[1]) == 0:
            update.problem(name, "malformed", f"Invalid {name} item {str(item)[:40]!r} (ListID:SegmentID)")
            return []
        source = campaign_pb2.RecipientSource(list_id=int(match[1]), segment_id=int(match[2] or 0))
        if source not in sources:
            sources.append(source)
    return sources


def fill_targeting(update: Update) -> None:
    targeting = update.campaign.targeting
    if update.current is not None:
        targeting.CopyFrom(update.current.targeting)
    targeting.SetInParent()
    if update.given("recipientlistsandsegments"):
        sources = parse_sources(update, "recipientlistsandsegments")
        del targeting.included[:]
        targeting.included.extend(sources)
    if update.given("exclude_recipientlistsandsegments"):
        sources = parse_sources(update, "exclude_recipientlistsandsegments")
        del targeting.excluded[:]
        targeting.excluded.extend(sources)
    if update.given("rulesjsonbundle"):
        raw = update.args.params.raw("rulesjsonbundle")
        bundle: object = {}
        if isinstance(raw, dict):
            bundle = raw
        elif raw != "":
            try:
                bundle = update.args.params.json_str("rulesjsonbundle")
            except ParamError:
                bundle = None
        if not isinstance(bundle, dict):
            update.problem("rulesjsonbundle", "malformed", "RulesJsonBundle must be a JSON object")
            return
        targeting.ClearField("rules_bundle")
        if bundle:
            try:
                targeting.rules_bundle.update(bundle)
            except (ValueError, TypeError, OverflowError):
                update.problem("rulesjsonbundle", "malformed", "RulesJsonBundle holds a value JSON cannot carry")


def fill_auto_resend(update: Update) -> None:
    auto_resend = update.campaign.auto_resend
    if update.current is not None:
        auto_resend.CopyFrom(update.current.auto_resend)
    auto_resend.SetInParent()
    if update.given("autoresendenabled"):
        auto_resend.enabled = update.args.bool("autoresendenabled", default=False)
    if update.given("autoresendwaitdays"):
        wait_days = int_param(update, "autoresendwaitdays", "Missing or invalid AutoResendWaitDays")
        if wait_days > INT32_MAX:
            update.problem("autoresendwaitdays", "malformed", "Missing or invalid AutoResendWaitDays")
        auto_resend.wait_days = min(wait_days, INT32_MAX)
    if update.given("autoresendsubject"):
        auto_resend.subject = text_param(update, "autoresendsubject")
    if update.given("autoresendpreheadertext"):
        auto_resend.preheader_text = text_param(update, "autoresendpreheadertext")


def fill_variations(update: Update) -> None:
    """ABTesting {Enabled, Variations: [{EmailID, Weight}]}; disabled or empty clears the variations."""
    try:
        ab_testing = update.args.params.obj("abtesting")
    except ParamError:
        update.problem("abtesting", "malformed", "Invalid ABTesting parameter format (must be array)")
        return
    if ab_testing is None:
        return
    if "enabled" in ab_testing and not legacy_bool(ab_testing["enabled"]):
        return
    if "variations" not in ab_testing:
        if "enabled" in ab_testing:
            update.problem(
                "abtesting.variations", "missing", "Invalid ABTesting variations format (must be array)"
            )
        return
    variations = ab_testing["variations"]
    if isinstance(variations, dict):
        # Form fields with non-sequential indices arrive as an object keyed by index.
        variations = list(variations.values())
    if not isinstance(variations, list):
        update.problem("abtesting.variations", "malformed", "Invalid ABTesting variations format (must be array)")
        return
    for item in variations:
        if not isinstance(item, dict):
            update.problem(
                "abtesting.variations", "malformed", "Invalid ABTesting variations format (must be array)"
            )
            return
        if item.get("emailid") in (None, "") or item.get("weight") in (None, ""):
            update.problem(
                "abtesting.variation.fields",
                "missing",
                "Missing required fields in A/B variation (EmailID, Weight)",
            )
            return
        email_id, weight = small_number(item["emailid"]), small_number(item["weight"])
        if email_id is None or weight is None or email_id == 0:
            update.problem("abtesting.variation.values", "malformed", "Invalid EmailID or Weight in A/B variation")
            return
        update.campaign.variations.append(campaign_pb2.Variation(email_id=email_id, weight=weight))


def fill_publish_on_rss(update: Update) -> None:
    value = update.args.params.raw("publishonrss")
    if isinstance(value, str) and value.strip().lower() in ("enabled", "disabled"):
        update.campaign.publish_on_rss = value.strip().lower() == "enabled"
    else:
        update.campaign.publish_on_rss = update.args.bool("publishonrss", default=False)


def fill_status(update: Update) -> None:
    name = legacy_name(text_param(update, "campaignstatus"))
    status = STATUS_BY_LEGACY.get(name)
    if status is None:
        update.problem("campaignstatus", "malformed", "Invalid campaign status")
        return
    update.campaign.status = status


TARGETING_PARAMS = ("recipientlistsandsegments", "exclude_recipientlistsandsegments", "rulesjsonbundle")
AUTO_RESEND_PARAMS = ("autoresendenabled", "autoresendwaitdays", "autoresendsubject", "autoresendpreheadertext")
SCHEDULE_PARAMS = (
    "scheduletype",
    "senddate",
    "sendtime",
    "sendtimezone",
    *RECURSIVE_RANGES,
    "schedulerecsendmaxinstance",
)


def build_update(update: Update) -> None:
    """Reads every campaign.update parameter into the campaign message and its mask."""
    campaign = update.campaign
    args = update.args

    def set_text(attribute: str, name: str) -> Callable[[], None]:
        return lambda: setattr(campaign, attribute, text_param(update, name))

    def set_int(attribute: str, name: str, message: str) -> Callable[[], None]:
        return lambda: setattr(campaign, attribute, int_param(update, name, message))

    update.field("name", ("campaignname",), set_text("name", "campaignname"))
    update.field("status", ("campaignstatus",), lambda: fill_status(update))
    update.field("status_reason", ("campaignstatusreason",), set_text("status_reason", "campaignstatusreason"))
    update.field(
        "email_id", ("relemailid",), set_int("email_id", "relemailid", "Email not found or doesn't belong to user")
    )
    update.field("schedule", SCHEDULE_PARAMS, lambda: fill_schedule(update))
    update.field(
        "approval_user_explanation",
        ("approvaluserexplanation",),
        set_text("approval_user_explanation", "approvaluserexplanation"),
    )
    update.field(
        "google_analytics_domains",
        ("googleanalyticsdomains",),
        set_text("google_analytics_domains", "googleanalyticsdomains"),
    )
    update.field("publish_on_rss", ("publishonrss",), lambda: fill_publish_on_rss(update))
    update.field("auto_resend", AUTO_RESEND_PARAMS, lambda: fill_auto_resend(update))
    update.field(
        "original_campaign_id",
        ("originalcampaignid",),
        set_int("original_campaign_id", "originalcampaignid", "Original campaign not found"),
    )
    update.field("targeting", TARGETING_PARAMS, lambda: fill_targeting(update))
    update.field(
        "s2s_enabled",
        ("s2senabled",),
        lambda: setattr(campaign, "s2s_enabled", args.bool("s2senabled", default=False)),
    )
    update.field("variations", ("abtesting",), lambda: fill_variations(update))


async def update_campaign(args: Args, ctx: Context) -> dict[str, Any]:
    campaign_id = args.int("campaignid", required=True, min=1)
    if args.problems:
        # Code 1 comes first in the seed's order; nothing else can outrank it.
        raise Problems(args.problems)
    update = Update(args, campaign_pb2.Campaign(campaign_id=campaign_id), [])
    get = ctx.stubs.campaign.GetCampaign
    lookup = campaign_pb2.GetCampaignRequest(campaign_id=campaign_id, view=campaign_pb2.CAMPAIGN_VIEW_BASIC)
    # Reading the campaign is the translator's own need here: the caller holds Campaign.Update, not Campaign.Get.
    reader = ctx.as_translator()
    if update.given(*TARGETING_PARAMS, *AUTO_RESEND_PARAMS):
        # Targeting and auto-resend are one field each in the mask, but several legacy parameters:
        # the ones not given keep their stored values. (Not found here answers 2, the first check.)
        update.current = await reader.call(get, lookup)
    build_update(update)
    update_method = ctx.stubs.campaign.UpdateCampaign
    if args.problems:
        # RULINGS 2: the first failing check wins, so the service still judges the rest (e.g. code 2).
        if update.paths:
            failure = await validate_only(ctx, update_method, update.request(validate=True))
        else:
            failure = await validate_only(reader, get, lookup)
        raise Problems(args.problems, failure)
    if not update.paths:
        # Nothing to change: the answer is still "not found" for a campaign the caller cannot see.
        await reader.call(get, lookup)
        return {}
    await ctx.call(update_method, update.request())
    return {}


# campaign.pause, campaign.resume, campaign.cancel, campaign.approve ----------------------------


def by_id(request_type: Callable[..., Any]) -> Callable[[Args], Any]:
    def build(args: Args) -> Any:
        return request_type(campaign_id=args.int("campaignid", required=True, min=1))

    return build


# pause, resume, cancel and approve: 1 no id, 2 not found, 3 the status does not allow it.
ID_CODES = {"campaignid": 1, "CAMPAIGN_ID_REQUIRED": 1, "CAMPAIGN_NOT_FOUND": 2, "STATUS_INVALID": 3}
MISSING_ID_TEXT = "Missing required parameter (CampaignID)"
NOT_FOUND_TEXT = "Campaign not found or doesn't belong to user"


# splittest.create ------------------------------------------------------------------------------


def winner(args: Args) -> campaign_pb2.Winner.ValueType:
    text = args.str("winner", required=True, max_len=64)
    if args.problems and args.problems[-1].name == "winner":
        return campaign_pb2.WINNER_UNSPECIFIED
    value = WINNER_BY_LEGACY.get(legacy_name(text).replace(" ", "_"))
    if value is None:
        args.problems.append(
            ParamError("winner", "malformed", "Winner must be highest_open_rate or most_unique_clicks")
        )
        return campaign_pb2.WINNER_UNSPECIFIED
    return value


async def create_split_test(args: Args, ctx: Context) -> dict[str, Any]:
    request = campaign_pb2.CreateSplitTestRequest(
        campaign_id=args.int("campaignid", required=True, min=1),
        test_size_percent=args.int("testsize", required=True, min=1, max=99),
        test_duration_hours=args.int("testduration", required=True, min=1, max=INT32_MAX),
        winner=winner(args),
    )
    if args.problems:
        failure = None
        if request.campaign_id:
            # A list command names every problem: an unknown campaign too (code 6).
            lookup = campaign_pb2.GetCampaignRequest(campaign_id=request.campaign_id)
            # The translator's own lookup: the caller holds Campaign.Create, not Campaign.Get.
            failure = await validate_only(ctx.as_translator(), ctx.stubs.campaign.GetCampaign, lookup)
        raise Problems(args.problems, failure)
    split_test: campaign_pb2.SplitTest = await ctx.call(ctx.stubs.campaign.CreateSplitTest, request)
    return {"SplitTestID": split_test.split_test_id}


# campaigns.get --------------------------------------------------------------------------------


def list_status_filter(args: Args) -> tuple[list[campaign_pb2.CampaignStatus.ValueType], bool]:
    """CampaignStatus: one legacy status (or several, comma-separated), "Scheduled" or "All"."""
    statuses: list[campaign_pb2.CampaignStatus.ValueType] = []
    scheduled = False
    for item in args.str_list("campaignstatus"):
        name = legacy_name(item)
        if name == "all":
            return [], False
        if name == "scheduled":
            scheduled = True
        elif name in STATUS_BY_LEGACY:
            statuses.append(STATUS_BY_LEGACY[name])
        else:
            args.problems.append(
                ParamError("campaignstatus", "malformed", f"Unknown CampaignStatus {item[:40]!r}")
            )
    return statuses, scheduled


def list_schedule_types(args: Args) -> list[campaign_pb2.ScheduleType.ValueType]:
    types: list[campaign_pb2.ScheduleType.ValueType] = []
    for item in args.str_list("scheduletype"):
        value = SCHEDULE_BY_LEGACY.get(legacy_name(item))
        if value is None:
            args.problems.append(ParamError("scheduletype", "malformed", f"Unknown ScheduleType {item[:40]!r}"))
        elif value not in types:
            types.append(value)
    return types


def day_start(args: Args, name: str, *, after: bool) -> timestamp_pb2.Timestamp | None:
    """Date_From / Date_To as the instant their day starts (UTC); Date_To's next day, as the range is inclusive."""
    text = args.str(name, max_len=32).strip()
    if not text:
        return None
    day = parse_date(text)
    if day is None:
        args.problems.append(ParamError(name, "malformed", f"{name} must be a date (YYYY-MM-DD)"))
        return None
    start = datetime.combine(day, time(0), tzinfo=UTC) + (timedelta(days=1) if after else timedelta(0))
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromDatetime(start)
    except (ValueError, OverflowError):
        # 9999-12-31 + 1 day: the range is open-ended then.
        return None
    return stamp


@dataclass
class ListOptions:
    request: campaign_pb2.ListCampaignsRequest
    extras: Extras
    exclude_columns: frozenset[str]
    include_totals: bool


def list_options(args: Args, ctx: Context) -> ListOptions:
    statuses, scheduled = list_status_filter(args)
    order_type = args.str("ordertype", max_len=8).strip().upper()
    extras = Extras(
        statistics=args.bool("retrievestatistics", default=True),
        tags=args.bool("retrievetags", default=False),
        variation_statistics=args.bool("splitabteststatistics", default=False),
    )
    include_totals = args.bool("includetotalrecipients", default=False)
    owner = args.int("filterbyuserid", min=0)
    is_admin = ctx.caller is not None and ctx.caller.is_admin
    own_id = ctx.caller.user_id if ctx.caller is not None else 0
    if not is_admin and owner not in (0, own_id):
        # FilterByUserID is admin-only; a user may name only themself.
        args.problems.append(ParamError("filterbyuserid", "malformed", "FilterByUserID needs admin credentials"))
    request = campaign_pb2.ListCampaignsRequest(
        statuses=statuses,
        scheduled=scheduled,
        schedule_types=list_schedule_types(args),
        search=args.str("searchkeyword", max_len=255),
        campaign_ids=args.int_list("campaignids"),
        order_by=ORDER_FIELDS.get(
            args.str("orderfield", max_len=64).strip().lower(), campaign_pb2.CAMPAIGN_ORDER_FIELD_UNSPECIFIED
        ),
        descending=order_type == "DESC",
        page_size=args.int("recordsperrequest", min=0, max=1000),
        skip=args.int("recordsfrom", min=0, max=INT32_MAX),
        include_auto_resend=args.bool("include_autoresend", default=False),
        tag_ids=args.int_list("tags"),
        owner_user_id=owner if is_admin else 0,
        view=view_of(extras.full_view or include_totals),
        statistics_view=statistics_view_of(extras),
    )
    date_from = day_start(args, "date_from", after=False)
    date_to = day_start(args, "date_to", after=True)
    if date_from is not None:
        request.send_time_from.CopyFrom(date_from)
    if date_to is not None:
        request.send_time_to.CopyFrom(date_to)
    exclude = frozenset(name.lower() for name in args.str_list("excludecolumns")) - {"campaignid"}
    return ListOptions(request, extras, exclude, include_totals)


async def list_campaigns(args: Args, ctx: Context) -> dict[str, Any]:
    options = list_options(args, ctx)
    if args.problems:
        raise Problems(args.problems)
    response = await ctx.call(ctx.stubs.campaign.ListCampaigns, options.request)
    rows = []
    for campaign in response.campaigns:
        row = render_with_extras(campaign, options.extras)
        rows.append({key: value for key, value in row.items() if key.lower() not in options.exclude_columns})
    answer: dict[str, Any] = {"ErrorText": "", "Campaigns": rows, "TotalCampaigns": response.total_size}
    if options.include_totals:
        totals = response.total_statistics
        answer |= {
            "TotalRecipients": totals.total_recipients,
            "TotalSent": totals.total_sent,
            "TotalFailed": totals.total_failed,
        }
    return answer


# The table -----------------------------------------------------------------------------------

# campaigns.get documents no error codes; RULINGS 2 asks for a list for malformed parameters.
LIST_PARAMS = (
    "campaignstatus",
    "scheduletype",
    "searchkeyword",
    "filterbyuserid",
    "campaignids",
    "date_from",
    "date_to",
    "recordsperrequest",
    "recordsfrom",
    "orderfield",
    "ordertype",
    "tags",
    "excludecolumns",
)
LIST_REASONS = (
    "PAGE_SIZE_INVALID",
    "SKIP_INVALID",
    "SEARCH_INVALID",
    "CAMPAIGN_STATUS_INVALID",
    "SCHEDULE_TYPE_INVALID",
    "ORDER_BY_INVALID",
    "SEND_TIME_RANGE_INVALID",
    "TAG_IDS_INVALID",
    "OWNER_USER_ID_INVALID",
)


def recursive_codes(reason: str, code_by_list: Mapping[str, int]) -> dict[str, int]:
    """`REASON@path` keys for the recursive schedule's fields, with or without the request's "campaign." prefix."""
    return {
        f"{reason}@{prefix}schedule.recursive.{field}": code
        for field, code in code_by_list.items()
        for prefix in ("", "campaign.")
    }


RECURSIVE_FIELD_CODES = {
    "days_of_week": 8,
    "days_of_month": 8,
    "months": 9,
    "hours": 10,
    "minutes": 11,
    "max_instances": 12,
}
INVALID_PARAMETER = 26
UPDATE_CODES: dict[str, int] = {
    **ID_CODES,
    "ORIGINAL_CAMPAIGN_NOT_FOUND": 2,
    "originalcampaignid": 2,
    "campaignstatus": 3,
    "CAMPAIGN_NOT_EDITABLE": 3,
    "relemailid": 4,
    "EMAIL_NOT_FOUND": 4,
    "EMAIL_REQUIRED": 4,
    "scheduletype": 5,
    "sendtimezone": 5,
    "SCHEDULE_TYPE_INVALID": 5,
    "TIME_ZONE_INVALID": 5,
    "senddate": 6,
    "SEND_TIME_REQUIRED": 6,
    "SEND_TIME_IN_PAST": 6,
    "sendtime": 7,
    "schedulerecdaysofweek": 8,
    "schedulerecdaysofmonth": 8,
    "RECURSIVE_DAYS_REQUIRED": 8,
    "schedulerecmonths": 9,
    "RECURSIVE_MONTHS_REQUIRED": 9,
    "schedulerechours": 10,
    "RECURSIVE_HOURS_REQUIRED": 10,
    "schedulerecminutes": 11,
    "RECURSIVE_MINUTES_REQUIRED": 11,
    "schedulerecsendmaxinstance": 12,
    "RECURSIVE_MAX_INSTANCES_REQUIRED": 12,
    **recursive_codes("RECURSIVE_VALUE_INVALID", RECURSIVE_FIELD_CODES),
    **recursive_codes("TIME_ZONE_INVALID", {"time_zone": 5}),
    "autoresendwaitdays": 14,
    "AUTO_RESEND_WAIT_DAYS_INVALID": 14,
    "AUTO_RESEND_SUBJECT_REQUIRED": 15,
    "AUTO_RESEND_PREHEADER_REQUIRED": 16,
    "abtesting": 17,
    "abtesting.variations": 18,
    "VARIATION_EMAIL_NOT_FOUND": 19,
    "VARIATIONS_TOO_FEW": 21,
    "VARIATIONS_TOO_MANY": 22,
    "abtesting.variation.fields": 23,
    "VARIATION_FIELDS_REQUIRED": 23,
    "abtesting.variation.values": 24,
    "VARIATION_VALUE_INVALID": 24,
    "VARIATION_SHARE_TOO_SMALL": 25,
    # Herald's extension: malformed values the seed has no code for.
    **{
        key: INVALID_PARAMETER
        for key in (
            "campaignname",
            "campaignstatusreason",
            "approvaluserexplanation",
            "googleanalyticsdomains",
            "autoresendsubject",
            "autoresendpreheadertext",
            "recipientlistsandsegments",
            "exclude_recipientlistsandsegments",
            "rulesjsonbundle",
            "CAMPAIGN_NAME_REQUIRED",
            "CAMPAIGN_NAME_TOO_LONG",
            "CAMPAIGN_NAME_INVALID",
            "TARGETING_INVALID",
            "RULES_BUNDLE_INVALID",
            "UPDATE_MASK_INVALID",
            "TEXT_INVALID",
            # The audience service's verdict on a RulesJsonBundle's rules.
            "RULES_INVALID",
            "RULE_TYPE_UNSUPPORTED",
            # RULINGS 15: a list or segment that is not the user's.
            "LIST_NOT_FOUND",
            "SEGMENT_NOT_FOUND",
        )
    },
}
SOURCE_NOT_FOUND_TEXT = "Recipient list or segment not found or doesn't belong to user"
TIME_ZONE_TEXT = "Invalid SendTimeZone: not an IANA time zone (such as America/New_York)"
# One code, several causes: the ErrorText says which (RULINGS 15; a time zone is no schedule type), in the
# legacy client's words where the code has no single seed text.
UPDATE_CAUSE_TEXTS = {
    "SEND_TIME_REQUIRED": "Missing SendDate for Future schedule",
    "SEND_TIME_IN_PAST": "SendDate and SendTime lie in the past",
    "CAMPAIGN_NAME_REQUIRED": "CampaignName cannot be empty",
    "CAMPAIGN_NAME_TOO_LONG": "CampaignName is longer than 255 characters",
    "LIST_NOT_FOUND": SOURCE_NOT_FOUND_TEXT,
    "SEGMENT_NOT_FOUND": SOURCE_NOT_FOUND_TEXT,
    "sendtimezone": TIME_ZONE_TEXT,
    "TIME_ZONE_INVALID": TIME_ZONE_TEXT,
    **{key: TIME_ZONE_TEXT for key in recursive_codes("TIME_ZONE_INVALID", {"time_zone": 5})},
}
UPDATE_TEXTS = {
    1: MISSING_ID_TEXT,
    2: NOT_FOUND_TEXT,
    3: "Invalid campaign status",
    4: "Email not found or doesn't belong to user",
    5: "Invalid schedule type",
    7: "Missing SendTime for Future schedule",
    8: "Missing ScheduleRecDaysOfWeek or ScheduleRecDaysOfMonth for Recursive schedule",
    9: "Missing ScheduleRecMonths for Recursive schedule",
    10: "Missing ScheduleRecHours for Recursive schedule",
    11: "Missing ScheduleRecMinutes for Recursive schedule",
    12: "Missing ScheduleRecSendMaxInstance for Recursive schedule",
    14: "Missing or invalid AutoResendWaitDays when AutoResendEnabled=true",
    15: "Missing AutoResendSubject when AutoResendEnabled=true",
    16: "Missing AutoResendPreHeaderText when AutoResendEnabled=true",
    17: "Invalid ABTesting parameter format (must be array)",
    18: "Invalid ABTesting variations format (must be array)",
    19: "Email variation not found or doesn't belong to user",
    21: "Minimum 2 A/B test variations required",
    22: "Maximum 5 A/B test variations allowed",
    23: "Missing required fields in A/B variation (EmailID, Weight)",
    24: "Invalid EmailID or Weight in A/B variation",
    25: "A/B variation distribution percentage below 1%",
}
# Code 6 (missing SendDate, or a send time in the past) and 26 (Herald's "invalid parameter") keep
# the detail of what was wrong as their ErrorText.

# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

CAMPAIGN_ID = Param("CampaignID", "integer", "ID of the campaign", required=True)
STATUS_VALUES = tuple(STATUS_NAMES.values())
SCHEDULE_VALUES = tuple(SCHEDULE_NAMES.values())
EXTRAS_PARAMS = (
    Param("RetrieveTags", "boolean", "Add Tags [{TagID, Tag}]", default=False),
    Param("SplitABTestStatistics", "boolean", "Add per-variation figures", default=False),
)
RECURSIVE_LIST = "for a Recursive schedule: comma-separated numbers, an array, or * for every value"
GET_PARAMS = (
    CAMPAIGN_ID,
    Param("RetrieveStatistics", "boolean", "Add the delivery statistics", default=False),
    *EXTRAS_PARAMS,
    Param("RetrieveRecipientDomains", "boolean", "With RetrieveStatistics: add RecipientDomains", default=True),
)
GET_RETURNS = (
    Param("Campaign", "object", "Every stored field of the campaign under its legacy name", required=True),
    Param(
        "CampaignThroughput",
        "object",
        "Emails per second between the first and the last send, and those seconds",
        required=True,
        fields=(
            Param("EmailsPerSecond", "number", required=True),
            Param("Duration", "integer", required=True),
        ),
    ),
)
UPDATE_PARAMS = (
    CAMPAIGN_ID,
    Param("CampaignName", "string", "New campaign name (at most 255 characters)"),
    Param("CampaignStatus", "string", "Draft, or Ready to schedule it", enum=STATUS_VALUES),
    Param("CampaignStatusReason", "string", "Reason for the status change"),
    Param("RelEmailID", "integer", "ID of the email content to send"),
    Param("ScheduleType", "string", "When it is sent", enum=SCHEDULE_VALUES),
    Param("SendDate", "string", "YYYY-MM-DD in SendTimeZone; required for a Future schedule", format="date"),
    Param("SendTime", "string", "HH:MM:SS in SendTimeZone; required for a Future schedule"),
    Param("SendTimeZone", "string", "IANA time zone of SendDate/SendTime and of a Recursive schedule (UTC)"),
    Param("ScheduleRecDaysOfWeek", "integers", f"Days of the week (0 = Sunday) {RECURSIVE_LIST}"),
    Param("ScheduleRecDaysOfMonth", "integers", f"Days of the month {RECURSIVE_LIST}"),
    Param("ScheduleRecMonths", "integers", f"Months {RECURSIVE_LIST}"),
    Param("ScheduleRecHours", "integers", f"Hours {RECURSIVE_LIST}"),
    Param("ScheduleRecMinutes", "integers", f"Minutes {RECURSIVE_LIST}"),
    Param("ScheduleRecSendMaxInstance", "integer", "Occurrences of a Recursive schedule"),
    Param("ApprovalUserExplanation", "string", "User explanation for approval"),
    Param("GoogleAnalyticsDomains", "string", "Google Analytics tracking domains"),
    Param("PublishOnRSS", "string", "Enabled or Disabled (or a boolean)", enum=("Enabled", "Disabled")),
    Param("AutoResendEnabled", "boolean", "Resend to non-openers"),
    Param("AutoResendWaitDays", "integer", "Days before the resend (1-365); required with AutoResendEnabled"),
    Param("AutoResendSubject", "string", "Subject of the resend; required with AutoResendEnabled"),
    Param("AutoResendPreHeaderText", "string", "Pre-header of the resend; required with AutoResendEnabled"),
    Param("OriginalCampaignID", "integer", "ID of the original campaign if this is a resend"),
    Param(
        "RecipientListsAndSegments",
        "strings",
        "Recipients: ListID:SegmentID items (a bare ListID is the whole list)",
    ),
    Param("Exclude_RecipientListsAndSegments", "strings", "Excluded recipients: ListID:SegmentID items"),
    Param(
        "RulesJsonBundle",
        "object",
        'Recipient rules {"operator": "and", "criteria": [{"list_id": N, "operator": "and", "rules": [[...]]}]}',
    ),
    Param("S2SEnabled", "boolean", "Server-to-server tracking"),
    Param(
        "ABTesting",
        "object",
        "A/B variations; {} or Enabled false removes them",
        fields=(
            Param("Enabled", "boolean"),
            Param(
                "Variations",
                "array",
                "2 to 5 variations",
                fields=(Param("EmailID", "integer", required=True), Param("Weight", "integer", required=True)),
            ),
        ),
    ),
)
SPLIT_TEST_PARAMS = (
    CAMPAIGN_ID,
    Param("TestSize", "integer", "Percentage of the recipients in the test group (1-99)", required=True),
    Param("TestDuration", "integer", "Hours before the winner goes to the other recipients", required=True),
    Param(
        "Winner",
        "string",
        "How the winner is chosen",
        required=True,
        enum=("highest_open_rate", "most_unique_clicks", "Highest Open Rate", "Most Unique Clicks"),
    ),
)
LIST_PARAMS_DECLARED = (
    Param("CampaignStatus", "strings", "Statuses (comma-separated or an array), Scheduled, or All"),
    Param("ScheduleType", "strings", "Schedule types (comma-separated or an array)"),
    Param("SearchKeyword", "string", "Case-insensitive substring of the name"),
    Param("FilterByUserID", "integer", "Only this user's campaigns (admin credentials only)"),
    Param("CampaignIDs", "integers", "Only these campaigns (comma-separated or an array)"),
    Param("Date_From", "string", "Sent (or due) on this day or later, UTC", format="date"),
    Param("Date_To", "string", "Sent (or due) on this day or earlier, UTC", format="date"),
    Param("RecordsPerRequest", "integer", "Page size, at most 1000; 0 means all", default=0),
    Param("RecordsFrom", "integer", "Rows to skip", default=0),
    Param(
        "OrderField",
        "string",
        "Sort column",
        enum=("CampaignID", "CampaignName", "CampaignStatus", "SendDate", "CreateDateTime", "UpdateDateTime"),
    ),
    Param("OrderType", "string", "Sort direction", enum=("ASC", "DESC")),
    Param("Tags", "integers", "Only campaigns with one of these tag IDs"),
    Param("ExcludeColumns", "strings", "Columns left out of each row (never CampaignID)"),
    Param("RetrieveStatistics", "boolean", "Add the statistics fields to each row", default=True),
    *EXTRAS_PARAMS,
    Param(
        "IncludeTotalRecipients",
        "boolean",
        "Add TotalRecipients, TotalSent, TotalFailed over every match",
        default=False,
    ),
    Param("Include_AutoResend", "boolean", "Also list auto-resend campaigns", default=False),
)
LIST_RETURNS = (
    ERROR_TEXT,
    Param("Campaigns", "array", "One object per campaign, as campaign.get's Campaign", required=True),
    Param("TotalCampaigns", "integer", "Every match, whatever the page", required=True),
    Param("TotalRecipients", "integer", "With IncludeTotalRecipients"),
    Param("TotalSent", "integer", "With IncludeTotalRecipients"),
    Param("TotalFailed", "integer", "With IncludeTotalRecipients"),
)

ROWS = [
    Command(
        "campaign.create",
        unary(lambda s: s.campaign.CreateCampaign, create, render_created),
        permission="Campaign.Create",
        codes={
            "campaignname": 1,
            "CAMPAIGN_NAME_REQUIRED": 1,
            "CAMPAIGN_NAME_TOO_LONG": 1,
            "CAMPAIGN_NAME_INVALID": 1,
        },
        texts={1: "Missing required parameter (CampaignName)"},
        summary="Create a Draft campaign",
        params=(Param("CampaignName", "string", "Name of the new campaign", required=True),),
        returns=(Param("CampaignID", "integer", "ID of the new campaign", required=True),),
    ),
    Command(
        "campaign.get",
        get_campaign,
        scope="user_or_admin",
        permission="Campaign.Get",
        shape="int",
        codes={"campaignid": 2, "CAMPAIGN_ID_REQUIRED": 2, "CAMPAIGN_NOT_FOUND": 2},
        texts={2: "Campaign not found or invalid CampaignID"},
        summary="A campaign, with its statistics, tags and A/B figures on request",
        params=GET_PARAMS,
        returns=GET_RETURNS,
    ),
    Command(
        "campaign.update",
        update_campaign,
        permission="Campaign.Update",
        shape="int",
        codes=UPDATE_CODES,
        texts=UPDATE_TEXTS,
        cause_texts=UPDATE_CAUSE_TEXTS,
        summary="Change a campaign: name, status, email, schedule, recipients, auto-resend, A/B variations",
        params=UPDATE_PARAMS,
    ),
    Command(
        "campaign.copy",
        unary(lambda s: s.campaign.CopyCampaign, copy, render_copy),
        permission="Campaign.Create",
        codes={"campaignid": 1, "CAMPAIGN_ID_REQUIRED": 1, "CAMPAIGN_NOT_FOUND": 1},
        texts={1: "Invalid source campaign"},
        summary="Copy a campaign into a new Draft",
        params=(Param("CampaignID", "integer", "ID of the campaign to copy", required=True),),
        returns=(Param("NewCampaignID", "integer", "ID of the copy", required=True),),
    ),
    Command(
        "campaign.pause",
        unary(lambda s: s.campaign.PauseCampaign, by_id(campaign_pb2.PauseCampaignRequest), render_nothing),
        permission="Campaign.Update",
        shape="int",
        codes=ID_CODES,
        texts={
            1: MISSING_ID_TEXT,
            2: NOT_FOUND_TEXT,
            3: "Invalid campaign status (campaign must be Sending or Ready to be paused)",
        },
        summary="Pause a Sending or Ready campaign",
        params=(CAMPAIGN_ID,),
    ),
    Command(
        "campaign.resume",
        unary(lambda s: s.campaign.ResumeCampaign, by_id(campaign_pb2.ResumeCampaignRequest), render_nothing),
        permission="Campaign.Update",
        shape="int",
        codes=ID_CODES,
        texts={
            1: MISSING_ID_TEXT,
            2: NOT_FOUND_TEXT,
            3: "Campaign status is not Paused (only Paused campaigns can be resumed)",
        },
        summary="Resume a Paused campaign",
        params=(CAMPAIGN_ID,),
    ),
    Command(
        "campaign.cancel",
        unary(lambda s: s.campaign.CancelCampaign, by_id(campaign_pb2.CancelCampaignRequest), render_nothing),
        permission="Campaign.Update",
        shape="list",
        codes=ID_CODES,
        texts={1: MISSING_ID_TEXT, 2: NOT_FOUND_TEXT, 3: "Invalid campaign status"},
        summary="Cancel a campaign: a Ready one back to Draft, a Sending or Paused one to Cancelled",
        params=(CAMPAIGN_ID,),
    ),
    Command(
        "campaign.approve",
        unary(lambda s: s.campaign.ApproveCampaign, by_id(campaign_pb2.ApproveCampaignRequest), render_nothing),
        scope="admin",
        shape="mixed",
        codes=ID_CODES,
        texts={1: MISSING_ID_TEXT, 2: "Campaign not found", 3: "Campaign is not Pending Approval"},
        summary="Approve an untrusted user's Pending Approval campaign (it becomes Ready)",
        params=(CAMPAIGN_ID,),
    ),
    Command(
        "splittest.create",
        create_split_test,
        permission="Campaign.Create",
        codes={
            "campaignid": 1,
            "CAMPAIGN_ID_REQUIRED": 1,
            "testsize": 2,
            "TEST_SIZE_REQUIRED": 2,
            "TEST_SIZE_INVALID": 2,
            "testduration": 4,
            "TEST_DURATION_REQUIRED": 4,
            "TEST_DURATION_INVALID": 4,
            "winner": 5,
            "WINNER_REQUIRED": 5,
            "WINNER_INVALID": 5,
            "CAMPAIGN_NOT_FOUND": 6,
        },
        texts={
            1: MISSING_ID_TEXT,
            2: "Missing or invalid TestSize (a percentage from 1 to 99)",
            4: "Missing or invalid TestDuration (hours)",
            5: "Missing or invalid Winner (highest_open_rate or most_unique_clicks)",
            6: NOT_FOUND_TEXT,
        },
        v1_alias=False,
        summary="Send an A/B campaign's variations to a test group first, the winner to the rest later",
        params=SPLIT_TEST_PARAMS,
        returns=(Param("SplitTestID", "integer", "ID of the split test", required=True),),
    ),
    Command(
        "campaigns.delete",
        unary(lambda s: s.campaign.DeleteCampaigns, delete, render_error_text),
        permission="Campaign.Delete",
        codes={"campaigns": 1, "CAMPAIGN_IDS_REQUIRED": 1},
        texts={1: "Missing required parameter (Campaigns)"},
        summary="Delete campaigns and their auto-resend campaigns (unknown and foreign IDs are ignored)",
        params=(Param("Campaigns", "integers", "Campaign IDs, comma-separated or an array", required=True),),
        returns=(ERROR_TEXT,),
    ),
    Command(
        "campaigns.get",
        list_campaigns,
        scope="user_or_admin",
        permission="Campaigns.Get",
        shape="mixed",
        codes={name: 1 for name in LIST_PARAMS} | {reason: 1 for reason in LIST_REASONS},
        texts={1: "Invalid parameter"},
        summary="List campaigns, filtered, sorted and paged",
        params=LIST_PARAMS_DECLARED,
        returns=LIST_RETURNS,
    ),
]
