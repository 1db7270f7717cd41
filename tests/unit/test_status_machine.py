"""Property-based test of the campaign status machine: random sequences of client operations (update, pause,
resume, cancel, approve), of the picker's start, of delivery's reports and of an admin's retry keep its
invariants. Each operation is the function production calls (services/campaign/api.py, picker.py,
sending_events.py), so the machine tested is the machine that runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from herald.campaign.v1 import campaign_pb2
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from services.campaign import domain, sending
from services.campaign.convert import STATUS_TO_PROTO
from services.campaign.domain import Campaign, CampaignStatus, ScheduleType, Unrecognized
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SEND_TIME = NOW + timedelta(days=2)
EMAILS = (11, 12)
LIVE = domain.References(live_email_ids=frozenset(EMAILS))
FUTURE = domain.Schedule(ScheduleType.FUTURE, future=domain.FutureSchedule(SEND_TIME, "Europe/Paris"))

# Only the picker, delivery and an admin's retry put a campaign in these; no client operation may.
DELIVERY_ONLY = frozenset({CampaignStatus.SENDING, CampaignStatus.SENT, CampaignStatus.FAILED})
# Sending is over: nothing but an admin's retry (of a Sent or Failed campaign) moves a campaign out of these.
FINISHED = frozenset({CampaignStatus.SENT, CampaignStatus.FAILED, CampaignStatus.CANCELLED})
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
        self.progress = sending.SendProgress()
        # (operation, status before, status after) for every operation that succeeded.
        self.history: list[tuple[str, CampaignStatus, CampaignStatus]] = []

    @initialize(status=st.sampled_from(list(CampaignStatus)))
    def start_in(self, status: CampaignStatus) -> None:
        """Runs start in every status, as if earlier steps had led there, so that each is explored as often."""
        self.campaign = dataclasses.replace(self.campaign, status=status)
        if status in {CampaignStatus.SENDING, CampaignStatus.PAUSED}:
            self.progress = sending.SendProgress(send_requests=1, occurrences_started=1, occurrence_open=True)
        elif status in FINISHED:
            self.progress = sending.SendProgress(send_requests=1, occurrences_started=1)

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
            assert error.metadata["status"] == f"CAMPAIGN_STATUS_{before.status.name}"
            return None
        self.history.append((operation, before.status, after.status))
        self.campaign = after
        return after

    # --- client operations ---------------------------------------------------------------------------------

    @rule(
        requested=st.sampled_from([*CampaignStatus, Unrecognized(0), Unrecognized(99)]),
        email_id=st.sampled_from(EMAILS),
        untrusted=st.booleans(),
    )
    def update_status(self, requested: CampaignStatus | Unrecognized, email_id: int, untrusted: bool) -> None:
        self._update(requested, email_id, untrusted)

    @rule(email_id=st.sampled_from(EMAILS), untrusted=st.booleans())
    def update_to_ready(self, email_id: int, untrusted: bool) -> None:
        """The common step forward, drawn often enough for runs to reach sending, pausing and cancelling."""
        self._update(CampaignStatus.READY, email_id, untrusted)

    def _update(self, requested: CampaignStatus | Unrecognized, email_id: int, untrusted: bool) -> None:
        before = self.campaign
        patch = domain.CampaignPatch(1, ("status", "email_id"), status=requested, email_id=email_id)
        principal = Principal(user_id=7, untrusted=untrusted)
        after = self._attempt(
            "update", lambda c: domain.apply_update(c, patch, LIVE, principal, NOW), UPDATE_REFUSALS
        )
        wanted = requested if isinstance(requested, CampaignStatus) else None
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
        schedule = domain.ScheduleRequest(ScheduleType.FUTURE, "future", send_time=send_time)
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

    @rule(max_instances=st.integers(1, 3))
    def reschedule_recursive(self, max_instances: int) -> None:
        """A Recursive schedule, so that finishing an occurrence can lead back to Ready."""
        rule = domain.RecursiveSchedule(
            days_of_week=tuple(range(7)),
            months=tuple(range(1, 13)),
            hours=(9,),
            minutes=(0,),
            max_instances=max_instances,
        )
        schedule = domain.ScheduleRequest(ScheduleType.RECURSIVE, "recursive", recursive=rule)
        patch = domain.CampaignPatch(1, ("schedule",), schedule=schedule)
        self._attempt(
            "update",
            lambda c: domain.apply_update(c, patch, LIVE, Principal(user_id=7), NOW),
            frozenset({"CAMPAIGN_NOT_EDITABLE"}),
        )

    # --- the picker, delivery's reports and the admin's retry, as services/campaign/sending.py applies them ----

    @rule()
    def picker_starts(self) -> None:
        before, progress = self.campaign, self.progress
        start = None

        def change(c: Campaign) -> Campaign:
            nonlocal start
            start = sending.start_sending(c, progress, NOW)
            return start.campaign

        after = self._attempt("pick", change)
        assert (after is not None) == (before.status is CampaignStatus.READY)
        if start is not None:
            assert after is not None and after.status is CampaignStatus.SENDING
            # A pick after a pause continues the open occurrence; any other pick starts the next one.
            assert start.resume == progress.occurrence_open
            self.progress = start.progress

    @rule(failed=st.booleans(), late=st.booleans())
    def delivery_finishes(self, failed: bool, late: bool) -> None:
        """Delivery's report that an occurrence finished; a late one is about an earlier occurrence."""
        before, progress = self.campaign, self.progress
        occurrence = progress.occurrences_started - 1 if late else progress.occurrences_started
        report = sending.CampaignFinished(1, 7, failed, "", NOW, occurrence)
        outcome = sending.after_finish(before, progress, report, NOW)
        current = progress.occurrence_open and (not occurrence or occurrence == progress.occurrences_started)
        # A report that is stale (the campaign no longer Sending, or about another occurrence) changes nothing.
        assert (outcome is not None) == (before.status is CampaignStatus.SENDING and current)
        if outcome is None:
            return
        after, self.progress = outcome
        rule = before.schedule.recursive
        if rule is not None and progress.occurrences_started < rule.max_instances:
            assert after.status is CampaignStatus.READY and after.scheduled_at is not None
        else:
            assert after.status is (CampaignStatus.FAILED if failed else CampaignStatus.SENT)
        assert not self.progress.occurrence_open
        self.history.append(("finish", before.status, after.status))
        self.campaign = after

    @rule()
    def admin_retries(self) -> None:
        before, progress = self.campaign, self.progress
        retried = None

        def change(c: Campaign) -> Campaign:
            nonlocal retried
            retried = sending.retried(c, progress)
            return retried[0]

        after = self._attempt("retry", change)
        assert (after is not None) == (before.status in {CampaignStatus.SENT, CampaignStatus.FAILED})
        if retried is not None:
            assert retried[0].status is CampaignStatus.SENDING
            self.progress = retried[1]

    @rule()
    def original_cancelled(self) -> None:
        """The campaign is an auto-resend, and its original was cancelled (CancelCampaign on the original)."""
        before, progress = self.campaign, self.progress
        after = sending.cancelled_with_original(before, progress)
        waiting = {
            CampaignStatus.DRAFT,
            CampaignStatus.READY,
            CampaignStatus.PENDING_APPROVAL,
            CampaignStatus.PAUSED,
        }
        # Only a resend that never started sending goes with its original.
        assert (after is not None) == (progress.occurrences_started == 0 and before.status in waiting)
        if after is None:
            return
        assert after.status is CampaignStatus.CANCELLED
        self.history.append(("original_cancelled", before.status, after.status))
        self.campaign = after

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
    def cancelled_only_by_cancel_while_sending_or_paused_or_with_the_original(self) -> None:
        for operation, before, after in self.history:
            if after is CampaignStatus.CANCELLED and before is not CampaignStatus.CANCELLED:
                assert operation in {"cancel", "original_cancelled"}
                if operation == "cancel":
                    assert before in {CampaignStatus.SENDING, CampaignStatus.PAUSED}
                else:
                    assert before not in DELIVERY_ONLY | FINISHED

    @invariant()
    def ready_only_after_draft_ready_paused_approval_or_an_occurrence(self) -> None:
        for operation, before, after in self.history:
            if after is CampaignStatus.READY and before is not CampaignStatus.READY:
                assert (operation, before) in {
                    ("update", CampaignStatus.DRAFT),
                    ("resume", CampaignStatus.PAUSED),
                    ("approve", CampaignStatus.PENDING_APPROVAL),
                    ("finish", CampaignStatus.SENDING),  # a Recursive campaign waits for its next occurrence
                }

    @invariant()
    def finished_campaigns_move_only_by_retry(self) -> None:
        for operation, before, after in self.history:
            if before in FINISHED and after is not before:
                assert operation == "retry"
                assert before in {CampaignStatus.SENT, CampaignStatus.FAILED} and after is CampaignStatus.SENDING

    @invariant()
    def sending_statuses_were_reached_through_the_picker_delivery_or_a_retry(self) -> None:
        for operation, before, after in self.history:
            if after is CampaignStatus.SENDING and before is not CampaignStatus.SENDING:
                assert (operation, before) in {
                    ("pick", CampaignStatus.READY),
                    ("retry", CampaignStatus.SENT),
                    ("retry", CampaignStatus.FAILED),
                }
            if after in {CampaignStatus.SENT, CampaignStatus.FAILED} and before is not after:
                assert (operation, before) == ("finish", CampaignStatus.SENDING)

    @invariant()
    def a_sending_campaign_has_an_open_occurrence(self) -> None:
        if self.campaign.status is CampaignStatus.SENDING:
            assert self.progress.occurrence_open

    @invariant()
    def armed_campaigns_have_an_email_and_a_due_instant(self) -> None:
        if self.campaign.status in {CampaignStatus.READY, CampaignStatus.PENDING_APPROVAL}:
            assert self.campaign.email_id is not None
            if self.campaign.schedule.type in {ScheduleType.FUTURE, ScheduleType.RECURSIVE}:
                assert self.campaign.scheduled_at is not None


TestCampaignLifecycle = CampaignLifecycle.TestCase
TestCampaignLifecycle.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)


def test_error_metadata_names_each_status_as_the_grpc_api_does() -> None:
    for status in CampaignStatus:
        assert campaign_pb2.CampaignStatus.Value(status.api_name) == STATUS_TO_PROTO[status]
