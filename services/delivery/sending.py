"""Rules of the send pipeline, pure and synchronous: events in and out, runs, batches, variations and SMTP outcomes.

How a recipient moves: Pending (queued) → Sending (claimed by one worker) → Sent or Failed; Dropped when
the campaign is cancelled first. Outside the test group of a split test a recipient starts Held (no
variation, no batch) and becomes Pending with the winner's email once the winner is chosen. A worker that stops mid-send leaves rows in Sending; the next worker
to get that batch marks them Failed as *ambiguous* (they may or may not have been delivered) instead of
sending them again, and `admin.campaign.retryfailed` resends them when an admin decides to.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from services.common.bounces import BounceSource
from services.common.errors import DomainError, ErrorKind, Violations, not_found, precondition
from services.delivery.domain import BounceReport, ClassifiedBounce, RecipientStatus, classified_bounce


class RunState(enum.StrEnum):
    """The campaign's status as a run mirrors it (campaign.status_changed), as stored: workers send only
    while it is Sending; Cancelled is final (its rows still Pending or Held are Dropped)."""

    DRAFT = "Draft"
    READY = "Ready"
    SENDING = "Sending"
    PAUSED = "Paused"
    PENDING_APPROVAL = "Pending Approval"
    SENT = "Sent"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


AMBIGUOUS = "ambiguous: worker stopped mid-send; not resent automatically"
AMBIGUOUS_CONNECTION = "ambiguous: connection lost after the message was sent; not resent automatically"

# Reasons of RetryFailedRecipients and ListQueuedRecipients (the translator maps them to legacy codes).
RUN_NOT_FOUND = "RUN_NOT_FOUND"
NO_FAILED_RECIPIENTS = "NO_FAILED_RECIPIENTS"
DATABASE_ERROR = "DATABASE_ERROR"
CAMPAIGN_ID_REQUIRED = "CAMPAIGN_ID_REQUIRED"
INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"

DEFAULT_QUEUE_PAGE_SIZE = 100
MAX_QUEUE_PAGE_SIZE = 1000


# --- events ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variation:
    email_id: int
    weight: int


# How a split test's winner is chosen (RULINGS 9), as the send request names it.
HIGHEST_OPEN_RATE = "highest_open_rate"
MOST_UNIQUE_CLICKS = "most_unique_clicks"
WINNER_RULES = (HIGHEST_OPEN_RATE, MOST_UNIQUE_CLICKS)


@dataclass(frozen=True)
class SplitTest:
    """A campaign's split test: TestSize % of the recipients get the variations, the rest the winner later."""

    test_size_percent: int
    test_duration_hours: int
    winner: str


@dataclass(frozen=True)
class Targeting:
    """Who receives an occurrence: lists or segments as (list_id, segment_id) (0: the whole list) and the
    legacy rules bundle, all as audience selects by them."""

    included: tuple[tuple[int, int], ...] = ()
    excluded: tuple[tuple[int, int], ...] = ()
    rules_bundle: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SendRequest:
    """campaign.send_requested: send (or, with `resume`, continue sending) one occurrence of a campaign."""

    campaign_id: int
    owner_user_id: int
    name: str
    email_id: int
    variations: tuple[Variation, ...]
    targeting: Targeting
    resume: bool
    occurrence: int
    split_test: SplitTest | None = None
    # An auto-resend: only this campaign's non-openers among the targeting's audience are queued; 0 for none.
    non_openers_of: int = 0
    # The SMTP relay the occurrence goes through ("": the From domain's route, or any; relays.py).
    relay: str = ""

    def email_ids(self) -> list[int]:
        """The emails whose content is sent: the variations' for an A/B campaign, else the campaign's own."""
        if self.variations:
            return list(dict.fromkeys(v.email_id for v in self.variations))
        return [self.email_id] if self.email_id else []

    def effective_split_test(self) -> SplitTest | None:
        """The split test to run: only an A/B campaign with at least two different emails has something to test.

        A split test on a campaign without variations (or with one email) is ignored: the campaign is
        sent to everybody at once, as without a split test.
        """
        return self.split_test if len(self.email_ids()) >= 2 and self.variations else None


@dataclass(frozen=True)
class StatusChange:
    """campaign.status_changed, as delivery needs it."""

    campaign_id: int
    owner_user_id: int
    status: RunState


@dataclass(frozen=True)
class Finished:
    """delivery.campaign_finished: an occurrence of a campaign has no recipient left to handle."""

    campaign_id: int
    owner_user_id: int
    failed: bool
    reason: str
    started_at: datetime | None
    finished_at: datetime
    occurrence: int


