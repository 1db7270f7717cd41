"""Property-based test of the campaign status machine: random sequences of client operations (update, pause,
resume, cancel, approve) and of delivery's own transitions (start and finish sending) keep its invariants."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from herald.campaign.v1 import campaign_pb2
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from services.campaign import domain
from services.campaign.domain import Campaign, CampaignStatus, ScheduleType
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SEND_TIME = NOW + timedelta(days=2)
EMAILS = (11, 12)
LIVE = domain.References(live_email_ids=frozenset(EMAILS))
FUTURE = domain.Schedule(ScheduleType.FUTURE, future=domain.FutureSchedule(SEND_TIME, "Europe/Paris"))

# Only delivery puts a campaign in these; no client operation may.
DELIVERY_ONLY = frozenset({CampaignStatus.SENDING, CampaignStatus.SENT, CampaignStatus.FAILED})
# Nothing a client does moves a campaign out of these.
TERMINAL = frozenset({CampaignStatus.SENT, CampaignStatus.CANCELLED})
# Recipients, content and schedule change only in these (the issue: "only in Draft and Ready").
EDITABLE = frozenset({CampaignStatus.DRAFT, CampaignStatus.READY})
CLIENT_OPERATIONS = frozenset({"update", "rename", "pause", "resume", "cancel", "approve"})
STATUS_ONLY = frozenset({"STATUS_INVALID"})
# An update is refused for its status, or for changing content the campaign's status no longer allows.
UPDATE_REFUSALS = frozenset({"STATUS_INVALID", "CAMPAIGN_NOT_EDITABLE"})


class CampaignLifecycle(RuleBasedStateMachine):
    """One campaign (with an email and a Future schedule) driven through random operations."""

    def __init__(self) -> None:
        super().__init__()
        self.campaign = Campaign(
            campaign_id=1,
            owner_user_id=7,
            name="Lifecycle",
            status=CampaignStatus.DRAFT,
            status_reason="",
            email_id=EMAILS[0],
            original_campaign_id=None,
            created_at=NOW,
            updated_at=NOW,
            send_started_at=None,
            schedule=FUTURE,
            scheduled_at=SEND_TIME,
        )
        # (operation, status before, status after) for every operation that succeeded.
        self.history: list[tuple[str, CampaignStatus, CampaignStatus]] = []
        self.reached_terminal = False

    @initialize(status=st.sampled_from(list(CampaignStatus)))
    def start_in(self, status: CampaignStatus) -> None:
        """Runs start in every status, as if earlier steps had led there, so that each is explored as often."""
        self.campaign = dataclasses.replace(self.campaign, status=status)

    def _attempt(
        self, operation: str, change: Callable[[Campaign], Campaign], refusals: frozenset[str] = STATUS_ONLY
    ) -> Campaign | None:
        """Applies a change; a refusal must be a state error naming the current status, and change nothing."""
        before = self.campaign
        try:
            after = change(before)
        except DomainError as error:
            assert error.kind in {ErrorKind.PRECONDITION, ErrorKind.INVALID}
            assert {v.reason for v in error.violations} <= refusals or error.reason in refusals
            assert error.metadata["status"] == before.status.value
            return None
        self.history.append((operation, before.status, after.status))
        self.campaign = after
        return after

    # --- client operations ---------------------------------------------------------------------------------

    @rule(
        requested=st.sampled_from(list(campaign_pb2.CampaignStatus.values())),
        email_id=st.sampled_from(EMAILS),
        untrusted=st.booleans(),
    )
    def update_status(self, requested: int, email_id: int, untrusted: bool) -> None:
        self._update(requested, email_id, untrusted)

    @rule(email_id=st.sampled_from(EMAILS), untrusted=st.booleans())
    def update_to_ready(self, email_id: int, untrusted: bool) -> None:
        """The common step forward, drawn often enough for runs to reach sending, pausing and cancelling."""
        self._update(campaign_pb2.CAMPAIGN_STATUS_READY, email_id, untrusted)

    def _update(self, requested: int, email_id: int, untrusted: bool) -> None:
        before = self.campaign
        patch = domain.CampaignPatch(1, ("status", "email_id"), status=requested, email_id=email_id)
        principal = Principal(user_id=7, untrusted=untrusted)
        after = self._attempt(
            "update", lambda c: domain.apply_update(c, patch, LIVE, principal, NOW), UPDATE_REFUSALS
        )
        wanted = domain.status_from_proto(requested)
        editable = before.status in EDITABLE
        allowed = {
            CampaignStatus.DRAFT: {CampaignStatus.DRAFT, CampaignStatus.READY},
            CampaignStatus.READY: {CampaignStatus.DRAFT, CampaignStatus.READY},
            CampaignStatus.PENDING_APPROVAL: {CampaignStatus.DRAFT},
        }.get(before.status, set())
        # Changing the email is content: only Draft and Ready campaigns take it.
        assert (after is not None) == (wanted in allowed and (editable or email_id == before.email_id))
        if after is None:
            return
        assert wanted is not None
        if (
            wanted is CampaignStatus.READY
            and untrusted
            and (before.status is not CampaignStatus.READY or email_id != before.email_id)
        ):
            assert after.status is CampaignStatus.PENDING_APPROVAL
        else:
            assert after.status is wanted
        assert after.email_id == email_id

    @rule(untrusted=st.booleans())
    def rename(self, untrusted: bool) -> None:
        before = self.campaign
        patch = domain.CampaignPatch(1, ("name",), name=f"{before.name}!")
        principal = Principal(user_id=7, untrusted=untrusted)
        after = self._attempt("rename", lambda c: domain.apply_update(c, patch, LIVE, principal, NOW))
        # The name changes in every status, and nothing else does.
        assert after is not None
        assert (after.status, after.schedule, after.scheduled_at) == (
            before.status,
            before.schedule,
            before.scheduled_at,
        )

    @rule()
    def pause(self) -> None:
        before = self.campaign.status
        after = self._attempt("pause", domain.paused)
        assert (after is not None) == (before in {CampaignStatus.SENDING, CampaignStatus.READY})
        if after is not None:
            assert after.status is CampaignStatus.PAUSED

    @rule()
    def resume(self) -> None:
        before = self.campaign
        after = self._attempt("resume", domain.resumed)
        assert (after is not None) == (before.status is CampaignStatus.PAUSED)
        if after is not None:
            assert after.status is CampaignStatus.READY
            # Delivery carries on where it was: the schedule and due instant are untouched.
            assert (after.schedule, after.scheduled_at) == (before.schedule, before.scheduled_at)

    @rule()
    def cancel(self) -> None:
        before = self.campaign
        after = self._attempt("cancel", domain.cancelled)
        cancellable = {CampaignStatus.READY, CampaignStatus.SENDING, CampaignStatus.PAUSED}
        assert (after is not None) == (before.status in cancellable)
        if after is None:
            return
        if before.status is CampaignStatus.READY:
            assert (after.status, after.schedule, after.scheduled_at) == (
                CampaignStatus.DRAFT,
                domain.NOT_SCHEDULED,
                None,
            )
        else:
            assert after.status is CampaignStatus.CANCELLED

    @rule()
    def approve(self) -> None:
        before = self.campaign.status
        after = self._attempt("approve", lambda c: domain.approved(c, NOW))
        assert (after is not None) == (before is CampaignStatus.PENDING_APPROVAL)
        if after is not None:
            assert after.status is CampaignStatus.READY

    @rule(days=st.integers(1, 30))
    def reschedule(self, days: int) -> None:
        """Keeps a Future schedule around after a cancel reset it, so Ready stays reachable with a schedule."""
        before = self.campaign
        send_time = NOW + timedelta(days=days)
        schedule = domain.ScheduleRequest(campaign_pb2.SCHEDULE_TYPE_FUTURE, "future", send_time=send_time)
        patch = domain.CampaignPatch(1, ("schedule",), schedule=schedule)
        unchanged = before.schedule == domain.Schedule(
            ScheduleType.FUTURE, future=domain.FutureSchedule(send_time)
        )
        try:
            after = domain.apply_update(before, patch, LIVE, Principal(user_id=7), NOW)
        except DomainError as error:
            assert before.status not in EDITABLE and not unchanged
            assert [(v.field, v.reason) for v in error.violations] == [("schedule", "CAMPAIGN_NOT_EDITABLE")]
            return
        assert before.status in EDITABLE or unchanged
        assert (after.status, after.scheduled_at) == (before.status, send_time)
        self.history.append(("update", before.status, after.status))
        self.campaign = after

    # --- delivery's transitions (the picker of a later issue) ----------------------------------------------

    @rule()
    def delivery_starts(self) -> None:
        before = self.campaign.status
        after = self._attempt(
            "delivery", lambda c: dataclasses.replace(c, status=domain.status_after_send_start(c.status))
        )
        assert (after is not None) == (before is CampaignStatus.READY)

    @rule(failed=st.booleans())
    def delivery_finishes(self, failed: bool) -> None:
        before = self.campaign.status
        after = self._attempt(
            "delivery",
            lambda c: dataclasses.replace(c, status=domain.status_after_send_end(c.status, failed=failed)),
        )
        assert (after is not None) == (before is CampaignStatus.SENDING)

    # --- invariants ----------------------------------------------------------------------------------------

    @invariant()
    def status_is_one_of_the_eight(self) -> None:
        assert self.campaign.status in set(CampaignStatus)
        assert len(CampaignStatus) == 8

    @invariant()
    def clients_never_reach_delivery_statuses(self) -> None:
        for operation, before, after in self.history:
            if operation in CLIENT_OPERATIONS and after is not before:
                assert after not in DELIVERY_ONLY

    @invariant()
    def cancelled_only_by_cancel_while_sending_or_paused(self) -> None:
        for operation, before, after in self.history:
            if after is CampaignStatus.CANCELLED and before is not CampaignStatus.CANCELLED:
                assert operation == "cancel"
                assert before in {CampaignStatus.SENDING, CampaignStatus.PAUSED}

    @invariant()
    def ready_only_after_draft_ready_paused_or_approval(self) -> None:
        for operation, before, after in self.history:
            if after is CampaignStatus.READY and before is not CampaignStatus.READY:
                assert (operation, before) in {
                    ("update", CampaignStatus.DRAFT),
                    ("resume", CampaignStatus.PAUSED),
                    ("approve", CampaignStatus.PENDING_APPROVAL),
                }

    @invariant()
    def terminal_statuses_stay_terminal(self) -> None:
        if self.reached_terminal:
            assert self.campaign.status in TERMINAL
        seen_terminal: CampaignStatus | None = None
        for _, before, after in self.history:
            if seen_terminal is not None:
                assert before is seen_terminal and after is seen_terminal
            if after in TERMINAL:
                seen_terminal = after
        self.reached_terminal = seen_terminal is not None

    @invariant()
    def sending_statuses_were_reached_through_delivery(self) -> None:
        for operation, before, after in self.history:
            if after is CampaignStatus.SENDING and before is not CampaignStatus.SENDING:
                assert (operation, before) == ("delivery", CampaignStatus.READY)
            if after in {CampaignStatus.SENT, CampaignStatus.FAILED} and before is not after:
                assert (operation, before) == ("delivery", CampaignStatus.SENDING)

    @invariant()
    def armed_campaigns_have_an_email_and_a_due_instant(self) -> None:
        if self.campaign.status in {CampaignStatus.READY, CampaignStatus.PENDING_APPROVAL}:
            assert self.campaign.email_id is not None
            if self.campaign.schedule.type is ScheduleType.FUTURE:
                assert self.campaign.scheduled_at is not None


TestCampaignLifecycle = CampaignLifecycle.TestCase
TestCampaignLifecycle.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
