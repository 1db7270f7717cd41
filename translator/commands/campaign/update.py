"""The row for campaign.update: each legacy parameter (or group of them) fills one field of the update mask.

`build_update` lists the fields (`update.field(path, parameters, fill)`); a field is masked only when its
parameters had no problem. With a problem, the service still judges the rest in a validate-only call, so
that the int-shaped answer is the first failing check in the seed's order (RULINGS 2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import field_mask_pb2
from herald.campaign.v1 import campaign_pb2

from translator.commands import Args, Command, Context, Param, Problems, validate_only
from translator.commands.campaign.legacy import (
    CAMPAIGN_ID,
    ID_CODES,
    MISSING_ID_TEXT,
    NOT_FOUND_TEXT,
    SCHEDULE_BY_LEGACY,
    SCHEDULE_NAMES,
    STATUS_BY_LEGACY,
    STATUS_NAMES,
    parse_date,
)
from translator.params import INT32_MAX, INT64_MAX, ParamError, items_of, legacy_bool, legacy_name

T = TypeVar("T")
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
    send_date = required_value(
        update, "senddate", parse_date, "Missing SendDate for Future schedule", "Invalid SendDate (YYYY-MM-DD)"
    )
    send_time = required_value(
        update, "sendtime", parse_time, "Missing SendTime for Future schedule", "Invalid SendTime (HH:MM:SS)"
    )
    if send_date is None or send_time is None or zone is None:
        return
    local = datetime.combine(send_date, send_time, tzinfo=zone)
    schedule.future.send_time.FromDatetime(local.astimezone(UTC))
    schedule.future.time_zone = zone_name


def required_value(
    update: Update, name: str, parse: Callable[[str], T | None], missing: str, malformed: str
) -> T | None:
    """A value a Future schedule needs (SendDate, SendTime); None, with a problem, when missing or malformed."""
    text = update.args.str(name, max_len=32).strip()
    if not text:
        update.problem(name, "missing", missing)
        return None
    value = parse(text)
    if value is None:
        update.problem(name, "malformed", malformed)
    return value


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


# Codes and texts -----------------------------------------------------------------------------------


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
            # Issue 14: a setting Herald does not implement (GoogleAnalyticsDomains, S2SEnabled).
            "SETTING_UNSUPPORTED",
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

# Declared parameters (the OpenAPI document; the handler reads nothing else) ------------------------

STATUS_VALUES = tuple(STATUS_NAMES.values())
SCHEDULE_VALUES = tuple(SCHEDULE_NAMES.values())
RECURSIVE_LIST = "for a Recursive schedule: comma-separated numbers, an array, or * for every value"
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
    Param(
        "GoogleAnalyticsDomains",
        "string",
        "Not supported (issue 14): only empty is accepted; a domain answers 26, as Herald tags no links for Google Analytics",
    ),
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
    Param(
        "S2SEnabled",
        "boolean",
        "Not supported (issue 14): only false is accepted; true answers 26, as Herald has no server-to-server tracking",
    ),
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

ROWS = [
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
]