def finish_outcome(sent: int, failed: int, last_error: str, deferred: int = 0) -> tuple[bool, str]:
    """(failed, reason) of a finished occurrence: Failed when nobody could be sent to, or nobody was queued.

    Deferred recipients are still being retried: an occurrence with some is not Failed (yet nobody may
    have been sent to); they end Sent or Failed in the background.
    """
    if deferred:
        return False, ""
    if sent == 0 and failed == 0:
        return True, "nobody to send to: the audience selected no subscribed, unsuppressed address"
    if sent == 0:
        return True, f"no recipient could be sent to ({failed} failed; last error: {last_error[:300]})"
    return False, ""


# --- batches and variations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchMessage:
    """A batch message's payload; its Nats-Msg-Id is "<campaign_id>:<batch_id>:<generation>", so that a new
    generation of a batch is a new message."""

    campaign_id: int
    batch_id: int
    generation: int


def batch_count(recipients: int, batch_size: int) -> int:
    return math.ceil(recipients / batch_size) if recipients > 0 else 0


# The golden ratio's fractional part: k * GOLDEN mod 1 spreads any run of consecutive k evenly over [0, 1).
GOLDEN = (5**0.5 - 1) / 2


def variation_slots(variations: Sequence[Variation]) -> list[tuple[int, float]]:
    """[(email_id, upper end of its share of [0, 1))] for assigning variations by weight.

    The k-th queued recipient (from 1, in subscriber order) gets the variation whose share holds
    k * GOLDEN mod 1, a low-discrepancy sequence: every prefix of the queue, however short, is split by
    weight to within a couple of recipients per variation, deterministically.
    """
    total = sum(v.weight for v in variations)
    slots = []
    end = 0
    for variation in variations:
        end += variation.weight
        slots.append((variation.email_id, end / total))
    slots[-1] = (slots[-1][0], 1.0)
    return slots


def variation_for(position: int, slots: Sequence[tuple[int, float]]) -> int:
    """The email of the recipient queued at `position` (from 1); the SQL that queues a campaign does the same."""
    fraction = (position * GOLDEN) % 1.0
    return next(email_id for email_id, end in slots if fraction < end)


# --- split tests ----------------------------------------------------------------------------------------------


def split_test_group_size(recipients: int, test_size_percent: int) -> int:
    """How many of `recipients` form the test group: TestSize % rounded half up, at least one.

    It equals `recipients` when the test group is the whole audience (a tiny audience, or 100 %):
    the campaign is then sent to everybody at once, as without a split test.
    """
    if recipients <= 0:
        return 0
    share = (recipients * test_size_percent * 2 + 100) // 200
    return min(max(share, 1), recipients)


@dataclass(frozen=True)
class SplitTestFigures:
    """What one variation's test group did: recipients sent to, and distinct recipients who opened or clicked."""

    email_id: int
    sent: int
    unique_opens: int
    unique_clicks: int


def split_test_winner(rule: str, email_ids: Sequence[int], figures: Sequence[SplitTestFigures]) -> int:
    """The winning variation's email: the highest open rate (unique opens per recipient sent to) or the most
    unique clicks; on a tie (zero opens everywhere included) the variation listed first in `email_ids`."""
    if not email_ids:
        raise ValueError("a split test needs at least one variation")
    by_email = {f.email_id: f for f in figures}

    def score(email_id: int) -> Fraction:
        found = by_email.get(email_id)
        if found is None:
            return Fraction(0)
        if rule == MOST_UNIQUE_CLICKS:
            return Fraction(found.unique_clicks)
        return Fraction(found.unique_opens, found.sent) if found.sent else Fraction(0)

    best = email_ids[0]
    for email_id in email_ids[1:]:
        if score(email_id) > score(best):
            best = email_id
    return best


# --- workers --------------------------------------------------------------------------------------------------


def heartbeat_seconds(ack_wait: float) -> float:
    """How often a worker tells JetStream it is still on a batch: six times per ack wait."""
    return ack_wait / 6


def stale_claim_seconds(ack_wait: float) -> float:
    """A claim older than this, found when a batch arrives, belongs to a worker presumed dead.

    A batch is redelivered only after its worker was silent for the whole ack wait, and a live worker
    claims rows at most one heartbeat before its last sign of life, so every claim of the silent worker
    is older than ack wait minus one heartbeat (less a margin for clocks) when the batch comes back.
    """
    return ack_wait - heartbeat_seconds(ack_wait) - min(1.0, ack_wait * 0.05)


@dataclass(frozen=True)
class Refusal:
    """The remote server's last reply refusing a recipient (at RCPT, DATA or after the content), as received."""

    reply_code: int
    text: str


