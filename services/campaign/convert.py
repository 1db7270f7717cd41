"""CampaignService's messages and the campaign domain's values, both ways: the enum maps, campaigns, update
patches and statistics (the api layer; services/campaign/api.py calls these)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf import json_format, timestamp_pb2
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import campaign_pb2
from herald.delivery.v1 import delivery_pb2

from services.campaign import domain
from services.campaign.domain import Campaign, CampaignStatus, OrderField, ScheduleType, Unrecognized, Winner
from services.common import field_masks, grpcutil


def instant(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


# --- enums -----------------------------------------------------------------------------------------------------

STATUS_TO_PROTO: dict[CampaignStatus, campaign_pb2.CampaignStatus.ValueType] = {
    CampaignStatus.DRAFT: campaign_pb2.CAMPAIGN_STATUS_DRAFT,
    CampaignStatus.READY: campaign_pb2.CAMPAIGN_STATUS_READY,
    CampaignStatus.SENDING: campaign_pb2.CAMPAIGN_STATUS_SENDING,
    CampaignStatus.PAUSED: campaign_pb2.CAMPAIGN_STATUS_PAUSED,
    CampaignStatus.PENDING_APPROVAL: campaign_pb2.CAMPAIGN_STATUS_PENDING_APPROVAL,
    CampaignStatus.SENT: campaign_pb2.CAMPAIGN_STATUS_SENT,
    CampaignStatus.FAILED: campaign_pb2.CAMPAIGN_STATUS_FAILED,
    CampaignStatus.CANCELLED: campaign_pb2.CAMPAIGN_STATUS_CANCELLED,
}
STATUS_FROM_PROTO: dict[int, CampaignStatus] = {value: status for status, value in STATUS_TO_PROTO.items()}
SCHEDULE_TYPE_TO_PROTO: dict[ScheduleType, campaign_pb2.ScheduleType.ValueType] = {
    ScheduleType.NOT_SCHEDULED: campaign_pb2.SCHEDULE_TYPE_NOT_SCHEDULED,
    ScheduleType.IMMEDIATE: campaign_pb2.SCHEDULE_TYPE_IMMEDIATE,
    ScheduleType.FUTURE: campaign_pb2.SCHEDULE_TYPE_FUTURE,
    ScheduleType.RECURSIVE: campaign_pb2.SCHEDULE_TYPE_RECURSIVE,
}
SCHEDULE_TYPE_FROM_PROTO: dict[int, ScheduleType] = {
    value: schedule_type for schedule_type, value in SCHEDULE_TYPE_TO_PROTO.items()
}
WINNER_TO_PROTO: dict[Winner, campaign_pb2.Winner.ValueType] = {
    Winner.HIGHEST_OPEN_RATE: campaign_pb2.WINNER_HIGHEST_OPEN_RATE,
    Winner.MOST_UNIQUE_CLICKS: campaign_pb2.WINNER_MOST_UNIQUE_CLICKS,
}
WINNER_FROM_PROTO: dict[int, Winner] = {value: winner for winner, value in WINNER_TO_PROTO.items()}
# UNSPECIFIED orders by campaign id.
ORDER_FIELD_FROM_PROTO: dict[int, OrderField] = {
    campaign_pb2.CAMPAIGN_ORDER_FIELD_UNSPECIFIED: OrderField.CAMPAIGN_ID,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_CAMPAIGN_ID: OrderField.CAMPAIGN_ID,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_NAME: OrderField.NAME,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_STATUS: OrderField.STATUS,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_SEND_TIME: OrderField.SEND_TIME,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_CREATE_TIME: OrderField.CREATE_TIME,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_UPDATE_TIME: OrderField.UPDATE_TIME,
}


def status_from_proto(value: int) -> CampaignStatus | Unrecognized:
    """The status a request names; UNSPECIFIED names none."""
    return STATUS_FROM_PROTO.get(value) or Unrecognized(value)


def schedule_type_from_proto(value: int) -> ScheduleType | Unrecognized:
    """The schedule type a request names; UNSPECIFIED names none."""
    return SCHEDULE_TYPE_FROM_PROTO.get(value) or Unrecognized(value)


def order_field_from_proto(value: int) -> OrderField | Unrecognized:
    return ORDER_FIELD_FROM_PROTO.get(value) or Unrecognized(value)


def winner_from_proto(value: int) -> Winner | Unrecognized | None:
    """The winner rule a request names; None when it names none (UNSPECIFIED)."""
    if value == campaign_pb2.WINNER_UNSPECIFIED:
        return None
    return WINNER_FROM_PROTO.get(value) or Unrecognized(value)


# --- domain -> proto -------------------------------------------------------------------------------------------


def _schedule_to_proto(schedule: domain.Schedule) -> campaign_pb2.Schedule:
    message = campaign_pb2.Schedule(type=SCHEDULE_TYPE_TO_PROTO[schedule.type])
    if schedule.future is not None:
        message.future.send_time.CopyFrom(grpcutil.to_timestamp(schedule.future.send_time))
        message.future.time_zone = schedule.future.time_zone
    if schedule.recursive is not None:
        rule = schedule.recursive
        message.recursive.CopyFrom(
            campaign_pb2.RecursiveSchedule(
                days_of_week=rule.days_of_week,
                days_of_month=rule.days_of_month,
                months=rule.months,
                hours=rule.hours,
                minutes=rule.minutes,
                max_instances=rule.max_instances,
                time_zone=rule.time_zone,
            )
        )
    return message


def targeting_to_proto(targeting: domain.Targeting) -> campaign_pb2.Targeting:
    message = campaign_pb2.Targeting(
        included=[
            campaign_pb2.RecipientSource(list_id=s.list_id, segment_id=s.segment_id) for s in targeting.included
        ],
        excluded=[
            campaign_pb2.RecipientSource(list_id=s.list_id, segment_id=s.segment_id) for s in targeting.excluded
        ],
    )
    if targeting.rules_bundle is not None:
        message.rules_bundle.update(dict(targeting.rules_bundle))
    return message


def targeting_spec(targeting: domain.Targeting) -> audience_pb2.TargetingSpec:
    spec = audience_pb2.TargetingSpec(
        included=[
            audience_pb2.ListSegment(list_id=s.list_id, segment_id=s.segment_id) for s in targeting.included
        ],
        excluded=[
            audience_pb2.ListSegment(list_id=s.list_id, segment_id=s.segment_id) for s in targeting.excluded
        ],
    )
    if targeting.rules_bundle is not None:
        spec.rules_bundle.update(dict(targeting.rules_bundle))
    return spec


def split_test_to_proto(split_test: domain.SplitTest) -> campaign_pb2.SplitTest:
    return campaign_pb2.SplitTest(
        split_test_id=split_test.split_test_id,
        campaign_id=split_test.campaign_id,
        test_size_percent=split_test.test_size_percent,
        test_duration_hours=split_test.test_duration_hours,
        winner=WINNER_TO_PROTO[split_test.winner],
    )


def campaign_to_proto(campaign: Campaign) -> campaign_pb2.Campaign:
    message = campaign_pb2.Campaign(
        campaign_id=campaign.campaign_id,
        owner_user_id=campaign.owner_user_id,
        name=campaign.name,
        status=STATUS_TO_PROTO[campaign.status],
        status_reason=campaign.status_reason,
        email_id=campaign.email_id or 0,
        schedule_type=SCHEDULE_TYPE_TO_PROTO[campaign.schedule_type],
        original_campaign_id=campaign.original_campaign_id or 0,
        create_time=grpcutil.to_timestamp(campaign.created_at),
        update_time=grpcutil.to_timestamp(campaign.updated_at),
        schedule=_schedule_to_proto(campaign.schedule),
        targeting=targeting_to_proto(campaign.targeting),
        auto_resend=campaign_pb2.AutoResend(
            enabled=campaign.auto_resend.enabled,
            wait_days=campaign.auto_resend.wait_days,
            subject=campaign.auto_resend.subject,
            preheader_text=campaign.auto_resend.preheader_text,
        ),
        variations=[campaign_pb2.Variation(email_id=v.email_id, weight=v.weight) for v in campaign.variations],
        approval_user_explanation=campaign.approval_user_explanation,
        google_analytics_domains=campaign.google_analytics_domains,
        publish_on_rss=campaign.publish_on_rss,
        s2s_enabled=campaign.s2s_enabled,
        auto_resend_of_campaign_id=campaign.auto_resend_of or 0,
        relay=campaign.relay,
    )
    if campaign.send_started_at is not None:
        message.send_time.CopyFrom(grpcutil.to_timestamp(campaign.send_started_at))
    if campaign.send_finished_at is not None:
        message.send_finish_time.CopyFrom(grpcutil.to_timestamp(campaign.send_finished_at))
    if campaign.split_test is not None:
        message.split_test.CopyFrom(split_test_to_proto(campaign.split_test))
    return message


# --- proto -> domain -------------------------------------------------------------------------------------------


def _schedule_request(schedule: campaign_pb2.Schedule) -> domain.ScheduleRequest:
    schedule_type = SCHEDULE_TYPE_FROM_PROTO.get(schedule.type)
    detail = schedule.WhichOneof("detail")
    if detail == "future":
        future = schedule.future
        send_time = instant(future.send_time) if future.HasField("send_time") else None
        return domain.ScheduleRequest(schedule_type, "future", send_time=send_time, time_zone=future.time_zone)
    if detail == "recursive":
        rule = schedule.recursive
        recursive = domain.RecursiveSchedule(
            days_of_week=tuple(rule.days_of_week),
            days_of_month=tuple(rule.days_of_month),
            months=tuple(rule.months),
            hours=tuple(rule.hours),
            minutes=tuple(rule.minutes),
            max_instances=rule.max_instances,
            time_zone=rule.time_zone,
        )
        return domain.ScheduleRequest(schedule_type, "recursive", recursive=recursive)
    return domain.ScheduleRequest(schedule_type)


def _targeting(targeting: campaign_pb2.Targeting) -> domain.Targeting:
    return domain.Targeting(
        included=tuple(domain.RecipientSource(s.list_id, s.segment_id) for s in targeting.included),
        excluded=tuple(domain.RecipientSource(s.list_id, s.segment_id) for s in targeting.excluded),
        rules_bundle=json_format.MessageToDict(targeting.rules_bundle)
        if targeting.HasField("rules_bundle")
        else None,
    )


def patch_from_proto(request: campaign_pb2.UpdateCampaignRequest) -> domain.CampaignPatch:
    campaign = request.campaign
    return domain.CampaignPatch(
        campaign_id=campaign.campaign_id,
        paths=field_masks.update_paths(request.update_mask, campaign, domain.UPDATABLE_PATHS),
        name=campaign.name,
        status=status_from_proto(campaign.status),
        status_reason=campaign.status_reason,
        email_id=campaign.email_id,
        schedule=_schedule_request(campaign.schedule),
        targeting=_targeting(campaign.targeting),
        auto_resend=domain.AutoResend(
            enabled=campaign.auto_resend.enabled,
            wait_days=campaign.auto_resend.wait_days,
            subject=campaign.auto_resend.subject,
            preheader_text=campaign.auto_resend.preheader_text,
        ),
        variations=tuple(domain.Variation(v.email_id, v.weight) for v in campaign.variations),
        original_campaign_id=campaign.original_campaign_id,
        approval_user_explanation=campaign.approval_user_explanation,
        google_analytics_domains=campaign.google_analytics_domains,
        publish_on_rss=campaign.publish_on_rss,
        s2s_enabled=campaign.s2s_enabled,
        relay=campaign.relay,
    )


# --- statistics ------------------------------------------------------------------------------------------------


def _send_span(stats: delivery_pb2.CampaignStatistics) -> tuple[datetime | None, datetime | None]:
    first = instant(stats.first_send_time) if stats.HasField("first_send_time") else None
    last = instant(stats.last_send_time) if stats.HasField("last_send_time") else None
    return first, last


def _main_send(stats: delivery_pb2.CampaignStatistics) -> tuple[int, datetime | None, datetime | None]:
    """The main send's messages and span: the throughput's, without the tail of deferred recipients' retries."""
    first, _ = _send_span(stats)
    last = instant(stats.main_send_last_send_time) if stats.HasField("main_send_last_send_time") else None
    return stats.main_send_total_sent, first, last