@dataclass
class Outcome:
    """What became of one claimed recipient; status Pending means "not sent, back to the queue".

    `attempts` is how many sends this handling tried (added to the row's). `refusal` is set on a Failed
    outcome whose failure is the address's bounce for the classifier to judge: a 5xx reply, or the last
    4xx reply of a recipient deferred for longer than HERALD_DELIVERY_MAX_DEFER_HOURS. Never for a
    connection failure, an ambiguous send or an internal error, and never for a refused MAIL FROM (the
    sender's). A Deferred outcome says when the next attempt is due (`next_attempt_at`).
    """

    recipient_id: int
    status: RecipientStatus
    attempts: int = 0
    error: str = ""
    message_id: str | None = None
    sent_at: datetime | None = None
    refusal: Refusal | None = None
    next_attempt_at: datetime | None = None
    # A Deferred outcome's row attempts once recorded: its retry message claims the row only at that count.
    retry_attempt: int = 0
    # A Pending outcome set aside by the pacer (services/delivery/pacing.py): no token of its domain's (or its
    # warm-up's) for about this many seconds. Not an attempt; the batch goes on with its other recipients.
    set_aside: float | None = None


def send_time_bounce(
    campaign_id: int, recipient_id: int, generation: int, refusal: Refusal, refused_at: datetime
) -> ClassifiedBounce:
    """The bounce a send-time refusal records, judged by the one classifier.

    Its event key names the row and the generation that sent it: a row fails at most once per
    generation, and a handling of the batch that records it again records nothing new.
    """
    return classified_bounce(
        BounceReport(
            campaign_id=campaign_id,
            recipient_id=recipient_id,
            kind_hint="",
            status_code="",
            reply_code=refusal.reply_code,
            diagnostic=refusal.text,
            source=BounceSource.SMTP_REPLY,
            event_key=f"smtp:{campaign_id}:{recipient_id}:{generation}",
            occurred_at=refused_at,
        )
    )


def announced_outcomes(outcomes: Sequence[Outcome], bounced_before: Collection[int]) -> bool:
    """Whether a window's outcomes announce something: a refusal to record or a delivery after a bounce. (A
    deferral's retry message is written by the statement that records it: claim_store.recorded_and_claimed.)"""
    return any(
        (outcome.status == RecipientStatus.FAILED and outcome.refusal is not None)
        or (outcome.status == RecipientStatus.SENT and outcome.recipient_id in bounced_before)
        for outcome in outcomes
    )


# --- the queue as operators see it ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedRow:
    recipient_id: int
    email_address: str
    status: RecipientStatus
    attempts: int
    generation: int
    batch_id: int
    last_error: str
    sent_at: datetime | None
    email_id: int
    # When a Deferred row is sent again; None in every other status.
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class QueuePage:
    campaign_id: int
    status: RecipientStatus | None
    limit: int
    after_recipient_id: int


def queue_page(
    campaign_id: int, status: RecipientStatus | None, page_size: int, after_recipient_id: int
) -> QueuePage:
    violations = Violations()
    if campaign_id <= 0:
        violations.add("campaign_id", CAMPAIGN_ID_REQUIRED, "campaign_id must be a positive campaign id")
    if page_size < 0:
        violations.add("page_size", INVALID_PAGE_SIZE, "page_size must not be negative")
    violations.raise_if_any()
    limit = min(page_size or DEFAULT_QUEUE_PAGE_SIZE, MAX_QUEUE_PAGE_SIZE)
    return QueuePage(campaign_id, status, limit, max(after_recipient_id, 0))


def run_not_found(campaign_id: int) -> DomainError:
    return not_found(RUN_NOT_FOUND, f"campaign {campaign_id} was never queued for delivery", "campaign_id")


def no_failed_recipients(campaign_id: int) -> DomainError:
    return precondition(NO_FAILED_RECIPIENTS, f"campaign {campaign_id} has no failed recipients")


def database_error(message: str) -> DomainError:
    return DomainError(ErrorKind.UNAVAILABLE, DATABASE_ERROR, message)


# Double opt-in confirmation emails are queued as runs of their own, one per list, keyed by an id no
# campaign has (campaign ids are a bigserial counting from 1): the worker sends, signs, tracks and
# records bounces for them as for any run. Such a run stays Sending and never finishes (no
# campaign waits for it).
OPT_IN_RUN_BASE = 1 << 62


def opt_in_run_id(list_id: int) -> int:
    """The run that carries a list's confirmation emails."""
    if not 0 < list_id < OPT_IN_RUN_BASE:
        raise ValueError("a list id is positive and below 2**62")
    return OPT_IN_RUN_BASE + list_id


# Email previews (EmailService.SendEmailPreview) are runs of the same kind, one per user, above the
# opt-in runs' ids.
PREVIEW_RUN_BASE = OPT_IN_RUN_BASE + (1 << 61)


def preview_run_id(owner_user_id: int) -> int:
    """The run that carries a user's email previews."""
    if not 0 < owner_user_id < 1 << 61:
        raise ValueError("a user id is positive and below 2**61")
    return PREVIEW_RUN_BASE + owner_user_id


def is_opt_in_run(campaign_id: int) -> bool:
    """A run of single messages that never finishes: a list's confirmation emails, or a user's previews."""
    return campaign_id > OPT_IN_RUN_BASE