def statistics_to_proto(stats: delivery_pb2.CampaignStatistics) -> campaign_pb2.CampaignStatistics:
    """A campaign's statistics from delivery's figures, with the throughput of its main send (domain.throughput)."""
    emails_per_second, duration = domain.throughput(*_main_send(stats))
    message = campaign_pb2.CampaignStatistics(
        total_recipients=stats.total_recipients,
        total_sent=stats.total_sent,
        total_failed=stats.total_failed,
        total_deferred=stats.total_deferred,
        total_opens=stats.total_opens,
        unique_opens=stats.unique_opens,
        total_clicks=stats.total_clicks,
        unique_clicks=stats.unique_clicks,
        total_hard_bounces=stats.total_hard_bounces,
        total_soft_bounces=stats.total_soft_bounces,
        total_policy_rejections=stats.total_policy_rejections,
        total_spam_complaints=stats.total_spam_complaints,
        total_unsubscriptions=stats.total_unsubscriptions,
        emails_per_second=emails_per_second,
        duration_seconds=duration,
        variations=[
            campaign_pb2.VariationStatistics(
                email_id=v.email_id,
                total_recipients=v.total_recipients,
                total_sent=v.total_sent,
                total_failed=v.total_failed,
                total_deferred=v.total_deferred,
                unique_opens=v.unique_opens,
                unique_clicks=v.unique_clicks,
            )
            for v in stats.variations
        ],
        domains=[
            campaign_pb2.DomainStatistics(
                domain=d.domain,
                total_recipients=d.total_recipients,
                total_sent=d.total_sent,
                total_failed=d.total_failed,
                total_deferred=d.total_deferred,
            )
            for d in stats.domains
        ],
    )
    if stats.HasField("split_test"):
        result = stats.split_test
        message.split_test.test_recipients = result.test_recipients
        message.split_test.held_recipients = result.held_recipients
        message.split_test.winner_email_id = result.winner_email_id
        if result.HasField("decide_time"):
            message.split_test.decide_time.CopyFrom(result.decide_time)
    return message


_COUNTERS = (
    "total_recipients",
    "total_sent",
    "total_failed",
    "total_deferred",
    "main_send_total_sent",
    "total_opens",
    "unique_opens",
    "total_clicks",
    "unique_clicks",
    "total_hard_bounces",
    "total_soft_bounces",
    "total_policy_rejections",
    "total_spam_complaints",
    "total_unsubscriptions",
)
_VARIATION_COUNTERS = (
    "total_recipients",
    "total_sent",
    "total_failed",
    "total_deferred",
    "unique_opens",
    "unique_clicks",
)
_DOMAIN_COUNTERS = ("total_recipients", "total_sent", "total_failed", "total_deferred")


def total_statistics(items: Iterable[delivery_pb2.CampaignStatistics]) -> campaign_pb2.CampaignStatistics:
    """Counters summed over campaigns; the throughput spans the first send of any to the last main send of any."""
    total = delivery_pb2.CampaignStatistics()
    variations: dict[int, delivery_pb2.VariationStatistics] = {}
    domains: dict[str, delivery_pb2.DomainStatistics] = {}
    for stats in items:
        for name in _COUNTERS:
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        first, last = _send_span(stats)
        if first is not None and (not total.HasField("first_send_time") or first < instant(total.first_send_time)):
            total.first_send_time.CopyFrom(stats.first_send_time)
        if last is not None and (not total.HasField("last_send_time") or last > instant(total.last_send_time)):
            total.last_send_time.CopyFrom(stats.last_send_time)
        _, _, main_last = _main_send(stats)
        if main_last is not None and (
            not total.HasField("main_send_last_send_time") or main_last > instant(total.main_send_last_send_time)
        ):
            total.main_send_last_send_time.CopyFrom(grpcutil.to_timestamp(main_last))
        for v in stats.variations:
            into_variation = variations.setdefault(
                v.email_id, delivery_pb2.VariationStatistics(email_id=v.email_id)
            )
            for name in _VARIATION_COUNTERS:
                setattr(into_variation, name, getattr(into_variation, name) + getattr(v, name))
        for d in stats.domains:
            into_domain = domains.setdefault(d.domain, delivery_pb2.DomainStatistics(domain=d.domain))
            for name in _DOMAIN_COUNTERS:
                setattr(into_domain, name, getattr(into_domain, name) + getattr(d, name))
    total.variations.extend(variations[key] for key in sorted(variations))
    total.domains.extend(domains[key] for key in sorted(domains))
    return statistics_to_proto(total)


def add_full_view(
    message: campaign_pb2.Campaign,
    statistics: Mapping[int, delivery_pb2.CampaignStatistics],
    tags: Mapping[int, Sequence[campaign_pb2.CampaignTag]],
) -> None:
    """Fills statistics (zeros when delivery has nothing for the campaign) and tags into a campaign."""
    stats = statistics.get(message.campaign_id, delivery_pb2.CampaignStatistics(campaign_id=message.campaign_id))
    message.statistics.CopyFrom(statistics_to_proto(stats))
    message.tags.extend(tags.get(message.campaign_id, ()))
